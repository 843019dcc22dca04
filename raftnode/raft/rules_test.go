package raft

import (
	"errors"
	"fmt"
	"testing"

	"github.com/capraft/capraft/raftnode/raft/tracker"
)

// Unit tests named after the rules of the paper and thesis they check.
// They drive single cores by hand with Step/Tick/Ready/Advance.

func newTestCore(t testing.TB, id uint64, voters []uint64, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	d := NewMemoryStorage()
	if err := d.ApplySnapshot(BootstrapSnapshot(ConfState{Voters: voters})); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: id, Storage: d, ElectionTick: 10, HeartbeatTick: 1, Seed: 7}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

// persistAll handles every pending Ready like a correct driver and
// returns all messages it would send.
func persistAll(c *Core, d *MemoryStorage) []Message {
	var out []Message
	for c.HasReady() {
		rd := c.Ready()
		out = append(out, rd.Messages...)
		if !rd.Snapshot.IsEmpty() {
			_ = d.ApplySnapshot(rd.Snapshot)
		}
		_ = d.Append(rd.Entries)
		if !rd.HardState.IsEmpty() {
			d.SetHardState(rd.HardState)
		}
		out = append(out, rd.MessagesAfterPersist...)
		c.Advance()
	}
	return out
}

func only(msgs []Message, typ MessageType) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

func TestElectionSafetyOneVotePerTerm(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1, 2, 3}, nil)
	c.Step(Message{Type: MsgVote, From: 2, To: 1, Term: 5, LastLogIndex: 1, LastLogTerm: 1})
	c.Step(Message{Type: MsgVote, From: 3, To: 1, Term: 5, LastLogIndex: 1, LastLogTerm: 1})
	resps := only(persistAll(c, d), MsgVoteResp)
	if len(resps) != 2 || !resps[0].Granted || resps[1].Granted {
		t.Fatalf("want grant to 2 then reject 3, got %v", resps)
	}
	if hs, _, _ := d.InitialState(); hs.Vote != 2 || hs.Term != 5 {
		t.Fatalf("vote not persisted: %+v", hs)
	}
	// A retransmitted request from the same candidate is granted again.
	c.Step(Message{Type: MsgVote, From: 2, To: 1, Term: 5, LastLogIndex: 1, LastLogTerm: 1})
	if r := only(persistAll(c, d), MsgVoteResp); len(r) != 1 || !r[0].Granted {
		t.Fatalf("repeat vote: %v", r)
	}
}

func TestElectionRestrictionRejectsLessUpToDateLog(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1, 2, 3}, nil)
	// Give node 1 an entry of term 3 at index 2.
	c.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 3, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 3}}})
	persistAll(c, d)
	for _, tc := range []struct {
		idx, term uint64
		grant     bool
	}{{5, 2, false}, {1, 3, false}, {2, 3, true}, {1, 4, true}} {
		c2, d2 := newTestCore(t, 1, []uint64{1, 2, 3}, nil)
		c2.Step(Message{Type: MsgApp, From: 2, To: 1, Term: 3, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 3}}})
		persistAll(c2, d2)
		c2.Step(Message{Type: MsgVote, From: 3, To: 1, Term: 9, LastLogIndex: tc.idx, LastLogTerm: tc.term})
		r := only(persistAll(c2, d2), MsgVoteResp)
		if len(r) != 1 || r[0].Granted != tc.grant {
			t.Fatalf("candidate last=%d/%d: got %v want grant=%v", tc.idx, tc.term, r, tc.grant)
		}
	}
}

func TestPreVoteDoesNotChangeTerm(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1, 2, 3}, func(cfg *Config) { cfg.PreVote = true })
	for i := 0; i < 40 && c.state == StateFollower; i++ {
		c.Tick()
	}
	if c.state != StatePreCandidate {
		t.Fatalf("state %s", c.state)
	}
	msgs := persistAll(c, d)
	votes := only(msgs, MsgVote)
	if len(votes) != 2 || !votes[0].PreVote || votes[0].Term != c.term+1 {
		t.Fatalf("pre-vote requests: %v", votes)
	}
	if c.term != 1 {
		t.Fatalf("term moved to %d during pre-vote", c.term)
	}
	// A voter grants a pre-vote without changing its own term or vote.
	v, vd := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.PreVote = true })
	for i := 0; i < 10; i++ {
		v.Tick() // no leader heard from for an election timeout
	}
	v.Step(votes[0])
	r := only(persistAll(v, vd), MsgVoteResp)
	if len(r) != 1 || !r[0].Granted || v.term != 1 || v.vote != 0 {
		t.Fatalf("pre-vote answer %v term=%d vote=%d", r, v.term, v.vote)
	}
}

func TestPreVoteRejectedWhileLeaderIsHeard(t *testing.T) {
	v, vd := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.PreVote = true })
	v.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2})
	persistAll(v, vd)
	v.Step(Message{Type: MsgVote, From: 3, To: 2, Term: 3, PreVote: true, LastLogIndex: 9, LastLogTerm: 2})
	r := only(persistAll(v, vd), MsgVoteResp)
	if len(r) != 1 || r[0].Granted {
		t.Fatalf("pre-vote must be refused while a leader is heard: %v", r)
	}
}

func TestLeaderStickinessIgnoresVotesWithinElectionTimeout(t *testing.T) {
	v, vd := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.CheckQuorum = true })
	v.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2})
	persistAll(v, vd)
	v.Step(Message{Type: MsgVote, From: 3, To: 2, Term: 3, LastLogIndex: 9, LastLogTerm: 2})
	if v.term != 2 || len(only(persistAll(v, vd), MsgVoteResp)) != 0 {
		t.Fatalf("vote request not ignored: term=%d", v.term)
	}
	// A transfer-forced election bypasses stickiness.
	v.Step(Message{Type: MsgVote, From: 3, To: 2, Term: 3, LastLogIndex: 9, LastLogTerm: 2, Transfer: true})
	if r := only(persistAll(v, vd), MsgVoteResp); len(r) != 1 || !r[0].Granted {
		t.Fatalf("transfer vote: %v", r)
	}
}

// electLeader makes a 3-node leader out of core 1 by feeding it votes.
func electLeader(t *testing.T, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	c, d := newTestCore(t, 1, []uint64{1, 2, 3}, mutate)
	c.campaign(campaignElection)
	persistAll(c, d)
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c.term, Granted: true})
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	persistAll(c, d)
	return c, d
}

// ackAll has followers 2 and 3 acknowledge the leader's whole log.
func ackAll(c *Core, d *MemoryStorage) {
	for _, id := range []uint64{2, 3} {
		c.Step(Message{Type: MsgAppResp, From: id, To: 1, Term: c.term, Index: c.log.lastIndex()})
	}
	persistAll(c, d)
}

func TestCheckQuorumLeaderStepsDownWithoutQuorum(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.CheckQuorum = true })
	for i := 0; i < 2*c.cfg.ElectionTick; i++ {
		c.Tick()
		persistAll(c, d)
	}
	if c.state == StateLeader {
		t.Fatal("leader kept leading without hearing from a quorum")
	}
}

func TestLeaderAppendsNoOpOnElection(t *testing.T) {
	c, d := electLeader(t, nil)
	ents, _ := d.Entries(2, 3, 1<<20)
	if len(ents) != 1 || ents[0].Term != c.term || len(ents[0].Data) != 0 {
		t.Fatalf("no-op missing: %v", ents)
	}
}

// TestReadyLeaderSendsAppendsBeforePersisting: thesis §10.2.1; the leader's
// AppendEntries may go out with the write, but followers' acks and votes
// wait for persistence.
func TestReadyLeaderSendsAppendsBeforePersisting(t *testing.T) {
	c, d := electLeader(t, nil)
	ackAll(c, d)
	if err := c.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	rd := c.Ready()
	if len(rd.Entries) != 1 || len(only(rd.Messages, MsgApp)) != 2 || len(rd.MessagesAfterPersist) != 0 {
		t.Fatalf("leader ready: entries=%d early=%v late=%v", len(rd.Entries), rd.Messages, rd.MessagesAfterPersist)
	}
	c.Advance()

	f, _ := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2}}})
	rd = f.Ready()
	if len(rd.Messages) != 0 || len(only(rd.MessagesAfterPersist, MsgAppResp)) != 1 {
		t.Fatalf("follower ack must wait for persistence: %v / %v", rd.Messages, rd.MessagesAfterPersist)
	}
}

// TestLeaderCountsItselfOnlyAfterPersist: a single-node leader commits an
// entry only once Advance confirms it is on its own disk.
func TestLeaderCountsItselfOnlyAfterPersist(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1}, nil)
	c.campaign(campaignElection)
	persistAll(c, d)
	_ = c.Propose([]byte("x"))
	rd := c.Ready()
	if c.log.committed >= rd.Entries[len(rd.Entries)-1].Index {
		t.Fatal("committed before persisting")
	}
	_ = d.Append(rd.Entries)
	c.Advance()
	if c.log.committed != rd.Entries[len(rd.Entries)-1].Index {
		t.Fatalf("not committed after persisting: %d", c.log.committed)
	}
}

func TestReadyAdvanceMisuseIsAProgrammerError(t *testing.T) {
	c, _ := newTestCore(t, 1, []uint64{1}, nil)
	mustPanic(t, "Advance without Ready", c.Advance)
	c.campaign(campaignElection)
	c.Ready()
	mustPanic(t, "Ready twice", func() { c.Ready() })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	f()
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

func TestSnapshotSentInChunksWhenEntriesCompacted(t *testing.T) {
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxSnapshotChunk = 4 })
	ackAll(c, d)
	for i := 0; i < 5; i++ {
		_ = c.Propose([]byte("x"))
	}
	persistAll(c, d)
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	ci := c.log.committed
	if _, err := d.CreateSnapshot(ci, c.ConfState(), []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	_ = d.Compact(ci)
	// Follower 2 is empty: it rejects the probe, then needs the snapshot.
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Reject: true, Index: c.trk.Progress[2].Next - 1, ConflictIndex: 2, LastIndex: 1})
	out := persistAll(c, d)
	var chunks int
	for step := 0; step < 20; step++ {
		var next []Message
		for _, m := range out {
			if m.To == 2 {
				if m.Type == MsgSnap {
					chunks++
				}
				f.Step(m)
			}
		}
		for _, m := range persistAll(f, fd) {
			c.Step(m)
		}
		next = persistAll(c, d)
		out = next
		if f.log.committed >= ci {
			break
		}
	}
	if f.log.committed < ci || chunks < 3 {
		t.Fatalf("follower commit=%d want %d, chunks=%d", f.log.committed, ci, chunks)
	}
	snap, _ := fd.Snapshot()
	if string(snap.Data) != "0123456789" {
		t.Fatalf("reassembled snapshot %q", snap.Data)
	}
}

func TestLeadershipTransferPausesProposalsAndSendsTimeoutNow(t *testing.T) {
	c, d := electLeader(t, nil)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if err := c.TransferLeadership(2); err != nil {
		t.Fatal(err)
	}
	if err := c.Propose([]byte("x")); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("proposal during transfer: %v", err)
	}
	if tn := only(persistAll(c, d), MsgTimeoutNow); len(tn) != 1 || tn[0].To != 2 {
		t.Fatalf("TimeoutNow: %v", tn)
	}
	// The target campaigns at once, skipping pre-vote, with Transfer set.
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.PreVote = true })
	f.Step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: c.term})
	votes := only(persistAll(f, fd), MsgVote)
	if f.state != StateCandidate || len(votes) != 2 || votes[0].PreVote || !votes[0].Transfer {
		t.Fatalf("state %s votes %v", f.state, votes)
	}
}

func TestReadIndexWaitsForHeartbeatQuorum(t *testing.T) {
	c, d := electLeader(t, nil)
	// Commit the no-op first (§6.4 step 1).
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if err := c.ReadIndex([]byte("r1")); err != nil {
		t.Fatal(err)
	}
	var hb []Message
	for c.HasReady() {
		rd := c.Ready()
		if len(rd.ReadStates) > 0 {
			t.Fatal("read answered before the heartbeat round")
		}
		hb = append(hb, only(rd.Messages, MsgHeartbeat)...)
		_ = d.Append(rd.Entries)
		c.Advance()
	}
	if len(hb) == 0 {
		t.Fatal("no heartbeat round")
	}
	c.Step(Message{Type: MsgHeartbeatResp, From: hb[0].To, To: 1, Term: c.term, Seq: hb[0].Seq})
	rd := c.Ready()
	if len(rd.ReadStates) != 1 || string(rd.ReadStates[0].RequestCtx) != "r1" || rd.ReadStates[0].Index != c.log.committed {
		t.Fatalf("read states %v", rd.ReadStates)
	}
	c.Advance()
}

func TestFollowerReadIndexIsForwardedToLeader(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	if err := f.ReadIndex([]byte("x")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("no leader: %v", err)
	}
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2})
	persistAll(f, d)
	_ = f.ReadIndex([]byte("x"))
	if fw := only(persistAll(f, d), MsgReadIndex); len(fw) != 1 || fw[0].To != 1 {
		t.Fatalf("forward: %v", fw)
	}
	f.Step(Message{Type: MsgReadIndexResp, From: 1, To: 2, Term: 2, Index: 7, Context: []byte("x")})
	rd := f.Ready()
	if len(rd.ReadStates) != 1 || rd.ReadStates[0].Index != 7 {
		t.Fatalf("read states %v", rd.ReadStates)
	}
	f.Advance()
}

func TestMembershipOneChangeAtATime(t *testing.T) {
	c, d := electLeader(t, nil)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if err := c.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddLearner, NodeID: 4}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 5}}}); !errors.Is(err, ErrProposalDropped) {
		t.Fatalf("second pending change: %v", err)
	}
	// Commit and apply the first: the learner is tracked, not voting.
	for _, m := range only(persistAll(c, d), MsgApp) {
		if m.To == 2 && len(m.Entries) > 0 {
			c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: m.Entries[len(m.Entries)-1].Index})
		}
	}
	persistAll(c, d)
	cs := c.ConfState()
	if fmt.Sprint(cs.Learners) != "[4]" || fmt.Sprint(cs.Voters) != "[1 2 3]" {
		t.Fatalf("config %+v", cs)
	}
}

func TestJointConsensusNeedsBothMajorities(t *testing.T) {
	cur := configFromConfState(ConfState{Voters: []uint64{1, 2, 3}})
	n, err := nextConfig(cur, ConfChange{Changes: []ConfChangeSingle{
		{Type: ConfChangeAddVoter, NodeID: 4}, {Type: ConfChangeRemoveNode, NodeID: 1}}})
	if err != nil || !n.Joint() || !n.AutoLeave {
		t.Fatalf("auto transition with two voter changes must be joint: %+v %v", n, err)
	}
	if _, err := nextConfig(n, ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 5}}}); err == nil {
		t.Fatal("change while joint must be refused")
	}
	out, err := nextConfig(n, ConfChange{})
	if err != nil || out.Joint() || fmt.Sprint(out.VoterIDs()) != "[2 3 4]" {
		t.Fatalf("leave joint: %+v %v", out, err)
	}
	if _, err := nextConfig(cur, ConfChange{Transition: ConfChangeTransitionAuto, Changes: []ConfChangeSingle{
		{Type: ConfChangeRemoveNode, NodeID: 1}, {Type: ConfChangeRemoveNode, NodeID: 2}, {Type: ConfChangeRemoveNode, NodeID: 3}}}); err == nil {
		t.Fatal("removing every voter must be refused")
	}
}

func TestRemovedLeaderStepsDownAfterCommit(t *testing.T) {
	c, d := electLeader(t, nil)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if err := c.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeRemoveNode, NodeID: 1}}}); err != nil {
		t.Fatal(err)
	}
	for _, m := range only(persistAll(c, d), MsgApp) {
		if m.To == 2 && len(m.Entries) > 0 {
			if c.state != StateLeader {
				t.Fatal("stepped down before the change committed")
			}
			c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: m.Entries[len(m.Entries)-1].Index})
		}
	}
	persistAll(c, d)
	if c.state == StateLeader {
		t.Fatal("removed leader still leads")
	}
}

func TestConfChangeCodecRoundTripsAndRejectsGarbage(t *testing.T) {
	cc := ConfChange{Transition: ConfChangeTransitionJointExplicit, Changes: []ConfChangeSingle{{ConfChangeAddVoter, 7}, {ConfChangeRemoveNode, 300}}, Context: []byte("addr")}
	got, err := UnmarshalConfChange(cc.Marshal())
	if err != nil || fmt.Sprint(got) != fmt.Sprint(cc) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	b := cc.Marshal()
	for i := range b {
		_, _ = UnmarshalConfChange(b[:i]) // must not panic
	}
}

// TestDeterminism: the same seed gives the same run, message for message.
func TestDeterminism(t *testing.T) {
	a, b := newSimCluster(42, defaultSimOptions(5)), newSimCluster(42, defaultSimOptions(5))
	if ea, eb := a.run(), b.run(); fmt.Sprint(ea) != fmt.Sprint(eb) {
		t.Fatalf("%v vs %v", ea, eb)
	}
	if a.msgCount != b.msgCount || len(a.history) != len(b.history) || a.now != b.now {
		t.Fatalf("runs differ: msgs %d/%d ops %d/%d ticks %d/%d", a.msgCount, b.msgCount, len(a.history), len(b.history), a.now, b.now)
	}
}

// FuzzStep: nothing arriving from the network may panic the core.
func FuzzStep(f *testing.F) {
	f.Add(uint8(MsgApp), uint64(2), uint64(3), uint64(1), uint64(1), uint64(5), uint8(2), false, uint64(0))
	f.Add(uint8(MsgSnap), uint64(3), uint64(9), uint64(4), uint64(2), uint64(0), uint8(0), true, uint64(7))
	f.Fuzz(func(t *testing.T, typ uint8, from, term, index, logTerm, commit uint64, nents uint8, flag bool, extra uint64) {
		for _, st := range []StateType{StateFollower, StateLeader} {
			var c *Core
			var d *MemoryStorage
			if st == StateLeader {
				c, d = electLeader(t, nil)
			} else {
				c, d = newTestCore(t, 1, []uint64{1, 2, 3}, nil)
			}
			m := Message{Type: MessageType(typ), From: from % 5, To: 1, Term: term % 8, Index: index % 16, LogTerm: logTerm % 8,
				Commit: commit, Reject: flag, Granted: flag, PreVote: flag, ConflictIndex: extra % 20, ConflictTerm: extra % 7,
				LastLogIndex: extra, LastLogTerm: logTerm % 8, Seq: extra, Offset: extra % 64, Done: flag, Data: []byte("abc")}
			for i := 0; i < int(nents%6); i++ {
				m.Entries = append(m.Entries, Entry{Index: m.Index + 1 + uint64(i), Term: min(m.Term, m.LogTerm+uint64(i)), Data: []byte{byte(i)}})
			}
			if m.Type == MsgSnap || m.Type == MsgSnapResp {
				m.Snapshot = &SnapshotMeta{Index: index % 16, Term: logTerm % 8, ConfState: ConfState{Voters: []uint64{1, extra % 5}}}
			}
			_ = c.Step(m)
			persistAll(c, d)
			for i := 0; i < 25; i++ {
				c.Tick()
			}
			persistAll(c, d)
		}
	})
}

// TestStepBetweenReadyAndAdvance: entries handed out in a Ready may be
// replaced by a newer leader before Advance; Advance must not mark the
// replacements stable, and the next Ready must carry them.
func TestStepBetweenReadyAndAdvance(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2, Data: []byte("a")}, {Index: 3, Term: 2, Data: []byte("b")}}})
	rd := f.Ready()
	// A term-3 leader overwrites index 3 before the driver finishes.
	f.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 3, Index: 2, LogTerm: 2,
		Entries: []Entry{{Index: 3, Term: 3, Data: []byte("c")}}})
	_ = d.Append(rd.Entries)
	d.SetHardState(rd.HardState)
	f.Advance()
	persistAll(f, d)
	ents, err := d.Entries(2, 4, 1<<20)
	if err != nil || len(ents) != 2 || string(ents[1].Data) != "c" || ents[1].Term != 3 {
		t.Fatalf("storage after overwrite: %v %v", ents, err)
	}
	if f.log.stableIndex() != 3 {
		t.Fatalf("stable index %d", f.log.stableIndex())
	}
}

func TestLeaseReadRequiresCheckQuorumAndSkipsHeartbeatRound(t *testing.T) {
	if _, err := New(Config{ID: 1, Storage: NewMemoryStorage(), ElectionTick: 10, HeartbeatTick: 1, ReadOnlyOption: ReadOnlyLeaseBased}); err == nil {
		t.Fatal("lease reads without check-quorum must be refused")
	}
	c, d := electLeader(t, func(cfg *Config) { cfg.CheckQuorum = true; cfg.ReadOnlyOption = ReadOnlyLeaseBased })
	ackAll(c, d)
	_ = c.ReadIndex([]byte("r"))
	rd := c.Ready()
	if len(rd.ReadStates) != 1 || len(only(rd.Messages, MsgHeartbeat)) != 0 {
		t.Fatalf("lease read: states %v heartbeats %d", rd.ReadStates, len(only(rd.Messages, MsgHeartbeat)))
	}
	c.Advance()
}

func TestReadIndexWaitsForFirstCommitOfTerm(t *testing.T) {
	c, d := electLeader(t, nil)
	_ = c.ReadIndex([]byte("early"))
	if hb := only(persistAll(c, d), MsgHeartbeat); len(hb) != 0 {
		t.Fatal("read round started before the no-op committed")
	}
	ackAll(c, d) // commits the no-op; the read round starts now
	if len(c.reads.pending) != 1 {
		t.Fatalf("pending reads %d", len(c.reads.pending))
	}
}

// FuzzStepSequence: arbitrary sequences of small messages, ticks and
// proposals, against a leader and a follower, must never panic.
func FuzzStepSequence(f *testing.F) {
	f.Add([]byte{3, 2, 2, 1, 1, 4, 1, 9, 5, 0, 0, 0, 7, 3, 3, 2, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, leader := range []bool{false, true} {
			var c *Core
			var d *MemoryStorage
			if leader {
				c, d = electLeader(t, nil)
			} else {
				c, d = newTestCore(t, 1, []uint64{1, 2, 3}, nil)
			}
			for len(b) >= 6 {
				op := b[0] % 16
				switch {
				case op == 14:
					c.Tick()
				case op == 15:
					_ = c.Propose(b[1:3])
				default:
					m := Message{Type: MessageType(op), From: uint64(b[1] % 4), To: 1, Term: uint64(b[2] % 6),
						Index: uint64(b[3] % 12), LogTerm: uint64(b[4] % 6), Commit: uint64(b[5] % 12),
						Reject: b[5]&1 == 1, Granted: b[4]&1 == 1, PreVote: b[3]&1 == 1,
						ConflictIndex: uint64(b[1] % 9), ConflictTerm: uint64(b[2] % 5), Seq: uint64(b[3]),
						Offset: uint64(b[4] % 8), Done: b[5]&2 == 2, Data: b[:2], LastLogIndex: uint64(b[5] % 12), LastLogTerm: uint64(b[4] % 6)}
					for i := 0; i < int(b[5]%4); i++ {
						m.Entries = append(m.Entries, Entry{Index: m.Index + 1 + uint64(i), Term: m.LogTerm + uint64(i%2)})
					}
					if m.Type == MsgSnap || m.Type == MsgSnapResp {
						m.Snapshot = &SnapshotMeta{Index: uint64(b[3] % 12), Term: uint64(b[4] % 6), ConfState: ConfState{Voters: []uint64{1, uint64(b[1] % 5)}}}
					}
					_ = c.Step(m)
				}
				persistAll(c, d)
				b = b[6:]
			}
		}
	})
}
