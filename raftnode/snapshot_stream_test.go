package raftnode_test

import (
	"context"
	"fmt"
	"hash/crc32"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
)

// Snapshots stream beside the core (issue 14): a follower far behind
// catches up by a snapshot the leader reads from its file once and
// streams in chunks, neither side holding more than a chunk of it in a
// buffer of its own; a leader change mid-transfer leaves the follower
// healthy, caught up by the new leader.

// catchUp waits until node id has applied everything the leader lead
// committed.
func (c *testCluster) catchUp(ctx context.Context, id, lead uint64, d time.Duration) {
	c.t.Helper()
	rpctest.Eventually(c.t, d, fmt.Sprintf("node %d caught up with leader %d", id, lead), func() bool {
		return c.nodes[id].Status(ctx).Applied >= c.nodes[lead].Status(ctx).Commit
	})
}

// fill writes n keys of size bytes each through k.
func fill(t *testing.T, ctx context.Context, k *kvClient, prefix string, n, size int) {
	t.Helper()
	value := strings.Repeat("v", size)
	for i := range n {
		if _, err := k.put(ctx, fmt.Sprintf("%s%d", prefix, i), value); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
}

func TestFollowerFarBehindCatchesUpByAStreamedSnapshot(t *testing.T) {
	const chunk = 32 << 10
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 100, 10, 64<<10
		cfg.SnapshotChunk = chunk
	})
	ctx := ctxT(t)
	lead := c.leader()
	f := lead%3 + 1
	k := c.client(lead)
	k.openRetry(t, ctx)
	c.stop(f)
	// State far larger than a chunk: the snapshot spans dozens of them.
	const keys, size = 300, 4 << 10
	fill(t, ctx, k, "k", keys, size)
	// Summed over the nodes that may lead meanwhile: on a loaded machine
	// leadership can move during the catch-up, and the new leader sends.
	senders := func() (sent raftnode.SnapshotSendStatsT, read int64) {
		for id, n := range c.nodes {
			if id == f {
				continue
			}
			st := raftnode.SnapshotSendStats(n)
			sent.Started += st.Started
			sent.Finished += st.Finished
			sent.BytesRead += st.BytesRead
			sent.Buffers += st.Buffers
			sent.LargestBuffer = max(sent.LargestBuffer, st.LargestBuffer)
			read += raftnode.SnapshotBytesRead(n)
		}
		return sent, read
	}
	sentBefore, readBefore := senders()
	c.start(f)
	c.catchUp(ctx, f, lead, 20*time.Second)
	if got := c.nodes[f].Status(ctx).SnapshotsInstalled; got == 0 {
		t.Fatal("the follower caught up without a snapshot; the test meant to stream one")
	}
	sent, read := senders()
	transfers := sent.Started - sentBefore.Started
	dataRead := sent.BytesRead - sentBefore.BytesRead
	fileRead := read - readBefore
	writes, largest := raftnode.SnapshotReceiveWrites(c.nodes[f])
	t.Logf("%d transfer(s) (%d finished), %d data bytes read by the sender, %d bytes of snapshot files read by the leader's store; "+
		"the follower took %d writes of at most %d bytes; sender buffers: %d of at most %d bytes",
		transfers, sent.Finished-sentBefore.Finished, dataRead, fileRead, writes, largest, sent.Buffers-sentBefore.Buffers, sent.LargestBuffer)
	// The snapshot sent is the newest, taken at most SnapshotEntries
	// writes before the last: nearly all of the state.
	if sent.Finished-sentBefore.Finished == 0 || dataRead < 30*chunk {
		t.Fatalf("no snapshot of many chunks was streamed: %+v", sent)
	}
	// Each byte of the file read once per transfer: what the store read
	// is what the sender sent on, plus each file's header and trailer.
	if fileRead > int64(dataRead)+int64(transfers)*4096 {
		t.Errorf("the leader's store read %d bytes of snapshot files for %d data bytes in %d transfer(s): the file was read more than once",
			fileRead, dataRead, transfers)
	}
	// No buffer of a snapshot larger than a chunk, on either side: one
	// buffer per transfer on the leader, and the follower copies nothing
	// out of the writes it takes.
	if sent.LargestBuffer > chunk || sent.Buffers-sentBefore.Buffers > transfers {
		t.Errorf("the sender allocated %d buffers (largest %d bytes) for %d transfers; want one of at most a chunk (%d) each",
			sent.Buffers-sentBefore.Buffers, sent.LargestBuffer, transfers, chunk)
	}
	if largest > chunk || writes < uint64(keys*size/chunk) {
		t.Errorf("the follower took %d writes of up to %d bytes; want writes of at most a chunk (%d)", writes, largest, chunk)
	}
	kf := c.client(f)
	for _, key := range []string{"k0", fmt.Sprintf("k%d", keys-1)} {
		if v, found, err := kf.get(ctx, key, true); err != nil || !found || len(v) != size {
			t.Fatalf("the caught-up follower's %s: %d bytes, found %v, %v", key, len(v), found, err)
		}
	}
}

// holdFS holds every write to a snapshot being received or created,
// once armed, until released, and counts the writes it holds: a disk
// that stalls in the middle of a transfer.
type holdFS struct {
	vfs.FS
	armed   atomic.Bool
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func newHoldFS() *holdFS { return &holdFS{FS: vfs.OS, release: make(chan struct{})} }

func (fs *holdFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil || !strings.HasSuffix(name, ".snap.tmp") {
		return f, err
	}
	return &holdFile{File: f, fs: fs}, nil
}

func (fs *holdFS) unhold() { fs.once.Do(func() { close(fs.release) }) }

type holdFile struct {
	vfs.File
	fs *holdFS
}

func (f *holdFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.armed.Load() {
		f.fs.held.Add(1)
		<-f.fs.release
	}
	return f.File.WriteAt(p, off)
}

// The leader hands leadership over while the follower's disk holds its
// snapshot mid-transfer: the old leader stops its transfer, the new one
// sends its own, and the follower catches up and keeps running.
func TestLeaderChangeMidTransfer(t *testing.T) {
	fss := map[uint64]*holdFS{}
	for id := uint64(1); id <= 3; id++ {
		fss[id] = newHoldFS()
	}
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 100, 10, 64<<10
		cfg.SnapshotChunk = 16 << 10
		cfg.StorageKnobs = &storeknobs.Knobs{FS: fss[cfg.ID]}
	})
	t.Cleanup(func() {
		for _, fs := range fss {
			fs.unhold()
		}
	})
	ctx := ctxT(t)
	lead := c.leader()
	f := lead%3 + 1
	k := c.client(f%3 + 1) // the third node: it stays up throughout
	k.openRetry(t, ctx)
	c.stop(f)
	fill(t, ctx, k, "k", 200, 2<<10)
	fss[f].armed.Store(true)
	c.start(f)
	rpctest.Eventually(t, 10*time.Second, "the follower's disk holds the snapshot mid-transfer", func() bool {
		return fss[f].held.Load() > 0
	})
	if err := c.nodes[lead].StepDown(ctx); err != nil {
		t.Fatalf("step down: %v", err)
	}
	next := c.leaderOtherThan(lead)
	if next == f {
		t.Fatalf("the follower %d that lacks the log became leader", f)
	}
	if st := raftnode.SnapshotSendStats(c.nodes[lead]); st.Superseded == 0 {
		t.Errorf("the old leader did not stop its transfer when it stepped down: %+v", st)
	}
	fss[f].armed.Store(false)
	fss[f].unhold()
	c.catchUp(ctx, f, next, 20*time.Second)
	if err := c.nodes[f].Err(); err != nil {
		t.Fatalf("the follower stopped: %v", err)
	}
	if got := c.nodes[f].Status(ctx).SnapshotsInstalled; got == 0 {
		t.Fatal("the follower caught up without a snapshot")
	}
	if v, found, err := c.client(f).get(ctx, "k199", true); err != nil || !found || len(v) != 2<<10 {
		t.Fatalf("the follower's last key: %d bytes, found %v, %v", len(v), found, err)
	}
}

// A follower that refused a corrupt and a truncated snapshot stays
// healthy, and when it next falls behind it catches up by a good one.
func TestFollowerThatRefusedSnapshotsLaterCatchesUpByOne(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 100, 10, 64<<10
		cfg.SnapshotChunk = 16 << 10
	})
	ctx := ctxT(t)
	lead := c.leader()
	f := lead%3 + 1
	k := c.client(lead)
	k.openRetry(t, ctx)
	fill(t, ctx, k, "a", 50, 1<<10)
	c.catchUp(ctx, f, lead, 10*time.Second)
	st, err := raftnode.CoreStatus(ctx, c.nodes[f])
	if err != nil {
		t.Fatal(err)
	}
	good := raftnode.EmptySnapshotData(c.addrs)
	garbage := []byte(strings.Repeat("not a snapshot ", 5000))
	for _, tc := range []struct {
		name string
		data []byte
		size uint64
		sum  uint32
	}{
		{"corrupt", garbage, uint64(len(garbage)), crc32.Checksum(garbage, castagnoli)},
		{"truncated", good[:len(good)/2], uint64(len(good)), crc32.Checksum(good, castagnoli)},
	} {
		meta := raft.SnapshotMeta{Index: st.Commit + 500, Term: st.Term, ConfState: st.Config}
		err := streamSnapshot(ctx, c.addrs[f], snapshotOffer{from: lead, to: f, term: st.Term, meta: meta, size: tc.size, sum: tc.sum}, tc.data, 4<<10)
		if err == nil {
			t.Fatalf("a %s snapshot was accepted", tc.name)
		}
		t.Logf("%s: %v", tc.name, err)
	}
	if err := c.nodes[f].Err(); err != nil {
		t.Fatalf("the follower stopped: %v", err)
	}
	installed := c.nodes[f].Status(ctx).SnapshotsInstalled
	c.stop(f)
	fill(t, ctx, k, "b", 300, 1<<10)
	c.start(f)
	c.catchUp(ctx, f, lead, 20*time.Second)
	if got := c.nodes[f].Status(ctx).SnapshotsInstalled; got == installed {
		t.Fatal("the follower caught up without a snapshot; the test meant to stream one")
	}
	kf := c.client(f)
	for _, key := range []string{"a0", "b299"} {
		if _, found, err := kf.get(ctx, key, true); err != nil || !found {
			t.Fatalf("the follower lacks %s: %v %v", key, found, err)
		}
	}
}
