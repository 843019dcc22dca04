package raft

import (
	"errors"
	"testing"
)

// Leader election: votes, the election restriction, pre-vote, stickiness,
// check-quorum, leadership transfer.

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
	// The target, which follows the leader, campaigns at once, skipping
	// pre-vote, with Transfer set.
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, func(cfg *Config) { cfg.PreVote = true })
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: c.term})
	persistAll(f, fd)
	f.Step(Message{Type: MsgTimeoutNow, From: 1, To: 2, Term: c.term})
	votes := only(persistAll(f, fd), MsgVote)
	if f.state != StateCandidate || len(votes) != 2 || votes[0].PreVote || !votes[0].Transfer {
		t.Fatalf("state %s votes %v", f.state, votes)
	}
}
