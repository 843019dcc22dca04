package raftnode_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/schema"
)

// A cluster that served forwarded and direct writes, linearizable reads
// through followers, sessions, Admin members/snapshot/transfer, and a
// stopped-and-restarted follower leaves no goroutine behind once its nodes
// and clients are closed.
func TestNoGoroutineLeftAfterClose(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // registered first: runs last
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 20, 5, 8<<10
	})
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for id := uint64(1); id <= 3; id++ {
		k := c.client(id)
		k.openRetry(t, ctx)
		for i := range 30 {
			if _, err := k.putCode(ctx, uint64(i+1), fmt.Sprintf("n%d-%d", id, i), "v"); err != nil {
				t.Fatalf("put via %d: %v", id, err)
			}
		}
		if _, _, _, _, err := k.getCode(ctx, "n1-0", false); err != nil {
			t.Fatalf("get via %d: %v", id, err)
		}
		if err := k.keepAlive(ctx); err != nil {
			t.Fatalf("keepalive via %d: %v", id, err)
		}
	}
	follower := lead%3 + 1
	if err := adminCall(ctx, c, follower, func(a schema.Admin) error {
		f, rel := a.Snapshot(ctx, nil)
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := adminCall(ctx, c, follower, func(a schema.Admin) error {
		f, rel := a.Members(ctx, nil)
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatalf("members: %v", err)
	}
	if err := transferLeadership(ctx, c, follower, 0); err != nil {
		t.Fatalf("transfer: %v", err)
	}
	c.stop(follower)
	c.start(follower)
	c.leader()
	for id := range c.nodes {
		c.stop(id)
	}
}
