package raft

import (
	"errors"
	"testing"
)

// Who is heard (admit, "Who is heard" in doc.go): messages from nodes
// outside the configuration are dropped and counted, except the leader
// traffic and the vote requests Raft needs for progress; TimeoutNow and
// ReadIndex answers count only from the leader followed, in its term.

// followerOf returns core id of {1, 2, 3} following leader 1 in term 2,
// with entries 2..3 of term 2 after the bootstrap snapshot.
func followerOf(t *testing.T, id uint64, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	f, d := newTestCore(t, id, []uint64{1, 2, 3}, mutate)
	if err := f.Step(Message{Type: MsgApp, From: 1, To: id, Term: 2, Index: 1, LogTerm: 1, Commit: 3,
		Entries: []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}}}); err != nil {
		t.Fatal(err)
	}
	persistAll(f, d)
	if f.lead != 1 || f.term != 2 || f.log.committed != 3 {
		t.Fatalf("setup: lead %d term %d commit %d", f.lead, f.term, f.log.committed)
	}
	return f, d
}

func TestMessagesFromNonMembersAreDroppedAndCounted(t *testing.T) {
	f, fd := followerOf(t, 2, nil)
	// A removed server with a stale log campaigning in a later term, and
	// a pre-vote from it: neither raises our term nor gets an answer.
	for _, m := range []Message{
		{Type: MsgVote, From: 9, To: 2, Term: 7, LastLogIndex: 1, LastLogTerm: 1},
		{Type: MsgVote, From: 9, To: 2, Term: 7, LastLogIndex: 2, LastLogTerm: 2, PreVote: true},
		{Type: MsgVote, From: 9, To: 2, Term: 7, LastLogIndex: 2, LastLogTerm: 2, Transfer: true},
		{Type: MsgReadIndex, From: 9, To: 2, Term: 2, Context: []byte("r")},
		{Type: MsgHeartbeatResp, From: 9, To: 2, Term: 8},
	} {
		if err := f.Step(m); !errors.Is(err, ErrNotMember) {
			t.Errorf("%v: Step returned %v, want ErrNotMember", m, err)
		}
	}
	if out := persistAll(f, fd); len(out) != 0 || f.term != 2 || f.lead != 1 {
		t.Errorf("after non-member messages: sent %v, term %d, lead %d", out, f.term, f.lead)
	}
	if got := f.Status().DroppedNonMember; got != 5 {
		t.Errorf("Status.DroppedNonMember = %d, want 5", got)
	}

	// A leader: responses and read requests from a non-member, even at a
	// higher term, neither depose it nor count.
	c, d := electLeader(t, nil)
	term := c.term
	for _, m := range []Message{
		{Type: MsgAppResp, From: 9, To: 1, Term: term + 3, Index: 1},
		{Type: MsgHeartbeatResp, From: 9, To: 1, Term: term},
		{Type: MsgReadIndex, From: 9, To: 1, Term: term, Context: []byte("r")},
		{Type: MsgVoteResp, From: 9, To: 1, Term: term + 1},
	} {
		if err := c.Step(m); !errors.Is(err, ErrNotMember) {
			t.Errorf("leader, %v: Step returned %v, want ErrNotMember", m, err)
		}
	}
	if c.state != StateLeader || c.term != term {
		t.Errorf("leader deposed by a non-member: %s in term %d (was leader in %d)", c.state, c.term, term)
	}
	if out := persistAll(c, d); len(only(out, MsgReadIndexResp)) != 0 {
		t.Errorf("leader answered a non-member's read: %v", out)
	}

	// A candidate does not count a non-member's vote, nor adopt its term.
	cand, cd := newTestCore(t, 1, []uint64{1, 2, 3}, nil)
	cand.campaign(campaignElection)
	persistAll(cand, cd)
	if err := cand.Step(Message{Type: MsgVoteResp, From: 9, To: 1, Term: cand.term, Granted: true}); !errors.Is(err, ErrNotMember) {
		t.Errorf("vote from a non-member: Step returned %v", err)
	}
	if cand.state != StateCandidate {
		t.Errorf("a non-member's vote elected the candidate: %s", cand.state)
	}
}

// Thesis §4.1: a server accepts AppendEntries from a leader that is not
// in its latest configuration, or a new server could never catch up.
func TestLeaderUnknownToTheConfigurationIsFollowed(t *testing.T) {
	f, fd := followerOf(t, 2, nil)
	// Leader 4 was added by an entry this node has not applied yet.
	if err := f.Step(Message{Type: MsgApp, From: 4, To: 2, Term: 3, Index: 3, LogTerm: 2, Commit: 4,
		Entries: []Entry{{Index: 4, Term: 3}}}); err != nil {
		t.Fatalf("append from an unknown leader: %v", err)
	}
	out := persistAll(f, fd)
	if f.lead != 4 || f.term != 3 || f.log.lastIndex() != 4 {
		t.Errorf("did not follow the unknown leader: lead %d term %d last %d", f.lead, f.term, f.log.lastIndex())
	}
	if acks := only(out, MsgAppResp); len(acks) != 1 || acks[0].To != 4 || acks[0].Reject || acks[0].Index != 4 {
		t.Errorf("acknowledgements %v", acks)
	}
	if err := f.Step(Message{Type: MsgHeartbeat, From: 4, To: 2, Term: 3, Commit: 4, ToIncarnation: f.cfg.Incarnation}); err != nil {
		t.Errorf("heartbeat from the unknown leader: %v", err)
	}

	// A joining node has no configuration at all: it follows whoever
	// leads, and takes its snapshot.
	j, err := New(Config{ID: 5, Storage: NewMemoryStorage(), ElectionTick: 10, HeartbeatTick: 1})
	if err != nil {
		t.Fatal(err)
	}
	snap := &SnapshotMeta{Index: 10, Term: 3, ConfState: ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{5}}}
	if err := j.Step(Message{Type: MsgSnap, From: 1, To: 5, Term: 3, Snapshot: snap}); err != nil {
		t.Fatalf("snapshot to a joining node: %v", err)
	}
	if rd := j.Ready(); rd.Snapshot.Meta.Index != 10 || j.lead != 1 {
		t.Errorf("joining node: snapshot %d, lead %d", rd.Snapshot.Meta.Index, j.lead)
	}
}

// A stale leader outside our configuration (say, removed while cut off)
// still learns our term from its rejected append, and steps down.
func TestStaleLeaderOutsideTheConfigurationLearnsOurTerm(t *testing.T) {
	f, fd := followerOf(t, 2, nil)
	f.Step(Message{Type: MsgHeartbeat, From: 9, To: 2, Term: 1})
	rej := only(persistAll(f, fd), MsgAppResp)
	if len(rej) != 1 || rej[0].To != 9 || !rej[0].Reject || rej[0].Term != 2 {
		t.Fatalf("answer to a stale leader's heartbeat: %v", rej)
	}
	if f.lead != 1 || f.term != 2 {
		t.Errorf("a stale leader changed our state: lead %d term %d", f.lead, f.term)
	}
}

// Thesis §4.1: a server grants its vote to a candidate missing from its
// configuration if the candidate's log is up to date: its configuration
// may be newer than ours and need our vote for a majority. It can only
// be if the candidate's log reaches beyond the entry our configuration
// comes from (here the bootstrap snapshot at index 1).
func TestUnknownCandidateWithAnUpToDateLogGetsAVote(t *testing.T) {
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	// A removed server whose log ends where our configuration begins:
	// up to date, but it cannot know a newer configuration.
	if err := f.Step(Message{Type: MsgVote, From: 9, To: 2, Term: 5, LastLogIndex: 1, LastLogTerm: 1}); !errors.Is(err, ErrNotMember) {
		t.Fatalf("vote request from a candidate that cannot be in a newer configuration: %v", err)
	}
	// Candidate 4 holds entry 2, which added it.
	if err := f.Step(Message{Type: MsgVote, From: 4, To: 2, Term: 5, LastLogIndex: 2, LastLogTerm: 2}); err != nil {
		t.Fatalf("vote request from an up-to-date unknown candidate: %v", err)
	}
	votes := only(persistAll(f, fd), MsgVoteResp)
	if len(votes) != 1 || !votes[0].Granted || votes[0].To != 4 || f.vote != 4 {
		t.Errorf("votes %v (vote %d)", votes, f.vote)
	}

	// A joining node (empty log and configuration) votes for any
	// candidate, as the thesis's example of adding a fourth server to
	// three, one of which fails, needs.
	j, err := New(Config{ID: 4, Storage: NewMemoryStorage(), ElectionTick: 10, HeartbeatTick: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Step(Message{Type: MsgVote, From: 1, To: 4, Term: 3, LastLogIndex: 7, LastLogTerm: 2}); err != nil {
		t.Fatalf("vote request to a joining node: %v", err)
	}
	persistAll(j, NewMemoryStorage())
	if j.vote != 1 {
		t.Errorf("joining node did not vote: vote %d", j.vote)
	}
}

// Issue 13: a TimeoutNow from any id deposed the leader. It is honoured
// only from the leader followed, in its own term.
func TestTimeoutNowOnlyFromTheLeaderOfTheSameTerm(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Message
	}{
		{"from another member", Message{From: 3, Term: 2}},
		{"from a non-member", Message{From: 9, Term: 2}},
		{"from the leader at a later term", Message{From: 1, Term: 3}},
		{"from the leader at an earlier term", Message{From: 1, Term: 1}},
	} {
		f, fd := followerOf(t, 2, nil)
		m := tc.m
		m.Type, m.To = MsgTimeoutNow, 2
		if err := f.Step(m); !errors.Is(err, ErrNotFromLeader) {
			t.Errorf("%s: Step returned %v, want ErrNotFromLeader", tc.name, err)
		}
		if out := persistAll(f, fd); f.state != StateFollower || f.term != 2 || len(only(out, MsgVote)) != 0 {
			t.Errorf("%s: started an election: %s in term %d, sent %v", tc.name, f.state, f.term, out)
		}
		if got := f.Status().DroppedNotFromLeader; got != 1 {
			t.Errorf("%s: Status.DroppedNotFromLeader = %d", tc.name, got)
		}
	}
	// Nor without a leader (just restarted, say), even from a member.
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	if err := f.Step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: 1}); !errors.Is(err, ErrNotFromLeader) || f.state != StateFollower {
		t.Errorf("without a leader: Step returned %v, state %s", err, f.state)
	}
	persistAll(f, fd)
	// From the leader, in its term, it starts the transfer election.
	f, fd = followerOf(t, 2, nil)
	if err := f.Step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: 2}); err != nil {
		t.Fatal(err)
	}
	if votes := only(persistAll(f, fd), MsgVote); f.state != StateCandidate || len(votes) != 2 || !votes[0].Transfer {
		t.Errorf("the leader's TimeoutNow: %s, votes %v", f.state, votes)
	}
}

// A read index answer from anyone but the leader asked could carry a
// stale index and make a linearizable read stale.
func TestReadIndexAnswerOnlyFromTheLeaderAsked(t *testing.T) {
	f, fd := followerOf(t, 2, nil)
	if err := f.ReadIndex([]byte("r")); err != nil {
		t.Fatal(err)
	}
	persistAll(f, fd)
	for _, m := range []Message{
		{From: 3, Term: 2, Index: 1},
		{From: 1, Term: 3, Index: 1},
	} {
		m.Type, m.To, m.Context = MsgReadIndexResp, 2, []byte("r")
		if err := f.Step(m); !errors.Is(err, ErrNotFromLeader) {
			t.Errorf("%v: Step returned %v", m, err)
		}
	}
	if f.HasReady() {
		if rd := f.Ready(); len(rd.ReadStates) != 0 {
			t.Fatalf("a read index from another node was accepted: %v", rd.ReadStates)
		}
		f.Advance()
	}
	f.Step(Message{Type: MsgReadIndexResp, From: 1, To: 2, Term: 2, Index: 3, Context: []byte("r")})
	if rd := f.Ready(); len(rd.ReadStates) != 1 || rd.ReadStates[0].Index != 3 {
		t.Fatalf("the leader's answer: %v", rd.ReadStates)
	}
	f.Advance()
}
