package main_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// raftctl del --prefix deletes every key under the prefix and prints how
// many (JSON too); the empty prefix is refused before connecting; a txn
// deletes a prefix with del --prefix and prints its count.
func TestDelPrefixPrintsTheCount(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	for _, k := range []string{"p/1", "p/2", "p/3/x", "q"} {
		mustCtlIn(t, nil, ep, "put", k, "v")
	}
	if out := mustCtlIn(t, nil, ep, "del", "--prefix", "p/"); out != "OK deleted=3 revision=5\n" {
		t.Fatalf("del --prefix printed %q", out)
	}
	var resp struct {
		Deleted  uint64 `json:"deleted"`
		Revision uint64 `json:"revision"`
	}
	out := mustCtlIn(t, nil, ep, "-o", "json", "del", "--prefix", "p/")
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Deleted != 0 || resp.Revision != 5 {
		t.Fatalf("del --prefix of nothing, JSON: %q (%v)", out, err)
	}
	_, errOut, code := raftctlWith(t, nil, nil, "--endpoints", ep, "del", "--prefix", "")
	if code == 0 || !strings.Contains(errOut, "would delete every key") {
		t.Fatalf("del --prefix \"\": exit %d, stderr %q", code, errOut)
	}

	mustCtlIn(t, nil, ep, "put", "t/1", "v")
	mustCtlIn(t, nil, ep, "put", "t/2", "v")
	txn := "\ndel --prefix t/\nput u v\n\n"
	if out := mustCtlIn(t, []byte(txn), ep, "txn"); out != "THEN revision=8\ndel --prefix t/ deleted=2\nput u OK\n" {
		t.Fatalf("txn printed %q", out)
	}
	js := `{"then": [{"op": "del", "key": "u", "prefix": true}]}`
	out = mustCtlIn(t, []byte(js), ep, "-o", "json", "txn")
	var tr struct {
		Results []struct {
			Op      string `json:"op"`
			Key     string `json:"key"`
			Prefix  bool   `json:"prefix"`
			Deleted uint64 `json:"deleted"`
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &tr); err != nil || len(tr.Results) != 1 ||
		tr.Results[0].Op != "del" || tr.Results[0].Key != "u" || !tr.Results[0].Prefix || tr.Results[0].Deleted != 1 {
		t.Fatalf("JSON txn: %q (%v)", out, err)
	}
	// A put under the prefix the branch deletes is refused.
	_, errOut, code = raftctlWith(t, strings.NewReader("\ndel --prefix a/\nput a/1 v\n"), nil, "--endpoints", ep, "txn")
	if code == 0 || !strings.Contains(errOut, "which operation 0 deletes") {
		t.Fatalf("txn writing under its deleted prefix: exit %d, stderr %q", code, errOut)
	}
}
