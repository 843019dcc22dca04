package main_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The lease commands against a real node: grant prints an id, put --lease
// attaches a key, list and timetolive show it (table and JSON), keepalive
// --once renews it, revoke deletes its key, and a revoked lease fails
// put --lease, keepalive and revoke with exit 1 and kind lease_not_found.
func TestLeaseCommandsAgainstANode(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := "--endpoints=" + node.addr
	out, errOut, code := raftctl(t, ep, "lease", "grant", "30s")
	if code != 0 {
		t.Fatalf("lease grant: exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if n, err := strconv.ParseUint(id, 10, 64); err != nil || n == 0 {
		t.Fatalf("lease grant printed %q", out)
	}
	if _, errOut, code := raftctl(t, ep, "put", "k", "v", "--lease", id); code != 0 {
		t.Fatalf("put --lease: exit %d: %s", code, errOut)
	}
	out, _, code = raftctl(t, ep, "-o", "json", "get", "k")
	var kv map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &kv) != nil || strconv.FormatFloat(kv["lease"].(float64), 'f', 0, 64) != id {
		t.Fatalf("get -o json: exit %d: %s", code, out)
	}
	out, _, code = raftctl(t, ep, "-o", "json", "lease", "timetolive", id)
	var l map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || l["keys"] != 1.0 || l["ttl_ms"] != 30000.0 {
		t.Fatalf("lease timetolive -o json: exit %d: %s", code, out)
	}
	out, _, code = raftctl(t, ep, "lease", "list")
	if code != 0 || !strings.Contains(out, "REMAINING") || !strings.Contains(out, id+" ") {
		t.Fatalf("lease list: exit %d:\n%s", code, out)
	}
	out, _, code = raftctl(t, ep, "-o", "json", "lease", "list")
	var list struct{ Leases []map[string]any }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.Leases) != 1 {
		t.Fatalf("lease list -o json: exit %d: %s", code, out)
	}
	if out, errOut, code := raftctl(t, ep, "lease", "keepalive", "--once", id); code != 0 || !strings.HasPrefix(out, id+"\t") {
		t.Fatalf("lease keepalive --once: exit %d: %q %s", code, out, errOut)
	}
	if out, _, code := raftctl(t, ep, "lease", "revoke", id); code != 0 || !strings.HasPrefix(out, "OK revision=") {
		t.Fatalf("lease revoke: exit %d: %s", code, out)
	}
	if _, _, code := raftctl(t, ep, "get", "k"); code != 1 {
		t.Fatalf("get of a revoked lease's key: exit %d", code)
	}
	for _, args := range [][]string{
		{"put", "k2", "v", "--lease", id},
		{"lease", "keepalive", id},
		{"lease", "revoke", id},
	} {
		out, errOut, code := raftctl(t, append([]string{ep, "-o", "json"}, args...)...)
		if code != 1 || !strings.Contains(out, `"kind":"lease_not_found"`) || !strings.Contains(errOut, "grant a new one") {
			t.Errorf("%v with a revoked lease: exit %d, stdout %s stderr %s", args, code, out, errOut)
		}
	}
	if _, errOut, code := raftctl(t, ep, "lease", "grant", "soon"); code != 1 || !strings.Contains(errOut, "positive duration") {
		t.Errorf("lease grant soon: exit %d: %s", code, errOut)
	}
}
