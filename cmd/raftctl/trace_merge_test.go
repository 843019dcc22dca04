package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trace merge puts several nodes' traces on one timeline: a closed file
// and one cut short by a crash both count, every event once; a file that
// is not a trace is refused by name.
func TestTraceMergeLinesUpNodesTraces(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	closed := write("node1.json", `[
{"name":"process_name","ph":"M","ts":0,"pid":1,"tid":0,"args":{"name":"node 1"}},
{"name":"wal fsync","ph":"X","ts":1000,"dur":250,"pid":1,"tid":2},
{}]
`)
	cut := write("node2.json", `[
{"name":"process_name","ph":"M","ts":0,"pid":2,"tid":0,"args":{"name":"node 2"}},
{"name":"apply","ph":"X","ts":1300,"dur":20,"pid":2,"tid":3},
{"name":"wal fs`)
	out := filepath.Join(dir, "merged.json")
	_, errOut, code := raftctl(t, "trace", "merge", "--out", out, closed, cut)
	if code != 0 || !strings.Contains(errOut, "merged 4 events from 2 files") {
		t.Fatalf("trace merge: exit %d, stderr %q", code, errOut)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var merged struct {
		TraceEvents []struct {
			Name string `json:"name"`
			Pid  uint64 `json:"pid"`
		} `json:"traceEvents"`
	}
	if err := json.Unmarshal(b, &merged); err != nil {
		t.Fatalf("merged trace does not parse: %v\n%s", err, b)
	}
	var got []string
	for _, e := range merged.TraceEvents {
		got = append(got, e.Name+"@"+string(rune('0'+e.Pid)))
	}
	if strings.Join(got, " ") != "process_name@1 wal fsync@1 process_name@2 apply@2" {
		t.Fatalf("merged events: %v", got)
	}

	bad := write("notes.txt", "not a trace")
	if _, errOut, code := raftctl(t, "trace", "merge", closed, bad); code != 1 || !strings.Contains(errOut, "notes.txt: not a trace") {
		t.Fatalf("a file that is not a trace: exit %d, stderr %q", code, errOut)
	}
}
