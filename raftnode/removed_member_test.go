package raftnode_test

import (
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/schema"
)

// A member removed while it was down never receives the entry that
// removes it (the leader no longer sends it the log). Restarted, it
// campaigns; its peers, whose configuration no longer includes it, say
// so on its stream, and it stops as if it had applied its removal.
func TestRemovedWhileDownLearnsFromItsPeersAndStops(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	x := lead%3 + 1
	c.stop(x)
	if err := adminCall(ctx, c, lead, func(a schema.Admin) error {
		f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(x); return nil })
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatal(err)
	}
	c.start(x)
	select {
	case <-c.nodes[x].Done():
		if err := c.nodes[x].Err(); err == nil || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("node %d stopped with %v", x, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("node %d, removed while down, still running 15s after its restart", x)
	}
	// The others carry on without it.
	c.stop(x)
	k := c.client(c.leader())
	k.openRetry(t, ctx)
	if _, err := k.put(ctx, "after", "v"); err != nil {
		t.Fatal(err)
	}
}
