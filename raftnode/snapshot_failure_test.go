package raftnode_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/rpc/rpctest"
)

// snapFailFS fails every file creation in the snapshot directory once
// armed, and counts the attempts.
type snapFailFS struct {
	vfs.FS
	armed    atomic.Bool
	attempts atomic.Int64
}

func (f *snapFailFS) Create(name string) (vfs.File, error) {
	if f.armed.Load() && strings.Contains(name, "/snap/") {
		f.attempts.Add(1)
		return nil, errors.New("injected: no space left on device")
	}
	return f.FS.Create(name)
}

// A snapshot that fails (say the disk is full) is retried at a bounded
// rate, not on every turn of the loop: each attempt serializes the whole
// state machine, so retrying at the loop's pace burns CPU and floods the
// log while the node keeps serving.
func TestFailingSnapshotIsNotRetriedInALoop(t *testing.T) {
	fss := map[uint64]*snapFailFS{}
	for id := uint64(1); id <= 3; id++ {
		fss[id] = &snapFailFS{FS: vfs.OS}
	}
	const every = 20
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.StorageKnobs = &storeknobs.Knobs{FS: fss[cfg.ID]}
		cfg.SnapshotEntries = every
	})
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	k.openRetry(t, ctx)
	fs := fss[lead]
	fs.armed.Store(true)
	const writes = 300
	start := time.Now()
	for i := uint64(1); i <= writes; i++ {
		if _, err := k.putCode(ctx, i, "k", "v"); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	elapsed := time.Since(start)
	rpctest.Eventually(t, 5*time.Second, "a snapshot was attempted", func() bool { return fs.attempts.Load() > 0 })
	// One attempt per SnapshotEntries applied entries, or one per second
	// of trying, would be fine; allow plenty of slack over that.
	limit := int64(2*writes/every) + 2*int64(elapsed/time.Second) + 5
	if got := fs.attempts.Load(); got > limit {
		t.Errorf("%d snapshot attempts for %d writes in %v (want at most %d)", got, writes, elapsed.Round(time.Millisecond), limit)
	}
	// Once the disk recovers, snapshots resume.
	fs.armed.Store(false)
	before := c.nodes[lead].Status(ctx).SnapshotIndex
	for i := uint64(writes + 1); i <= writes+3*every; i++ {
		if _, err := k.putCode(ctx, i, "k", "v"); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	rpctest.Eventually(t, 5*time.Second, "snapshots resume after the disk recovers", func() bool {
		return c.nodes[lead].Status(ctx).SnapshotIndex > before
	})
	if err := c.nodes[lead].Err(); err != nil {
		t.Errorf("the leader stopped: %v", err)
	}
}

// Snapshot (the admin call) waits for the snapshot it started: it returns
// once the snapshot is on disk, or with the writer's error when it fails.
func TestSnapshotCallWaitsForItsSnapshot(t *testing.T) {
	fs := &snapFailFS{FS: vfs.OS}
	c := newTestCluster(t, 1, func(cfg *raftnode.Config) { cfg.StorageKnobs = &storeknobs.Knobs{FS: fs} })
	n := c.nodes[c.leader()]
	ctx := ctxT(t)
	k := c.client(n.ID())
	k.openRetry(t, ctx)
	if _, err := k.putCode(ctx, 1, "k", "v"); err != nil {
		t.Fatal(err)
	}

	fs.armed.Store(true)
	if _, err := n.Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Snapshot on a full disk: %v, want the writer's error", err)
	}
	if err := n.Err(); err != nil {
		t.Fatalf("a failed snapshot stopped the node: %v", err)
	}

	fs.armed.Store(false)
	if _, err := k.putCode(ctx, 2, "k", "v2"); err != nil {
		t.Fatal(err)
	}
	index, err := n.Snapshot(ctx)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if st := n.Status(ctx); st.SnapshotIndex < index || st.Applied < index {
		t.Errorf("Snapshot returned index %d before it was on disk: status %+v", index, st)
	}
}
