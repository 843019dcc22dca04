package raft

import (
	"errors"
	"fmt"
	"testing"
)

// Membership changes: one at a time, joint consensus, learners, removal.

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
	cc := ConfChange{Transition: ConfChangeTransitionJointExplicit, Changes: []ConfChangeSingle{
		{Type: ConfChangeAddVoter, NodeID: 7, Incarnation: 0xfeedface},
		{Type: ConfChangeAddLearner, NodeID: 9, Incarnation: 1 << 63, AutoPromote: true},
		{Type: ConfChangeRemoveNode, NodeID: 300},
	}, Context: []byte("addr")}
	got, err := UnmarshalConfChange(cc.Marshal())
	if err != nil || fmt.Sprint(got) != fmt.Sprint(cc) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// Version 1 (before incarnations): type and node id per change.
	v1 := []byte{1, byte(ConfChangeTransitionAuto), 1, byte(ConfChangeAddVoter), 7, 4, 'a', 'd', 'd', 'r'}
	old, err := UnmarshalConfChange(v1)
	want := ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 7}}, Context: []byte("addr")}
	if err != nil || fmt.Sprint(old) != fmt.Sprint(want) {
		t.Fatalf("version 1: got %+v %v, want %+v", old, err, want)
	}
	b := cc.Marshal()
	for i := range b {
		_, _ = UnmarshalConfChange(b[:i]) // must not panic
	}
}

// TestLearnersNeverVoteOrCountTowardCommit: learners receive the log but
// are not part of any quorum and never campaign.
func TestLearnersNeverVoteOrCountTowardCommit(t *testing.T) {
	d := NewMemoryStorage()
	_ = d.ApplySnapshot(BootstrapSnapshot(ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}))
	l, err := New(Config{ID: 4, Storage: d, ElectionTick: 10, HeartbeatTick: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		l.Tick()
	}
	if l.state != StateFollower || len(persistAll(l, d)) != 0 {
		t.Fatalf("learner campaigned: %s", l.state)
	}
	c, cd := newTestCore(t, 1, []uint64{1, 2, 3}, nil)
	c.switchConfig(configFromConfState(ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}))
	c.campaign(campaignElection)
	persistAll(c, cd)
	c.Step(Message{Type: MsgVoteResp, From: 4, To: 1, Term: c.term, Granted: true})
	if c.state == StateLeader {
		t.Fatal("a learner's vote counted")
	}
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c.term, Granted: true})
	persistAll(c, cd)
	before := c.log.committed
	c.Step(Message{Type: MsgAppResp, From: 4, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, cd)
	if c.log.committed != before {
		t.Fatal("a learner's ack counted toward commit")
	}
}

func TestStatusReportsRoleTermCommitAndProgress(t *testing.T) {
	c, d := electLeader(t, nil)
	ackAll(c, d)
	s := c.Status()
	if s.ID != 1 || s.Role != StateLeader || s.Lead != 1 || s.Term != c.term || s.Commit != c.log.lastIndex() || s.Applied != s.Commit {
		t.Fatalf("status %+v", s)
	}
	if p := s.Progress[2]; p.Match != s.Commit || p.State != "replicate" {
		t.Fatalf("progress %+v", s.Progress)
	}
}
