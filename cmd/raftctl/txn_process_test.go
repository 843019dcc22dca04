package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// raftctl txn runs a transaction read from stdin or a file, in the text or
// the JSON form, and prints the branch and each result as text or JSON.
func TestTxnCommandRunsATransaction(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	mustCtlIn(t, nil, ep, "put", "owner", "alice")

	// Take the lock: it is free.
	take := "absent(\"lock\")\n\nput lock bob\nget owner\n\nget lock\n"
	out := mustCtlIn(t, []byte(take), ep, "txn")
	want := "THEN revision=2\nput lock OK\nget owner alice\n"
	if out != want {
		t.Fatalf("txn printed %q, want %q", out, want)
	}

	// Again, from a file with -o json: the lock is taken, else runs.
	file := filepath.Join(t.TempDir(), "take.txn")
	if err := os.WriteFile(file, []byte(take), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustCtlIn(t, nil, ep, "-o", "json", "txn", "--file", file)
	var resp struct {
		Succeeded bool   `json:"succeeded"`
		Branch    string `json:"branch"`
		Revision  uint64 `json:"revision"`
		Results   []struct {
			Op    string `json:"op"`
			Key   string `json:"key"`
			Found bool   `json:"found"`
			KV    struct {
				Value string `json:"value"`
			} `json:"kv"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
	if resp.Succeeded || resp.Branch != "else" || resp.Revision != 2 || len(resp.Results) != 1 ||
		resp.Results[0].Op != "get" || !resp.Results[0].Found || resp.Results[0].KV.Value != "bob" {
		t.Fatalf("second txn: %+v", resp)
	}

	// The JSON form, on stdin.
	js := `{"compares": [{"target": "value", "key": "lock", "op": "=", "value": "bob"}], "then": [{"op": "del", "key": "lock"}]}`
	if out := mustCtlIn(t, []byte(js), ep, "txn"); out != "THEN revision=3\ndel lock deleted\n" {
		t.Fatalf("JSON txn printed %q", out)
	}

	// A key written twice is refused by name, before anything is sent.
	_, errOut, code := raftctlWith(t, strings.NewReader("\nput a 1\nput a 2\n"), nil, "--endpoints", ep, "txn")
	if code == 0 || !strings.Contains(errOut, "written twice") {
		t.Fatalf("txn writing a twice: exit %d, stderr %q", code, errOut)
	}
}
