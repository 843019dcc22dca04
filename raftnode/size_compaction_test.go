package raftnode_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
)

// Large values trigger a snapshot, and the log is compacted, once the log
// grew by SnapshotBytes, long before SnapshotEntries entries were applied.
func TestLogSizeTriggersCompactionBeforeEntryCount(t *testing.T) {
	const (
		segment   = 64 << 10
		threshold = 256 << 10
		value     = 16 << 10
		writes    = 96 // 1.5 MiB of values: 24 segments' worth
	)
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries = 1_000_000
		cfg.SnapshotBytes = threshold
		cfg.SnapshotCatchupEntries = 4
		cfg.WALSegmentSize = segment
	})
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	k.openRetry(t, ctx)
	v := strings.Repeat("x", value)
	for i := range writes {
		if _, err := k.put(ctx, fmt.Sprintf("k%03d", i), v); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	commit := c.nodes[lead].Status(ctx).Commit
	for id, n := range c.nodes {
		rpctest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d snapshots and compacts its log", id), func() bool {
			st := n.Status(ctx)
			// The log kept is what the older of the two retained
			// snapshots needs (at most twice the threshold), the
			// entries kept for followers and a segment or two being
			// filled or deleted.
			return st.SnapshotIndex > 0 && st.Applied >= commit && n.StorageStats().Segments <= (2*threshold+4*value)/segment+3
		})
		st := n.Status(ctx)
		t.Logf("node %d: snapshot at %d of %d applied entries, %d WAL segments", id, st.SnapshotIndex, st.Applied, n.StorageStats().Segments)
	}
}
