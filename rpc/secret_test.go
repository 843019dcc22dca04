package rpc_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/capraft/capraft/rpc"
)

// Inputs of the known-answer vectors; the answers were computed with
// Python's hmac module from the formulas in schema/node.capnp.
var (
	katSecret      = []byte("0123456789abcdef0123456789abcdef")
	katClientNonce = seq(0, 32)
	katServerNonce = seq(32, 32)
)

const (
	katClusterID = 0x0102030405060708
	katNodeID    = 7
	katMemberID  = 3
)

func seq(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(from + i)
	}
	return b
}

func TestProofsMatchKnownAnswers(t *testing.T) {
	node := hex.EncodeToString(rpc.NodeProof(katSecret, katClusterID, katNodeID, katClientNonce, katServerNonce))
	if want := "25c0b7f24cddf1db0a8d5af3badc6a1e58507a2435694d862ba596713ea3ad61"; node != want {
		t.Errorf("NodeProof = %s, want %s", node, want)
	}
	member := hex.EncodeToString(rpc.MemberProof(katSecret, katClusterID, katMemberID, katNodeID, katClientNonce, katServerNonce))
	if want := "3a501315c0ecb680faac47be612f5641ddc59db8b0979fa741e6f59ee5a36264"; member != want {
		t.Errorf("MemberProof = %s, want %s", member, want)
	}
}

func TestProofsChangeWithEveryInput(t *testing.T) {
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 1
		return c
	}
	type in struct {
		secret             []byte
		cluster, mem, node uint64
		cn, sn             []byte
	}
	base := in{katSecret, katClusterID, katMemberID, katNodeID, katClientNonce, katServerNonce}
	variants := map[string]func(in) in{
		"secret":       func(v in) in { v.secret = flip(v.secret, 31); return v },
		"cluster id":   func(v in) in { v.cluster++; return v },
		"node id":      func(v in) in { v.node++; return v },
		"client nonce": func(v in) in { v.cn = flip(v.cn, 0); return v },
		"server nonce": func(v in) in { v.sn = flip(v.sn, 31); return v },
		// The nonces' boundary moved: lengths must be checked (CheckNonce).
		"nonces swapped": func(v in) in { v.cn, v.sn = v.sn, v.cn; return v },
	}
	nodeProof := func(v in) []byte { return rpc.NodeProof(v.secret, v.cluster, v.node, v.cn, v.sn) }
	memberProof := func(v in) []byte { return rpc.MemberProof(v.secret, v.cluster, v.mem, v.node, v.cn, v.sn) }
	for name, change := range variants {
		if bytes.Equal(nodeProof(base), nodeProof(change(base))) {
			t.Errorf("NodeProof unchanged when the %s changes", name)
		}
		if bytes.Equal(memberProof(base), memberProof(change(base))) {
			t.Errorf("MemberProof unchanged when the %s changes", name)
		}
	}
	if bytes.Equal(memberProof(base), memberProof(in{base.secret, base.cluster, base.mem + 1, base.node, base.cn, base.sn})) {
		t.Error("MemberProof unchanged when the member id changes")
	}
	// Member and node ids swapped: a proof for 3 -> 7 is not one for 7 -> 3.
	if bytes.Equal(memberProof(base), memberProof(in{base.secret, base.cluster, base.node, base.mem, base.cn, base.sn})) {
		t.Error("MemberProof unchanged when member and node ids swap")
	}
	// The domains keep a node's proof from passing as a member's, even
	// when the member id takes the node id's place.
	if bytes.Equal(nodeProof(base), rpc.MemberProof(base.secret, base.cluster, base.node, base.node, base.cn, base.sn)) {
		t.Error("a NodeProof equals a MemberProof")
	}
}

func TestNewNonceIsFreshAndChecked(t *testing.T) {
	a, b := rpc.NewNonce(), rpc.NewNonce()
	if len(a) != rpc.NonceSize || bytes.Equal(a, b) {
		t.Fatalf("nonces %x and %x: want two different %d-byte nonces", a, b, rpc.NonceSize)
	}
	if err := rpc.CheckNonce(a); err != nil {
		t.Errorf("CheckNonce(NewNonce()): %v", err)
	}
	for _, n := range [][]byte{nil, make([]byte, 31), make([]byte, 33)} {
		if err := rpc.CheckNonce(n); err == nil {
			t.Errorf("CheckNonce accepted %d bytes", len(n))
		}
	}
}

func writeSecret(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // not subject to umask
		t.Fatal(err)
	}
	return path
}

func TestLoadClusterSecret(t *testing.T) {
	good := "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldAo=" // 48 bytes of base64
	t.Run("trims white space, keeps the rest", func(t *testing.T) {
		got, err := rpc.LoadClusterSecret(writeSecret(t, "\n  "+good+"\r\n", 0o600))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != good {
			t.Errorf("secret %q, want %q", got, good)
		}
	})
	t.Run("owner read-only is fine", func(t *testing.T) {
		if _, err := rpc.LoadClusterSecret(writeSecret(t, good, 0o400)); err != nil {
			t.Fatal(err)
		}
	})

	refused := []struct {
		name, content string
		mode          os.FileMode
		want          []string
	}{
		{"short", strings.Repeat("x", 31) + "\n", 0o600, []string{"31 bytes", "at least 32", "head -c 32 /dev/urandom"}},
		{"empty", "  \n", 0o600, []string{"0 bytes", "head -c 32 /dev/urandom"}},
		{"group-readable", good, 0o640, []string{"chmod 600", "0640"}},
		{"world-readable", good, 0o604, []string{"chmod 600", "0604"}},
		{"group-writable", good, 0o620, []string{"chmod 600"}},
		{"huge", strings.Repeat("x", 5000), 0o600, []string{"larger than"}},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			_, err := rpc.LoadClusterSecret(writeSecret(t, c.content, c.mode))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := rpc.LoadClusterSecret(filepath.Join(t.TempDir(), "nope"))
		if err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), "head -c 32") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := rpc.LoadClusterSecret(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("err = %v", err)
		}
	})
}
