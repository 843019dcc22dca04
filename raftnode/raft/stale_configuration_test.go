package raft

import (
	"slices"
	"testing"
)

// A node whose log holds membership changes it has not applied yet (it
// does not know they are committed) must not count votes or commits with
// its older configuration alone once it is two changes behind: a majority
// of {1,2,3,5,6} and one of {1,2,5,6,7} need not intersect. The seeded
// simulation found this with a removed node that ran on and voted
// (n=5,stale-peers,disk-loss, seed 7 before the fix): see logconf.go.

// behindByAReplacement returns node 5 of {1,2,3,5,6} holding, unapplied,
// the joint change that replaces 3 by 7 (index 2) and the change that
// leaves it (index 3), from leader 1 in term 2.
func behindByAReplacement(t *testing.T) (*Core, *MemoryStorage) {
	t.Helper()
	c, d := newTestCore(t, 5, []uint64{1, 2, 3, 5, 6}, nil)
	enter := ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 7}, {Type: ConfChangeRemoveNode, NodeID: 3}}}
	c.Step(Message{Type: MsgApp, From: 1, To: 5, Term: 2, Index: 1, LogTerm: 1, Commit: 1, Entries: []Entry{
		{Index: 2, Term: 2, Type: EntryConfChange, Data: enter.Marshal()},
		{Index: 3, Term: 2, Type: EntryConfChange, Data: ConfChange{}.Marshal()},
	}})
	persistAll(c, d)
	if c.log.lastIndex() != 3 || c.log.committed != 1 {
		t.Fatalf("setup: last %d commit %d", c.log.lastIndex(), c.log.committed)
	}
	return c, d
}

func TestCandidateBehindByTwoChangesNeedsAMajorityOfTheLatestToo(t *testing.T) {
	c, d := behindByAReplacement(t)
	c.campaign(campaignElection)
	var asked []uint64
	for _, m := range only(persistAll(c, d), MsgVote) {
		asked = append(asked, m.To)
	}
	slices.Sort(asked)
	if !slices.Equal(asked, []uint64{1, 2, 3, 6, 7}) {
		t.Errorf("asked %v for votes, want the voters of both configurations [1 2 3 6 7]", asked)
	}
	// 5, 1 and 3 are a majority of {1,2,3,5,6} but not of {1,2,5,6,7}.
	for _, from := range []uint64{1, 3} {
		c.Step(Message{Type: MsgVoteResp, From: from, To: 5, Term: c.term, Granted: true})
	}
	if c.state != StateCandidate {
		t.Fatalf("won with a majority of the configuration in effect only: %s", c.state)
	}
	// 7 votes in the latest configuration only.
	if err := c.Step(Message{Type: MsgVoteResp, From: 7, To: 5, Term: c.term, Granted: true}); err != nil {
		t.Fatalf("vote from a voter of the latest configuration: %v", err)
	}
	if c.state != StateLeader {
		t.Fatalf("a majority of both configurations did not elect: %s", c.state)
	}
}

func TestLeaderBehindByTwoChangesCommitsWithAMajorityOfBoth(t *testing.T) {
	c, d := behindByAReplacement(t)
	c.campaign(campaignElection)
	persistAll(c, d)
	for _, from := range []uint64{1, 2, 3} {
		c.Step(Message{Type: MsgVoteResp, From: from, To: 5, Term: c.term, Granted: true})
	}
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	persistAll(c, d)
	noop := c.log.lastIndex()
	// 5, 1 and 3 hold the no-op: a majority of {1,2,3,5,6} only.
	for _, from := range []uint64{1, 3} {
		c.Step(Message{Type: MsgAppResp, From: from, To: 5, Term: c.term, Index: noop})
	}
	persistAll(c, d)
	if c.log.committed >= noop {
		t.Fatalf("committed %d with a majority of the configuration in effect only", c.log.committed)
	}
	c.Step(Message{Type: MsgAppResp, From: 2, To: 5, Term: c.term, Index: noop})
	persistAll(c, d)
	if c.log.committed < noop {
		t.Fatalf("commit %d: a majority of both configurations holds %d", c.log.committed, noop)
	}
	// Applying the changes puts the latest configuration in effect.
	if cs := c.ConfState(); !slices.Equal(cs.Voters, []uint64{1, 2, 5, 6, 7}) || c.logConf != nil {
		t.Errorf("after applying the changes: %+v (logConf %v)", cs, c.logConf)
	}
}

// One change behind, the majorities intersect: the configuration in
// effect is counted alone, as a leader does while its own change is
// pending.
func TestOneChangeBehindCountsWithTheConfigurationInEffect(t *testing.T) {
	c, d := newTestCore(t, 5, []uint64{1, 2, 3, 5, 6}, nil)
	add := ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 7}}}
	c.Step(Message{Type: MsgApp, From: 1, To: 5, Term: 2, Index: 1, LogTerm: 1, Commit: 1,
		Entries: []Entry{{Index: 2, Term: 2, Type: EntryConfChange, Data: add.Marshal()}}})
	persistAll(c, d)
	c.campaign(campaignElection)
	persistAll(c, d)
	for _, from := range []uint64{1, 3} {
		c.Step(Message{Type: MsgVoteResp, From: from, To: 5, Term: c.term, Granted: true})
	}
	if c.state != StateLeader {
		t.Fatalf("a majority of the configuration in effect, one change behind the log, did not elect: %s", c.state)
	}
}
