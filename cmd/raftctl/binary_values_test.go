package main_test

// These tests check that raftctl carries any bytes as keys and values,
// in and out, and never lets them reach a terminal raw.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kvBinaryShape is a key's JSON state when neither key nor value is UTF-8.
var kvBinaryShape = jsonShape{"key_base64": "string", "value_base64": "string", "create_revision": "int", "mod_revision": "int", "version": "int"}

// seededRand returns a random source whose seed the test prints if it
// fails.
func seededRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed %d", seed)
		}
	})
	return rand.New(rand.NewPCG(seed, 0))
}

// randBytes returns n random bytes, from lo to 255.
func randBytes(rng *rand.Rand, n int, lo byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = lo + byte(rng.IntN(256-int(lo)))
	}
	return b
}

// decode64 decodes field of obj, which must be standard base64.
func decode64(t *testing.T, obj map[string]any, field string) []byte {
	t.Helper()
	s, _ := obj[field].(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("%s %q: %v", field, s, err)
	}
	return b
}

// mustCtlIn is mustCtl with stdin.
func mustCtlIn(t *testing.T, stdin []byte, endpoints string, args ...string) string {
	t.Helper()
	out, errOut, code := raftctlWith(t, bytes.NewReader(stdin), nil, append([]string{"--endpoints", endpoints}, args...)...)
	if code != 0 || errOut != "" {
		t.Fatalf("raftctl %q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
	}
	return out
}

// statusOf returns the status of the node at ep.
func statusOf(t *testing.T, ep string) nodeRow {
	t.Helper()
	rows, out := statusRows(t, []string{ep})
	if rows[0].Error != "" {
		t.Fatalf("status of %s: %s", ep, out)
	}
	return rows[0]
}

// Random bytes, as large as the node allows, go in through --file and
// stdin and come back exactly through -o json (and, piped, through get).
func TestRandomBytesRoundTripThroughJSON(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	rng := seededRand(t)

	// A key that is not UTF-8 (argv holds no NUL) and a 1 MiB value.
	key := "bin/" + string(randBytes(rng, 40, 1)) + "\xff"
	value := randBytes(rng, 1<<20, 0)
	file := filepath.Join(t.TempDir(), "value")
	if err := os.WriteFile(file, value, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := mustCtl(t, ep, "put", key, "--file", file); !okRevision.MatchString(out) {
		t.Fatalf("put --file: %q", out)
	}
	kv := jsonCtl(t, ep, kvBinaryShape, "get", key)
	if got := decode64(t, kv, "key_base64"); string(got) != key {
		t.Fatalf("key_base64 decodes to %q, want %q", got, key)
	}
	if got := decode64(t, kv, "value_base64"); !bytes.Equal(got, value) {
		t.Fatalf("value_base64 decodes to %d bytes that differ from the %d put", len(got), len(value))
	}

	// From stdin, byte for byte, a trailing newline included.
	key2 := "bin/stdin"
	value2 := append(randBytes(rng, 64<<10, 0), '\n')
	mustCtlIn(t, value2, ep, "put", key2, "-")
	kv = jsonCtl(t, ep, jsonShape{"key": "string", "value_base64": "string", "create_revision": "int", "mod_revision": "int", "version": "int"}, "get", key2)
	if got := decode64(t, kv, "value_base64"); !bytes.Equal(got, value2) {
		t.Fatalf("value from stdin came back as %d different bytes", len(got))
	}
	// Piped, get writes the value as stored (and a newline).
	if out := mustCtl(t, ep, "get", key2); out != string(value2)+"\n" {
		t.Fatalf("piped get of binary value: %d bytes that differ from the %d put", len(out), len(value2))
	}

	// cas reads OLD from a file and NEW from stdin.
	value3 := randBytes(rng, 1000, 0)
	if out := mustCtlIn(t, value3, ep, "cas", key, "--old-file", file, "-"); !okRevision.MatchString(out) {
		t.Fatalf("cas --old-file F -: %q", out)
	}
	page := jsonCtl(t, ep, jsonShape{"kvs": "array", "more": "bool", "revision": "int"}, "range", "bin/")
	kvs := page["kvs"].([]any)
	if len(kvs) != 2 {
		t.Fatalf("range bin/: %d keys, want 2", len(kvs))
	}
	got := map[string][]byte{}
	for _, e := range kvs {
		m := e.(map[string]any)
		k := m["key"]
		if k == nil {
			k = string(decode64(t, m, "key_base64"))
		}
		got[k.(string)] = decode64(t, m, "value_base64")
	}
	if !bytes.Equal(got[key], value3) || !bytes.Equal(got[key2], value2) {
		t.Fatalf("range -o json gave back other bytes than were put")
	}

	// Text stays text: a UTF-8 value with control characters is a JSON
	// string and round-trips as well.
	text := "tab\there\nnul\x00 esc\x1b[0m <&> é"
	mustCtlIn(t, []byte(text), ep, "put", "text", "-")
	if kv := jsonCtl(t, ep, kvShape, "get", "text"); kv["value"] != text {
		t.Fatalf("text value came back as %q, want %q", kv["value"], text)
	}
}

// Tables and plain lines show unprintable bytes escaped: a key holding a
// terminal escape sequence cannot drive the terminal of whoever lists it.
func TestTablesEscapeUnprintableBytes(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	key, value := "esc/\x1b[31mred\x1b[0m", "\x1b]0;pwned\a"
	put(t, ep, key, value)
	put(t, ep, "esc/tab\tkey", "line1\nline2")
	put(t, ep, "esc/plain", "just text")
	put(t, ep, `"esc"`, "starts with a quote, so it is quoted")
	put(t, ep, `esc/"inner"`, "v")

	out := mustCtl(t, ep, "range", "")
	want := `"\"esc\""` + "\tstarts with a quote, so it is quoted\n" +
		`"esc/\x1b[31mred\x1b[0m"` + "\t" + `"\x1b]0;pwned\a"` + "\n" +
		`esc/"inner"` + "\tv\n" +
		"esc/plain\tjust text\n" +
		`"esc/tab\tkey"` + "\t" + `"line1\nline2"` + "\n"
	if out != want {
		t.Fatalf("range table:\n%q\nwant\n%q", out, want)
	}
	out = mustCtl(t, ep, "ping", "\x1b[2J")
	if strings.ContainsRune(out, 0x1b) || !strings.HasPrefix(out, `"echo:\x1b[2J"`+"\t(round trip ") {
		t.Fatalf("ping table: %q", out)
	}
	obj := jsonCtl(t, ep, jsonShape{"reply_base64": "string", "rtt_us": "int", "node": "int", "address": "string"}, "ping", "\xff")
	if got := decode64(t, obj, "reply_base64"); string(got) != "echo:\xff" {
		t.Fatalf("ping -o json reply %q", got)
	}

	// The hint for the next page is a shell word that reads back as the
	// key, whatever it holds.
	_, errOut, code := ctl(t, ep, "range", "esc/", "--limit", "1")
	if want := `(more keys follow: add --after $'esc/\x1b[31mred\x1b[0m')` + "\n"; code != 0 || errOut != want {
		t.Fatalf("range --limit 1: exit %d, stderr %q, want %q", code, errOut, want)
	}
}

// A long key shows in errors and tables as a prefix, "..." and its length;
// one over the node's limit is refused before anything is sent.
func TestLongKeysAreShortenedInMessagesAndTables(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr

	huge := strings.Repeat("k", 100_000)
	_, errOut, code := ctl(t, ep, "put", huge, "v")
	want := `raftctl: key "` + strings.Repeat("k", 64) + `"... (100000 bytes) is over the node's key limit of 8 KiB (8192 bytes); use a shorter one` + "\n"
	if code != 1 || errOut != want {
		t.Fatalf("put of a 100 KB key: exit %d, stderr %q", code, errOut[:min(len(errOut), 300)])
	}

	long := strings.Repeat("x", 8000) // allowed, but too long to echo
	_, errOut, code = ctl(t, ep, "get", long)
	want = `raftctl: get "` + strings.Repeat("x", 64) + `"... (8000 bytes): key not found` + "\n"
	if code != 1 || errOut != want {
		t.Fatalf("get of a missing 8000-byte key: exit %d, stderr %q", code, errOut[:min(len(errOut), 300)])
	}
	_, errOut, code = ctl(t, ep, "cas", long, "old", "new")
	if code != 1 || len(errOut) > 300 || !strings.Contains(errOut, `"... (8000 bytes): the key does not exist`) {
		t.Fatalf("failed cas on an 8000-byte key: exit %d, stderr %q", code, errOut[:min(len(errOut), 300)])
	}

	put(t, ep, long, strings.Repeat("v", 1000))
	out := mustCtl(t, ep, "range", "xx")
	want = `"` + strings.Repeat("x", 256) + `"... (8000 bytes)` + "\t" + `"` + strings.Repeat("v", 256) + `"... (1000 bytes)` + "\n"
	if out != want {
		t.Fatalf("range table of a long key: %q", out)
	}
}

// Keys and values over the node's limits are refused with too_large
// before anything is sent: the node's log does not grow, and the node
// serves on.
func TestOversizedInputIsRefusedBeforeSending(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	// No write is made here, so no client session is opened or closed
	// that could move the log while it is watched.
	var before nodeRow
	waitFor(t, 10*time.Second, "the node leading with its whole log committed", func() (bool, string) {
		before = statusOf(t, ep)
		return before.Role == "leader" && before.Commit == before.LastIndex, fmt.Sprintf("%+v", before)
	})

	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	longKey := strings.Repeat("k", 8<<10+1)
	for _, tc := range []struct {
		args  []string
		stdin []byte
		want  string
	}{
		{[]string{"put", "k", "--file", big}, nil, "VALUE from " + big + " (1048577 bytes) is over the node's value limit of 1 MiB (1048576 bytes); store less"},
		{[]string{"put", "k", "-"}, make([]byte, 1<<20+1), "VALUE from stdin is over the node's value limit of 1 MiB (1048576 bytes)"},
		{[]string{"cas", "k", "--old-file", big, "new"}, nil, "OLD from " + big + " (1048577 bytes) is over the node's value limit"},
		{[]string{"cas", "k", "old", "-"}, make([]byte, 2<<20), "NEW from stdin is over the node's value limit"},
		{[]string{"put", longKey, "v"}, nil, `(8193 bytes) is over the node's key limit of 8 KiB (8192 bytes)`},
		{[]string{"get", longKey}, nil, `(8193 bytes) is over the node's key limit`},
		{[]string{"del", longKey}, nil, `(8193 bytes) is over the node's key limit`},
		{[]string{"range", longKey}, nil, `PREFIX "kkkk`},
		{[]string{"range", "k", "--after", longKey}, nil, `--after "kkkk`},
	} {
		out, errOut, code := raftctlWith(t, bytes.NewReader(tc.stdin), nil, append([]string{"--endpoints", ep, "-o", "json"}, tc.args...)...)
		name := strings.Join(tc.args, " ")[:min(60, len(strings.Join(tc.args, " ")))]
		if code != 1 || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) || len(errOut) > 400 {
			t.Errorf("raftctl %s: exit %d, stderr %q; want 1 and one short line saying %q", name, code, errOut[:min(len(errOut), 400)], tc.want)
			continue
		}
		if obj := decodeOne(t, name, out); obj["kind"] != "too_large" {
			t.Errorf("raftctl -o json %s: %v, want kind too_large", name, obj)
		}
	}
	after := statusOf(t, ep)
	if after.LastIndex != before.LastIndex || after.Revision != before.Revision {
		t.Fatalf("the node's log moved from index %d (revision %d) to %d (revision %d)", before.LastIndex, before.Revision, after.LastIndex, after.Revision)
	}
	expectMissing(t, ep, "k") // and the node still serves
}

// $RAFTCTL_ENDPOINTS is checked like --endpoints, and the error names it.
func TestEndpointsFromTheEnvironmentAreChecked(t *testing.T) {
	for env, want := range map[string]string{
		"foo":                       `raftctl: $RAFTCTL_ENDPOINTS: endpoint "foo" has no port; give host:port, e.g. 127.0.0.1:7000 (see raftctl --help)` + "\n",
		"127.0.0.1:7001,host:7000x": `raftctl: $RAFTCTL_ENDPOINTS: endpoint "host:7000x": the port must be a number from 1 to 65535, e.g. 127.0.0.1:7000 (see raftctl --help)` + "\n",
	} {
		out, errOut, code := raftctlWith(t, nil, []string{"RAFTCTL_ENDPOINTS=" + env}, "get", "k")
		if code != 1 || out != "" || errOut != want {
			t.Errorf("RAFTCTL_ENDPOINTS=%s: exit %d, stdout %q, stderr %q; want %q", env, code, out, errOut, want)
		}
	}
}
