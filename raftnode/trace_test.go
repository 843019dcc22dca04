package raftnode_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
)

// traceEvent is the part of a Chrome trace event the test reads.
type traceEvent struct {
	Name string  `json:"name"`
	Ph   string  `json:"ph"`
	Ts   float64 `json:"ts"`
	Pid  uint64  `json:"pid"`
}

// The trace of a small run parses as Chrome trace-event JSON, and every
// node's holds the events of a put: its leader, fsyncs and applies; the
// leader's also the client's put and the appends to each follower.
func TestTraceOfAPutHasItsEventsOnEveryNode(t *testing.T) {
	dir := t.TempDir()
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.TraceFile = filepath.Join(dir, fmt.Sprintf("node%d.json", cfg.ID))
	})
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.put(ctx, "traced", "v"); err != nil {
		t.Fatal(err)
	}
	commit := c.nodes[lead].Status(ctx).Commit
	rpctest.Eventually(t, 10*time.Second, "every node applied the put", func() bool {
		for _, n := range c.nodes {
			if n.Status(ctx).Applied < commit {
				return false
			}
		}
		return true
	})
	for id := range c.nodes {
		c.stop(id) // closes the trace files
	}

	for id := uint64(1); id <= 3; id++ {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("node%d.json", id)))
		if err != nil {
			t.Fatal(err)
		}
		var events []traceEvent
		if err := json.Unmarshal(b, &events); err != nil {
			t.Fatalf("node %d's trace does not parse: %v\n%s", id, err, b)
		}
		names := map[string]int{}
		for _, e := range events {
			if e.Name == "" {
				continue // the closing empty object
			}
			if e.Pid != id {
				t.Errorf("node %d's trace has an event of pid %d: %+v", id, e.Pid, e)
			}
			names[e.Name]++
		}
		want := []string{"process_name", fmt.Sprintf("leader %d", lead), "wal fsync", "apply"}
		if id == lead {
			want = append(want, "put")
			for f := uint64(1); f <= 3; f++ {
				if f != lead {
					want = append(want, fmt.Sprintf("data → %d", f))
				}
			}
		}
		for _, w := range want {
			if names[w] == 0 {
				t.Errorf("node %d's trace has no %q event; it has %v", id, w, names)
			}
		}
		if id == lead && names["put"] != 2 { // a begin and an end
			t.Errorf("leader's trace has %d put events, want a begin and an end", names["put"])
		}
		if !strings.HasSuffix(strings.TrimSpace(string(b)), "]") {
			t.Errorf("node %d's trace is not closed", id)
		}
	}
}
