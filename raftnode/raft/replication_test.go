package raft

import (
	"errors"
	"testing"

	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// Log replication: consistency check, commit rules, backtracking,
// pipelining, batching, flow control, snapshots.

func TestLeaderAppendsNoOpOnElection(t *testing.T) {
	c, d := electLeader(t, nil)
	ents, _ := d.Entries(2, 3, 1<<20)
	if len(ents) != 1 || ents[0].Term != c.term || len(ents[0].Data) != 0 {
		t.Fatalf("no-op missing: %v", ents)
	}
}

func TestAppendEntriesConsistencyCheckAndConflictHints(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	// Follower has entries 2..4 of term 2.
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}, {Index: 4, Term: 2}}})
	persistAll(f, d)
	// Leader of term 4 probes at index 4 with term 3: mismatch.
	f.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 4, Index: 4, LogTerm: 3})
	r := only(persistAll(f, d), MsgAppResp)
	if len(r) != 1 || !r[0].Reject || r[0].ConflictTerm != 2 || r[0].ConflictIndex != 2 || r[0].LastIndex != 4 {
		t.Fatalf("reject hints: %v", r)
	}
	// Probe beyond the log: hint is last index + 1.
	f.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 4, Index: 9, LogTerm: 4})
	r = only(persistAll(f, d), MsgAppResp)
	if len(r) != 1 || !r[0].Reject || r[0].ConflictTerm != 0 || r[0].ConflictIndex != 5 {
		t.Fatalf("short-log hints: %v", r)
	}
	// A matching append replaces the conflicting suffix (Figure 2, step 3).
	f.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 4, Index: 2, LogTerm: 2, Entries: []Entry{{Index: 3, Term: 4}}})
	persistAll(f, d)
	if li, _ := d.LastIndex(); li != 3 {
		t.Fatalf("suffix not truncated: last=%d", li)
	}
	if tm, _ := d.Term(3); tm != 4 {
		t.Fatalf("entry 3 term %d", tm)
	}
}

func TestFollowerNeverCommitsBeyondWhatTheMessageProves(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2}}, Commit: 10})
	persistAll(f, d)
	if f.log.committed != 2 {
		t.Fatalf("commit %d, want min(leaderCommit, last new entry)=2", f.log.committed)
	}
}

func TestLeaderBacktracksOneTermPerRoundTrip(t *testing.T) {
	c, _ := electLeader(t, nil)
	pr := c.trk.Progress[2]
	pr.Next = c.log.lastIndex() + 1
	// Follower says: my term at your prev index is 7 (we have no term 7),
	// and term 7 starts at index 2.
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Reject: true, Index: pr.Next - 1, ConflictTerm: 7, ConflictIndex: 2, LastIndex: 40})
	if pr.Next != 2 {
		t.Fatalf("next=%d, want 2 (skip the follower's whole term)", pr.Next)
	}
}

func TestPipeliningBoundedByInflightWindow(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxInflightMsgs = 2; cfg.MaxEntriesPerMsg = 1 })
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if c.trk.Progress[2].State != tracker.StateReplicate {
		t.Fatalf("state %s", c.trk.Progress[2].State)
	}
	for i := 0; i < 5; i++ {
		_ = c.Propose([]byte{byte(i)})
	}
	apps := 0
	for _, m := range persistAll(c, d) {
		if m.Type == MsgApp && m.To == 2 && len(m.Entries) > 0 {
			apps++
		}
	}
	if apps != 2 {
		t.Fatalf("%d appends in flight, window is 2", apps)
	}
}

func TestBatchingCapsEntriesAndBytesPerMessage(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxEntriesPerMsg = 3; cfg.MaxSizePerMsg = 10 })
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	for i := 0; i < 6; i++ {
		_ = c.Propose([]byte("ab"))
	}
	_ = c.Propose([]byte("0123456789012"))
	for _, m := range persistAll(c, d) {
		if m.Type == MsgApp && m.To == 2 {
			if len(m.Entries) > 3 || (len(m.Entries) > 1 && payloadSize(m.Entries) > 10) {
				t.Fatalf("batch too large: %d entries, %d bytes", len(m.Entries), payloadSize(m.Entries))
			}
		}
	}
}

func TestUncommittedSizeCapDropsProposals(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxUncommittedEntriesSize = 100 })
	ackAll(c, d)
	if err := c.Propose(make([]byte, 80)); err != nil {
		t.Fatal(err)
	}
	if err := c.Propose(make([]byte, 30)); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("want ErrProposalDropped, got %v", err)
	}
	// Once committed and handed out, room is back.
	msgs := persistAll(c, d)
	for _, m := range only(msgs, MsgApp) {
		if m.To == 2 && len(m.Entries) > 0 {
			c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: m.Entries[len(m.Entries)-1].Index})
		}
	}
	persistAll(c, d)
	if err := c.Propose(make([]byte, 30)); err != nil {
		t.Fatalf("after commit: %v", err)
	}
}

// §5.3 / Figure 13: a follower whose next entries the leader compacted
// is caught up with the snapshot, streamed beside the core by the
// drivers (played here by hand), then with appends.
func TestFollowerBehindTheCompactedLogCatchesUpBySnapshot(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"))
	out := []Message{x.start(t)}
	for step := 0; step < 20 && x.f.log.committed < x.c.log.committed; step++ {
		var answers []Message
		for _, m := range out {
			switch {
			case m.To != 2:
			case m.Type == MsgSnap:
				answers = append(answers, x.receive(t, m)...)
				x.c.ReportSnapshot(2, m.Snapshot.Index, SnapshotFinish)
			default:
				x.f.Step(m)
				answers = append(answers, persistAll(x.f, x.fd)...)
			}
		}
		for _, m := range answers {
			x.c.Step(m)
		}
		x.c.Tick()
		out = persistAll(x.c, x.cd)
	}
	if x.f.log.committed < x.c.log.committed {
		t.Fatalf("follower commit=%d want %d", x.f.log.committed, x.c.log.committed)
	}
	if snap, _ := x.fd.Snapshot(); string(snap.Data) != "0123456789" || snap.Meta.Index != x.index {
		t.Fatalf("follower's snapshot %d %q", snap.Meta.Index, snap.Data)
	}
}

func TestProposeBatchIsAllOrNothingAndSharesOneAppend(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxUncommittedEntriesSize = 10 })
	ackAll(c, d)
	before := c.log.lastIndex()
	if err := c.ProposeBatch([][]byte{[]byte("aa"), []byte("bb"), []byte("cc")}); err != nil {
		t.Fatal(err)
	}
	if err := c.ProposeBatch([][]byte{[]byte("dddd"), []byte("eeee")}); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("over the cap: %v", err)
	}
	if got := c.log.lastIndex() - before; got != 3 {
		t.Fatalf("appended %d entries, want 3", got)
	}
	var toTwo int
	for _, m := range only(persistAll(c, d), MsgApp) {
		if m.To == 2 {
			toTwo++
			if len(m.Entries) != 3 {
				t.Fatalf("batch split: %d entries", len(m.Entries))
			}
		}
	}
	if toTwo != 1 {
		t.Fatalf("%d appends to node 2, want 1", toTwo)
	}
}

func TestInflightBytesCapPausesReplication(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxInflightBytes = 8; cfg.MaxEntriesPerMsg = 1 })
	ackAll(c, d)
	for i := 0; i < 5; i++ {
		_ = c.Propose([]byte("12345"))
	}
	apps := 0
	for _, m := range persistAll(c, d) {
		if m.Type == MsgApp && m.To == 2 && len(m.Entries) > 0 {
			apps++
		}
	}
	if apps != 2 { // 5 bytes, then 10 >= 8: full
		t.Fatalf("%d appends in flight under an 8-byte cap", apps)
	}
}

func TestCommittedEntriesArePagedByMaxCommittedSizePerReady(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1}, func(cfg *Config) { cfg.MaxCommittedSizePerReady = 10 })
	c.campaign(campaignElection)
	persistAll(c, d)
	for i := 0; i < 6; i++ {
		_ = c.Propose([]byte("abcd"))
	}
	var pages, total int
	for c.HasReady() {
		rd := c.Ready()
		_ = d.Append(rd.Entries)
		if !rd.HardState.IsEmpty() {
			d.SetHardState(rd.HardState)
		}
		if n := len(rd.CommittedEntries); n > 0 {
			pages++
			total += n
			if payloadSize(rd.CommittedEntries) > 10 && n > 1 {
				t.Fatalf("page of %d bytes", payloadSize(rd.CommittedEntries))
			}
		}
		c.Advance()
	}
	if total != 6 || pages < 3 {
		t.Fatalf("%d entries in %d pages", total, pages)
	}
}

func TestMessageStringNamesEveryType(t *testing.T) {
	for typ := MessageType(0); typ <= msgTypeEnd; typ++ {
		m := Message{Type: typ, Snapshot: &SnapshotMeta{Index: 1}}
		if m.String() == "" || typ.String() == "" {
			t.Fatalf("empty string for %d", typ)
		}
		m.Snapshot = nil
		_ = m.String() // must not panic without a snapshot
	}
}

func TestReportUnreachableFallsBackToProbing(t *testing.T) {
	c, d := electLeader(t, nil)
	ackAll(c, d)
	for i := 0; i < 3; i++ {
		_ = c.Propose([]byte("x"))
	}
	persistAll(c, d)
	pr := c.trk.Progress[2]
	if pr.State != tracker.StateReplicate || pr.Next != c.log.lastIndex()+1 {
		t.Fatalf("progress %s", pr)
	}
	c.ReportUnreachable(2)
	if pr.State != tracker.StateProbe || pr.Next != pr.Match+1 {
		t.Fatalf("after unreachable: %s", pr)
	}
}

// With LazyCommit, a commit sends no empty appends: the index rides on the
// next append with entries, or goes out when the driver announces it.
// Without it, every follower hears of the commit at once.
func TestLazyCommitWaitsForEntriesOrAnnouncement(t *testing.T) {
	commitAppends := func(lazy bool) (*Core, *MemoryStorage, []Message) {
		c, d := electLeader(t, func(cfg *Config) { cfg.LazyCommit = lazy })
		ackAll(c, d)
		if err := c.Propose([]byte("x")); err != nil {
			t.Fatal(err)
		}
		persistAll(c, d)
		idx := c.log.lastIndex()
		c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: idx})
		if c.log.committed != idx {
			t.Fatalf("lazy=%v: committed %d, want %d", lazy, c.log.committed, idx)
		}
		return c, d, only(persistAll(c, d), MsgApp)
	}

	if _, _, apps := commitAppends(false); len(apps) != 2 {
		t.Fatalf("eager: %d commit appends, want one per follower: %v", len(apps), apps)
	}

	c, d, apps := commitAppends(true)
	if len(apps) != 0 {
		t.Fatalf("lazy: commit sent appends: %v", apps)
	}
	if !c.CommitUnannounced() {
		t.Fatal("lazy: commit not reported unannounced")
	}
	c.AnnounceCommit()
	apps = only(persistAll(c, d), MsgApp)
	if len(apps) != 2 || apps[0].Commit != c.log.committed || apps[1].Commit != c.log.committed {
		t.Fatalf("announce: want two appends carrying commit %d: %v", c.log.committed, apps)
	}
	if c.CommitUnannounced() {
		t.Fatal("still unannounced after AnnounceCommit")
	}
	c.AnnounceCommit()
	if apps := only(persistAll(c, d), MsgApp); len(apps) != 0 {
		t.Fatalf("a second announcement sent %v", apps)
	}

	// The next proposal carries a waiting index to every follower, so
	// nothing is left to announce.
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex()})
	if err := c.Propose([]byte("y")); err != nil {
		t.Fatal(err)
	}
	persistAll(c, d)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if !c.CommitUnannounced() {
		t.Fatal("second commit not reported unannounced")
	}
	if err := c.Propose([]byte("z")); err != nil {
		t.Fatal(err)
	}
	apps = only(persistAll(c, d), MsgApp)
	if len(apps) != 2 || apps[0].Commit != c.log.committed || c.CommitUnannounced() {
		t.Fatalf("the next proposal did not carry commit %d to both followers: %v (unannounced %v)",
			c.log.committed, apps, c.CommitUnannounced())
	}

	// A follower never reports anything unannounced.
	f, _ := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.LazyCommit = true })
	if f.CommitUnannounced() {
		t.Fatal("a follower reports an unannounced commit")
	}
}

// Even with LazyCommit, a committed membership change is announced at
// once: a member it removes hears nothing more once it is applied, and
// must learn of its own removal from this announcement.
func TestLazyCommitAnnouncesMembershipChangesAtOnce(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.LazyCommit = true })
	ackAll(c, d)
	cc := ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeRemoveNode, NodeID: 3}}}
	if err := c.ProposeConfChange(cc); err != nil {
		t.Fatal(err)
	}
	persistAll(c, d)
	idx := c.log.lastIndex()
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: idx})
	if c.log.committed != idx {
		t.Fatalf("committed %d, want %d", c.log.committed, idx)
	}
	var toThree []Message
	for _, m := range only(persistAll(c, d), MsgApp) {
		if m.To == 3 {
			toThree = append(toThree, m)
		}
	}
	if len(toThree) == 0 || toThree[len(toThree)-1].Commit != idx {
		t.Fatalf("the removed member was not told the change committed at %d: %v", idx, toThree)
	}
}
