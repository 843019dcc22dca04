package raft

import (
	"testing"

	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// InstallSnapshot beside the core (see "Snapshots" in doc.go): the
// leader's core names the snapshot (MsgSnap, metadata only) and learns
// how the transfer ended from ReportSnapshot; the follower's core gets a
// MsgSnap only once its driver holds the data, and installs by Raft's
// rules alone. These tests play both drivers by hand.

// snapshotFixture is leader 1 of {1, 2, 3} whose log is compacted into a
// snapshot holding data, and follower 2, which lacks everything and so
// needs that snapshot.
type snapshotFixture struct {
	c, f   *Core
	cd, fd *MemoryStorage
	index  uint64 // the snapshot's index
	data   []byte
}

func newSnapshotFixture(t *testing.T, data []byte) *snapshotFixture {
	t.Helper()
	c, d := electLeader(t, nil)
	ackAll(c, d)
	for range 5 {
		_ = c.Propose([]byte("x"))
	}
	persistAll(c, d)
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	ci := c.log.committed
	if _, err := d.CreateSnapshot(ci, c.ConfState(), data); err != nil {
		t.Fatal(err)
	}
	_ = d.Compact(ci)
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	return &snapshotFixture{c: c, f: f, cd: d, fd: fd, index: ci, data: data}
}

// start makes the leader notice that follower 2 needs the snapshot and
// returns the MsgSnap it sends.
func (x *snapshotFixture) start(t *testing.T) Message {
	t.Helper()
	c := x.c
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Reject: true, Index: c.trk.Progress[2].Next - 1, ConflictIndex: 2, LastIndex: 1})
	snaps := only(persistAll(c, x.cd), MsgSnap)
	if len(snaps) != 1 || snaps[0].To != 2 {
		t.Fatalf("leader sent %v, want one MsgSnap to 2", snaps)
	}
	return snaps[0]
}

// receive plays the follower's driver at the end of a transfer: it holds
// the data now, so it steps m into its core, persists what the core
// installs with that data, and returns the core's answers.
func (x *snapshotFixture) receive(t *testing.T, m Message) []Message {
	t.Helper()
	if err := x.f.Step(m); err != nil {
		t.Fatalf("step %v: %v", m, err)
	}
	var out []Message
	for x.f.HasReady() {
		rd := x.f.Ready()
		if !rd.Snapshot.IsEmpty() {
			if rd.Snapshot.Data != nil {
				t.Fatalf("the core handed out snapshot data: %q", rd.Snapshot.Data)
			}
			rd.Snapshot.Data = x.data
			if err := x.fd.ApplySnapshot(rd.Snapshot); err != nil {
				t.Fatal(err)
			}
		}
		_ = x.fd.Append(rd.Entries)
		if !rd.HardState.IsEmpty() {
			x.fd.SetHardState(rd.HardState)
		}
		out = append(out, rd.Messages...)
		out = append(out, rd.MessagesAfterPersist...)
		x.f.Advance()
	}
	return out
}

func (x *snapshotFixture) progress() *tracker.Progress { return x.c.trk.Progress[2] }

func TestLeaderNamesTheSnapshotAndSendsNoAppendsUntilTheReport(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"))
	m := x.start(t)
	if m.Snapshot == nil || m.Snapshot.Index != x.index || len(m.Snapshot.ConfState.Voters) != 3 {
		t.Fatalf("MsgSnap names %+v, want snapshot %d with the configuration", m.Snapshot, x.index)
	}
	if pr := x.progress(); pr.State != tracker.StateSnapshot || pr.PendingSnapshot != x.index {
		t.Fatalf("follower's progress %s, want snapshot %d pending", pr, x.index)
	}
	_ = x.c.Propose([]byte("y"))
	for range 5 {
		x.c.Tick()
	}
	for _, m := range persistAll(x.c, x.cd) {
		if m.To == 2 && (m.Type == MsgApp || m.Type == MsgSnap) {
			t.Fatalf("sent %v while the transfer runs", m)
		}
	}
}

// The report and the follower's acknowledgement race: in either order
// the follower ends up replicating from the snapshot's index.
func TestFinishedTransferPutsTheFollowerInReplicate(t *testing.T) {
	for _, reportFirst := range []bool{true, false} {
		x := newSnapshotFixture(t, []byte("0123456789"))
		m := x.start(t)
		acks := only(x.receive(t, m), MsgAppResp)
		if len(acks) != 1 || acks[0].Index != x.index || acks[0].Reject {
			t.Fatalf("follower answered %v, want an acknowledgement of %d", acks, x.index)
		}
		if snap, _ := x.fd.Snapshot(); snap.Meta.Index != x.index {
			t.Fatalf("follower holds snapshot %d, want %d", snap.Meta.Index, x.index)
		}
		if reportFirst {
			x.c.ReportSnapshot(2, x.index, SnapshotFinish)
			if pr := x.progress(); pr.State != tracker.StateProbe || pr.Next != x.index+1 || !pr.ProbeSent {
				t.Fatalf("after the report: %s, want a paused probe from %d", pr, x.index+1)
			}
			x.c.Step(acks[0])
		} else {
			x.c.Step(acks[0])
			x.c.ReportSnapshot(2, x.index, SnapshotFinish)
		}
		if pr := x.progress(); pr.State != tracker.StateReplicate || pr.Match != x.index {
			t.Fatalf("report first %v: %s, want replicating from %d", reportFirst, pr, x.index)
		}
		_ = x.c.Propose([]byte("y"))
		apps := only(persistAll(x.c, x.cd), MsgApp)
		sent := false
		for _, a := range apps {
			sent = sent || (a.To == 2 && a.Index == x.index && len(a.Entries) > 0)
		}
		if !sent {
			t.Fatalf("report first %v: no append after the snapshot: %v", reportFirst, apps)
		}
	}
}

// A failed transfer is tried again, but only once the follower answers a
// heartbeat: never at once, and never to a follower that is down.
func TestFailedTransferIsRetriedAfterAHeartbeatAnswer(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"))
	x.start(t)
	x.c.ReportSnapshot(2, x.index, SnapshotFailure)
	if pr := x.progress(); pr.State != tracker.StateProbe || pr.Next != pr.Match+1 || !pr.ProbeSent {
		t.Fatalf("after a failure: %s, want a paused probe from what it acknowledged", pr)
	}
	for range 3 {
		x.c.Tick()
	}
	if snaps := only(persistAll(x.c, x.cd), MsgSnap); len(snaps) != 0 {
		t.Fatalf("retried without hearing from the follower: %v", snaps)
	}
	x.c.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: x.c.term})
	snaps := only(persistAll(x.c, x.cd), MsgSnap)
	if len(snaps) != 1 || snaps[0].To != 2 || snaps[0].Snapshot.Index != x.index {
		t.Fatalf("after a heartbeat answer: %v, want the snapshot again", snaps)
	}
}

// Reports of a transfer the leader no longer waits for change nothing.
func TestReportsOfAnotherTransferAreIgnored(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"))
	x.start(t)
	before := *x.progress()
	x.c.ReportSnapshot(2, x.index-1, SnapshotFailure) // another snapshot
	x.c.ReportSnapshot(2, x.index+1, SnapshotFinish)
	x.c.ReportSnapshot(1, x.index, SnapshotFinish) // itself
	x.c.ReportSnapshot(7, x.index, SnapshotFinish) // not a member
	if pr := x.progress(); pr.State != before.State || pr.PendingSnapshot != before.PendingSnapshot || pr.Next != before.Next {
		t.Fatalf("stale reports changed the progress: %s, was %s", pr, &before)
	}
	// A replicating follower is not moved by a late report either.
	x.c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: x.c.term, Index: x.c.log.lastIndex()})
	pr3 := x.c.trk.Progress[3]
	state := pr3.State
	x.c.ReportSnapshot(3, x.index, SnapshotFailure)
	if pr3.State != state {
		t.Fatalf("a report for a follower not in StateSnapshot moved it to %s", pr3.State)
	}
	// Nor does a follower's core care.
	x.f.ReportSnapshot(1, x.index, SnapshotFinish)
	if x.f.HasReady() && len(x.f.Ready().Messages) > 0 {
		t.Fatal("a follower acted on a snapshot report")
	}
}

// The leader loses its leadership while its driver streams a snapshot:
// the late report is ignored, and the new term starts from scratch.
func TestLeaderChangeMidTransfer(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"))
	m := x.start(t)
	term := x.c.term
	x.c.Step(Message{Type: MsgHeartbeat, From: 3, To: 1, Term: term + 1})
	persistAll(x.c, x.cd)
	if x.c.state != StateFollower {
		t.Fatalf("still %s after a newer leader's heartbeat", x.c.state)
	}
	x.c.ReportSnapshot(2, x.index, SnapshotFinish)
	if x.c.HasReady() {
		if rd := x.c.Ready(); len(rd.Messages)+len(rd.MessagesAfterPersist) > 0 {
			t.Fatalf("an old leader's report made it send %v %v", rd.Messages, rd.MessagesAfterPersist)
		}
		x.c.Advance()
	}
	// The follower's driver, holding the data, steps the old leader's
	// MsgSnap after it heard the new leader: the core ignores it.
	x.f.Step(Message{Type: MsgHeartbeat, From: 3, To: 2, Term: term + 1})
	persistAll(x.f, x.fd)
	x.receive(t, m)
	if snap, _ := x.fd.Snapshot(); snap.Meta.Index == x.index || x.f.lead != 3 {
		t.Fatalf("follower installed the old leader's snapshot (%d) or follows %d", snap.Meta.Index, x.f.lead)
	}
}

// Issue 13: a forged, empty but well-formed snapshot turned a follower
// into a zombie serving empty reads. At an index the follower already
// committed, or in a past term, Raft's own rules refuse it.
func TestStaleSnapshotIsRefusedByRaftRules(t *testing.T) {
	empty := SnapshotMeta{Term: 1, ConfState: ConfState{Voters: []uint64{1, 2, 3}}}
	for _, tc := range []struct {
		name        string
		term, index uint64
	}{
		{"at the committed index", 2, 3},
		{"below the committed index", 2, 2},
		{"at a later term, below the committed index", 5, 3},
		{"from a past term", 1, 100},
	} {
		f, fd := followerOf(t, 2, nil)
		before := f.Status()
		meta := empty
		meta.Index = tc.index
		f.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: tc.term, Snapshot: &meta})
		out := persistAll(f, fd)
		st := f.Status()
		if snap, _ := fd.Snapshot(); snap.Meta.Index > 1 || st.LastIndex != before.LastIndex || st.Commit != before.Commit {
			t.Errorf("%s: installed: snapshot %d, last %d commit %d (was last %d commit %d)",
				tc.name, snap.Meta.Index, st.LastIndex, st.Commit, before.LastIndex, before.Commit)
		}
		if tc.term >= before.Term {
			if acks := only(out, MsgAppResp); len(acks) != 1 || acks[0].Index != before.Commit {
				t.Errorf("%s: answer %v, want our commit index %d", tc.name, acks, before.Commit)
			}
		}
	}
}

// A snapshot whose last entry the follower holds already only commits:
// its log (and the entries after the snapshot) stay.
func TestSnapshotOfEntriesTheFollowerHoldsOnlyCommits(t *testing.T) {
	f, fd := followerOf(t, 2, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 3, LogTerm: 2, Entries: []Entry{{Index: 4, Term: 2}, {Index: 5, Term: 2}}})
	persistAll(f, fd)
	f.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 2, Snapshot: &SnapshotMeta{Index: 4, Term: 2, ConfState: ConfState{Voters: []uint64{1, 2, 3}}}})
	out := persistAll(f, fd)
	if snap, _ := fd.Snapshot(); snap.Meta.Index > 1 || f.log.lastIndex() != 5 || f.log.committed != 4 {
		t.Fatalf("snapshot %d, last %d, commit %d; want the log kept and committed through 4", snap.Meta.Index, f.log.lastIndex(), f.log.committed)
	}
	if acks := only(out, MsgAppResp); len(acks) != 1 || acks[0].Index != 4 {
		t.Fatalf("answer %v, want the commit index 4", acks)
	}
}
