package raftnode_test

import (
	"context"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
)

// Messages a stale, buggy or forged peer sends, delivered to a node
// exactly as its Raft capability hands a decoded request to the loop
// (issue 13, "defence in depth inside the node"). Authenticated peers can
// still be stale or buggy: whatever they send must neither stop a node
// nor damage its data.

// loggedCluster is a 3-node test cluster whose nodes log to buffers (at
// warn level and above), shown when the test fails.
func loggedCluster(t *testing.T) (*testCluster, map[uint64]*rpctest.LogBuffer) {
	bufs := map[uint64]*rpctest.LogBuffer{}
	for id := uint64(1); id <= 3; id++ {
		_, bufs[id] = rpctest.BufferLogger(hclog.Warn)
	}
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: bufs[cfg.ID], Level: hclog.Warn}).With("node", cfg.ID)
	})
	t.Cleanup(func() {
		if t.Failed() {
			for id, b := range bufs {
				t.Logf("node %d log:\n%s", id, b)
			}
		}
	})
	return c, bufs
}

// writeAndReplicate writes n keys through the leader and waits until
// follower f has applied them; it returns a client of f.
func writeAndReplicate(t *testing.T, ctx context.Context, c *testCluster, lead, f uint64, n int) *kvClient {
	t.Helper()
	k := c.client(lead)
	k.openRetry(t, ctx)
	for i := range n {
		if _, err := k.put(ctx, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	kf := c.client(f)
	last := fmt.Sprintf("k%d", n-1)
	rpctest.Eventually(t, 10*time.Second, "the follower applied the writes", func() bool {
		_, found, err := kf.get(ctx, last, true)
		return err == nil && found
	})
	return kf
}

// readsAll checks that node f serves every key linearizably.
func readsAll(t *testing.T, ctx context.Context, kf *kvClient, n int) {
	t.Helper()
	for i := range n {
		var v string
		var found bool
		var err error
		rpctest.Eventually(t, 10*time.Second, "a linearizable read", func() bool {
			v, found, err = kf.get(ctx, fmt.Sprintf("k%d", i), false)
			return err == nil
		})
		if !found || v != fmt.Sprintf("v%d", i) {
			t.Fatalf("k%d: found=%v value %q, want v%d", i, found, v, i)
		}
	}
}

func followerOf(c *testCluster, lead uint64) uint64 { return lead%3 + 1 }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Issue 13: a garbage snapshot made a node stop, then refuse to start
// forever ("corrupt snapshot envelope"). A snapshot that fails its
// checksum or does not decode is refused before anything is replaced:
// the node keeps its data and keeps running, and starts again.
func TestUndecodableSnapshotIsRefusedAndTheNodeKeepsRunning(t *testing.T) {
	c, bufs := loggedCluster(t)
	ctx := ctxT(t)
	lead := c.leader()
	f := followerOf(c, lead)
	const keys = 20
	kf := writeAndReplicate(t, ctx, c, lead, f, keys)
	st, err := raftnode.CoreStatus(ctx, c.nodes[f])
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	t.Logf("garbage seed %d", seed)
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rand.New(rand.NewPCG(seed, uint64(i))).Uint32())
	}
	wellFormed := raftnode.EmptySnapshotData(map[uint64]string{1: c.addrs[1], 2: c.addrs[2], 3: c.addrs[3]})
	cases := []struct {
		name string
		data []byte
		sum  uint32
	}{
		{"garbage with its checksum", garbage, crc32.Checksum(garbage, castagnoli)},
		{"garbage without a checksum", garbage, 0},
		{"a well-formed snapshot under another checksum", wellFormed, crc32.Checksum(wellFormed, castagnoli) ^ 1},
	}
	for i, tc := range cases {
		// From the leader, in its term, far ahead of the commit index:
		// by Raft's rules alone it would replace everything.
		meta := &raft.SnapshotMeta{Index: st.Commit + 1000 + uint64(i), Term: st.Term, ConfState: st.Config}
		chunks := []raft.Message{
			{Type: raft.MsgSnap, From: lead, To: f, Term: st.Term, Snapshot: meta, Data: tc.data[:len(tc.data)/2], Checksum: tc.sum},
			{Type: raft.MsgSnap, From: lead, To: f, Term: st.Term, Snapshot: meta, Offset: uint64(len(tc.data) / 2), Data: tc.data[len(tc.data)/2:], Done: true, Checksum: tc.sum},
		}
		for _, m := range chunks {
			if _, _, err := raftnode.DeliverPeerMessage(ctx, c.nodes[f], m); err != nil {
				t.Fatalf("%s: deliver: %v", tc.name, err)
			}
		}
		if err := c.nodes[f].Err(); err != nil {
			t.Fatalf("%s: the node stopped: %v", tc.name, err)
		}
	}
	if got, _ := raftnode.CoreStatus(ctx, c.nodes[f]); got.SnapshotsRefused != uint64(len(cases)) {
		t.Errorf("SnapshotsRefused = %d, want %d", got.SnapshotsRefused, len(cases))
	}
	if log := bufs[f].String(); !strings.Contains(log, "refused a snapshot from the leader") {
		t.Errorf("no warning about the refused snapshot in the follower's log")
	}
	readsAll(t, ctx, kf, keys)
	// The node restarts from its data directory: nothing bad reached it.
	c.stop(f)
	c.start(f)
	readsAll(t, ctx, c.client(f), keys)
}

// Issue 13: a forged empty, well-formed snapshot turned a follower into a
// zombie serving empty reads. At an index the follower already committed,
// Raft's own rules refuse it, in the leader's term or a later one.
func TestStaleEmptySnapshotLeavesTheFollowerItsData(t *testing.T) {
	c, _ := loggedCluster(t)
	ctx := ctxT(t)
	lead := c.leader()
	f := followerOf(c, lead)
	const keys = 10
	kf := writeAndReplicate(t, ctx, c, lead, f, keys)
	st, err := raftnode.CoreStatus(ctx, c.nodes[f])
	if err != nil {
		t.Fatal(err)
	}
	installed := c.nodes[f].Status(ctx).SnapshotsInstalled
	empty := raftnode.EmptySnapshotData(map[uint64]string{1: c.addrs[1], 2: c.addrs[2], 3: c.addrs[3]})
	// The snapshots' terms do not match the follower's entries at their
	// indexes (the bootstrap term, 1, or a term to come), so only the
	// commit index rule refuses them.
	for _, tc := range []struct {
		name                  string
		term, index, snapTerm uint64
	}{
		{"at the commit index", st.Term, st.Commit, 1},
		{"below the commit index", st.Term, st.Commit - 1, 1},
		{"in a later term", st.Term + 1, st.Commit, st.Term + 1},
	} {
		m := raft.Message{Type: raft.MsgSnap, From: lead, To: f, Term: tc.term, Done: true, Data: empty,
			Checksum: crc32.Checksum(empty, castagnoli),
			Snapshot: &raft.SnapshotMeta{Index: tc.index, Term: tc.snapTerm, ConfState: st.Config}}
		if _, _, err := raftnode.DeliverPeerMessage(ctx, c.nodes[f], m); err != nil {
			t.Fatalf("%s: deliver: %v", tc.name, err)
		}
	}
	if got := c.nodes[f].Status(ctx).SnapshotsInstalled; got != installed {
		t.Fatalf("the follower installed %d stale snapshots", got-installed)
	}
	if err := c.nodes[f].Err(); err != nil {
		t.Fatalf("the node stopped: %v", err)
	}
	readsAll(t, ctx, kf, keys)
}

// A node that is not a member (removed, misconfigured) campaigning, and a
// member that does not lead sending TimeoutNow: the follower ignores both,
// keeps its term, and says so once per sender, not once per message.
func TestMessagesFromWhoMayNotSendThemAreIgnoredAndLoggedOnce(t *testing.T) {
	c, bufs := loggedCluster(t)
	ctx := ctxT(t)
	lead := c.leader()
	f := followerOf(c, lead)
	other := 6 - lead - f
	writeAndReplicate(t, ctx, c, lead, f, 1)
	before, err := raftnode.CoreStatus(ctx, c.nodes[f])
	if err != nil {
		t.Fatal(err)
	}
	const stranger, n = 99, 50
	for range n {
		vote := raft.Message{Type: raft.MsgVote, From: stranger, To: f, Term: before.Term + 5, LastLogIndex: 1, LastLogTerm: 1, Transfer: true}
		if _, ok, err := raftnode.DeliverPeerMessage(ctx, c.nodes[f], vote); err != nil || ok {
			t.Fatalf("vote request from a non-member: answered=%v, %v", ok, err)
		}
		tn := raft.Message{Type: raft.MsgTimeoutNow, From: other, To: f, Term: before.Term}
		if _, _, err := raftnode.DeliverPeerMessage(ctx, c.nodes[f], tn); err != nil {
			t.Fatalf("TimeoutNow: %v", err)
		}
	}
	after, err := raftnode.CoreStatus(ctx, c.nodes[f])
	if err != nil {
		t.Fatal(err)
	}
	if after.Term != before.Term || after.Role != raft.StateFollower {
		t.Errorf("the follower moved from term %d to %d, role %s", before.Term, after.Term, after.Role)
	}
	if got := after.DroppedNonMember - before.DroppedNonMember; got != n {
		t.Errorf("DroppedNonMember grew by %d, want %d", got, n)
	}
	if got := after.DroppedNotFromLeader - before.DroppedNotFromLeader; got != n {
		t.Errorf("DroppedNotFromLeader grew by %d, want %d", got, n)
	}
	log := bufs[f].String()
	if got := strings.Count(log, "ignored a Raft message from a node that is not a member"); got != 1 || !strings.Contains(log, fmt.Sprintf("from=%d", stranger)) || !strings.Contains(log, "type=MsgVote") {
		t.Errorf("%d warnings about the non-member (want 1, naming from=%d and type=MsgVote)", got, stranger)
	}
	if got := strings.Count(log, "ignored a TimeoutNow"); got != 1 || !strings.Contains(log, fmt.Sprintf("from=%d", other)) {
		t.Errorf("%d warnings about the TimeoutNow (want 1, naming from=%d)", got, other)
	}
}
