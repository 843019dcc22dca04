package main_test

// This test follows docs/SECURITY.md's cluster-secret walkthrough with
// real raftnode processes and the raftctl binary.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exitNoPerm is raftctl's exit status when a node refuses the credential.
const exitNoPerm = 77

// startSecretCluster starts a 3-node cluster whose members prove a
// cluster secret and whose anonymous connections hold nothing (the
// default), as docs/SECURITY.md starts one. It returns the endpoints and
// each node's data directory.
func startSecretCluster(t *testing.T) (addrs, dataDirs []string) {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(secret, []byte(strings.Repeat("walkthrough-secret-", 3)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrs = freeAddrs(t, 3)
	parts := make([]string, len(addrs))
	for i, a := range addrs {
		parts[i] = fmt.Sprintf("%d=%s", i+1, a)
	}
	peers := strings.Join(parts, ",")
	for i, a := range addrs {
		dir := t.TempDir()
		dataDirs = append(dataDirs, filepath.Join(dir, "data"))
		args := append([]string{"--log-json", "--id", strconv.Itoa(i + 1), "--listen", a, "--peers", peers,
			"--data-dir", dataDirs[i], "--cluster-secret-file", secret}, fastRaft...)
		startNodeIn(t, dir, args...)
	}
	return addrs, dataDirs
}

// expectRefused runs raftctl against endpoints and requires exit 77 with
// one line on stderr that holds want, and nothing on stdout.
func expectRefused(t *testing.T, endpoints, want string, args ...string) {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, args...)
	if code != exitNoPerm || out != "" || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, want) {
		t.Fatalf("raftctl %q via %s: exit %d, stdout %q, stderr %q; want exit %d and one line holding %q",
			args, endpoints, code, out, errOut, exitNoPerm, want)
	}
}

// expectGet requires raftctl get key with args to print value.
func expectGet(t *testing.T, endpoints, key, value string, args ...string) {
	t.Helper()
	if out := mustCtl(t, endpoints, append(args, "get", key)...); out != value+"\n" {
		t.Fatalf("get %s via %s with %q: %q, want %q", key, endpoints, args, out, value+"\n")
	}
}

// The walkthrough of docs/SECURITY.md on a cluster-secret cluster: no
// credential is refused; the operator token a node wrote to its data
// directory reads and writes; a read-only prefix token minted with it reads
// inside its prefix through a follower and nothing else; a token narrowed
// offline from it reads only inside the narrower prefix; revoking the
// original refuses both tokens on every node, and only them.
func TestSecretClusterTokensNarrowOfflineAndRevokeEverywhere(t *testing.T) {
	t.Setenv("RAFTCTL_TOKEN", "") // credentials only from the flags below
	t.Setenv("RAFTCTL_TOKEN_FILE", "")
	addrs, dataDirs := startSecretCluster(t)
	all := strings.Join(addrs, ",")

	// The first leader creates the token key; each node that applies it
	// writes an operator token (mode 0600) to its data directory.
	opFile := filepath.Join(dataDirs[0], "operator.token")
	waitFor(t, 20*time.Second, "node 1 wrote no operator.token", func() (bool, string) {
		b, err := os.ReadFile(opFile)
		return err == nil && strings.HasSuffix(string(b), "\n"), fmt.Sprintf("%q, %v", b, err)
	})
	if fi, err := os.Stat(opFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("operator.token: %v, mode %v; want 0600", err, fi.Mode())
	}
	op := []string{"--token-file", opFile}

	expectRefused(t, all, "kv needs a client credential", "get", "greeting")
	expectRefused(t, all, "kv needs a client credential", "put", "greeting", "hello")
	expectRefused(t, all, "admin needs an operator credential", "members")

	for k, v := range map[string]string{"greeting": "hello", "app/config": "v1", "app/public/motd": "hi"} {
		if out := mustCtl(t, all, append(op, "put", k, v)...); !okRevision.MatchString(out) {
			t.Fatalf("put %s with the operator token: %q", k, out)
		}
	}
	expectGet(t, all, "app/config", "v1", op...)

	// A read-only token for app/: its id goes to stderr.
	out, errOut, code := ctl(t, all, append(op, "token", "create", "--prefix", "app/", "--read-only")...)
	m := regexp.MustCompile(`^token id ([0-9a-f]{32}) \(revoke it with: raftctl token revoke ([0-9a-f]{32})\)\n$`).FindStringSubmatch(errOut)
	if code != 0 || !strings.HasPrefix(out, "capraft1.") || strings.Count(out, "\n") != 1 || m == nil || m[1] != m[2] {
		t.Fatalf("token create --prefix app/ --read-only: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	appToken, appID := strings.TrimSuffix(out, "\n"), m[1]

	var status struct {
		Nodes []nodeRow `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(mustCtl(t, all, append(op, "-o", "json", "status")...)), &status); err != nil {
		t.Fatal(err)
	}
	follower := ""
	for _, n := range status.Nodes {
		if n.Role == "follower" && follower == "" {
			follower = n.Endpoint
		}
	}
	if follower == "" {
		t.Fatalf("no follower in %+v", status.Nodes)
	}
	app := []string{"--token", appToken}
	expectGet(t, follower, "app/config", "v1", app...)
	expectRefused(t, follower, "read-only", append(app, "put", "app/config", "v2")...)
	expectRefused(t, follower, `get of key "greeting" is outside this KV's grant`, append(app, "get", "greeting")...)
	expectGet(t, all, "app/config", "v1", op...) // the refused put wrote nothing

	// Offline: raftctl is given only an endpoint nothing listens on.
	out, errOut, code = raftctl(t, "--endpoints", deadEndpoint(t), "token", "attenuate", appToken, "--prefix", "app/public/")
	if code != 0 || !strings.HasPrefix(out, "capraft1.") || strings.Count(out, "\n") != 1 || errOut != "" {
		t.Fatalf("token attenuate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	public := []string{"--token", strings.TrimSuffix(out, "\n")}
	var inspected struct {
		ID, Prefix, Role string
		ReadOnly         bool `json:"read_only"`
	}
	out = mustCtl(t, deadEndpoint(t), "-o", "json", "token", "inspect", public[1])
	if err := json.Unmarshal([]byte(out), &inspected); err != nil || inspected.ID != appID || inspected.Prefix != "app/public/" ||
		!inspected.ReadOnly || inspected.Role != "client" {
		t.Fatalf("token inspect -o json of the attenuated token: %s (%v); want id %s, prefix app/public/, read-only, client", out, err, appID)
	}
	expectGet(t, follower, "app/public/motd", "hi", public...)
	expectRefused(t, follower, `get of key "app/config" is outside this KV's grant`, append(public, "get", "app/config")...)
	expectRefused(t, follower, "read-only", append(public, "put", "app/public/motd", "x")...)

	if out := mustCtl(t, all, append(op, "token", "revoke", appToken)...); out != "OK\n" {
		t.Fatalf("token revoke: %q, want OK", out)
	}
	// Each node refuses both once it applied the revocation.
	revoked := fmt.Sprintf("token %s was revoked", appID)
	for _, ep := range addrs {
		for _, tc := range []struct {
			cred []string
			key  string
		}{{app, "app/config"}, {public, "app/public/motd"}} {
			waitFor(t, 10*time.Second, "node at "+ep+" still accepts a revoked token", func() (bool, string) {
				out, errOut, code := ctl(t, ep, append(tc.cred, "get", tc.key)...)
				return code == exitNoPerm && strings.Contains(errOut, revoked), fmt.Sprintf("exit %d, stdout %q, stderr %q", code, out, errOut)
			})
		}
		expectGet(t, ep, "app/config", "v1", op...) // the operator token still works
	}
}
