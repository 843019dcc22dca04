package raft

import (
	"errors"
	"slices"
	"testing"
)

// Storage incarnations (Protocol-Aware Recovery, FAST'18, applied to
// Raft's membership): a voter is the pair (id, incarnation of its
// storage); a node that lost its storage is a new server until the
// configuration records it again.

// incCore makes node id of a 3-voter cluster whose configuration records
// incarnation 10*id for every voter (11, 22, 33); the node's own storage
// has incarnation inc.
func incCore(t *testing.T, id, inc uint64) (*Core, *MemoryStorage) {
	t.Helper()
	return newTestCoreConf(t, id, ConfState{Voters: []uint64{1, 2, 3}, Incarnations: []MemberIncarnation{{1, 11}, {2, 22}, {3, 33}}},
		func(c *Config) { c.Incarnation = inc })
}

// incLeader elects node 1 (incarnation 11) with node 2's vote.
func incLeader(t *testing.T) (*Core, *MemoryStorage) {
	t.Helper()
	c, d := incCore(t, 1, 11)
	c.campaign(campaignElection)
	persistAll(c, d)
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c.term, Granted: true, Incarnation: 22})
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	persistAll(c, d)
	return c, d
}

func TestVoteFromAnotherIncarnationIsNotCounted(t *testing.T) {
	c, d := incCore(t, 1, 11)
	c.campaign(campaignElection)
	persistAll(c, d)
	// Node 2 lost its disk: its grant comes from incarnation 99.
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c.term, Granted: true, Incarnation: 99})
	if c.state == StateLeader {
		t.Fatal("won with the vote of a voter that forgot its vote and log")
	}
	if st := c.Status(); st.UncountedVoters[2] != 99 {
		t.Fatalf("Status().UncountedVoters = %v, want 2 -> 99", st.UncountedVoters)
	}
	// Node 3, with the storage the configuration counts, decides it.
	c.Step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: c.term, Granted: true, Incarnation: 33})
	if c.state != StateLeader {
		t.Fatalf("a recorded voter's grant must count: %s", c.state)
	}
}

func TestNodeWhoseStorageIsNotCountedDoesNotCampaign(t *testing.T) {
	c, d := incCore(t, 2, 99) // the configuration counts 22
	for range 100 {
		c.Tick()
	}
	if c.state != StateFollower || len(only(persistAll(c, d), MsgVote)) != 0 {
		t.Fatalf("a node that lost its storage campaigned: %s", c.state)
	}
}

func TestAcknowledgementsCountOnlyFromTheRecordedIncarnation(t *testing.T) {
	c, d := incLeader(t)
	last := c.log.lastIndex()
	// Node 2's new incarnation holds the entry, but it is not the
	// storage the configuration counts: no commit with it.
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: last, Incarnation: 99})
	persistAll(c, d)
	if c.log.committed >= last {
		t.Fatalf("committed %d counting an acknowledgement of another incarnation", c.log.committed)
	}
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: last, Incarnation: 33})
	persistAll(c, d)
	if c.log.committed < last {
		t.Fatalf("committed %d, want %d with a counted voter", c.log.committed, last)
	}
}

func TestNewIncarnationResetsProgressSoOldAcksAreForgotten(t *testing.T) {
	c, d := incLeader(t)
	last := c.log.lastIndex()
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: last, Incarnation: 22})
	persistAll(c, d)
	if c.trk.Progress[2].Match != last {
		t.Fatalf("match %d", c.trk.Progress[2].Match)
	}
	// Wiped: it answers a heartbeat from empty storage.
	c.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: c.term, Incarnation: 99})
	pr := c.trk.Progress[2]
	if pr.Match != 0 || pr.Incarnation != 99 || pr.State.String() != "probe" {
		t.Fatalf("progress after a new incarnation: %v inc %d", pr, pr.Incarnation)
	}
	// A rejection from the empty log is news, not a stale answer.
	msgs := persistAll(c, d)
	apps := only(msgs, MsgApp)
	if len(apps) == 0 {
		t.Fatal("no append to the wiped node")
	}
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: apps[0].Index, Reject: true, ConflictIndex: 1, Incarnation: 99})
	if next := c.trk.Progress[2].Next; next != 1 {
		t.Fatalf("next %d after the empty log's rejection, want 1", next)
	}
}

// TestLeaderDemotesThenRestoresAVoterThatLostItsStorage: the leader
// demotes the voter to a learner marked AutoPromote with one single-step
// change, and once it has caught up promotes it with its new incarnation.
func TestLeaderDemotesThenRestoresAVoterThatLostItsStorage(t *testing.T) {
	c, d := incLeader(t)
	ack := func(id, inc uint64) {
		c.Step(Message{Type: MsgAppResp, From: id, To: 1, Term: c.term, Index: c.log.lastIndex(), Incarnation: inc})
		persistAll(c, d)
	}
	ack(2, 22)
	ack(3, 33)
	c.Step(Message{Type: MsgHeartbeatResp, From: 2, To: 1, Term: c.term, Incarnation: 99})
	persistAll(c, d)
	c.Tick() // the leader looks at its voters every heartbeat
	persistAll(c, d)
	ack(3, 33) // commits and applies the demotion
	cs := c.ConfState()
	if slices.Contains(cs.Voters, 2) || !slices.Contains(cs.Learners, 2) || !slices.Contains(cs.AutoPromote, 2) {
		t.Fatalf("after the new incarnation: %+v", cs)
	}
	// Caught up from its new storage: restored, with that incarnation.
	ack(2, 99)
	ack(3, 33)
	ack(2, 99)
	cs = c.ConfState()
	if inc, ok := cs.IncarnationOf(2); !slices.Contains(cs.Voters, 2) || len(cs.AutoPromote) != 0 || !ok || inc != 99 {
		t.Fatalf("after catching up: %+v", cs)
	}
}

func TestRecordedIncarnationOfAVoterCannotBeReplacedInPlace(t *testing.T) {
	c, _ := incLeader(t)
	err := c.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: 2, Incarnation: 99}}})
	if err == nil {
		t.Fatal("swapping a voter's incarnation in place must be refused (demote it first)")
	}
}

func TestBootstrapAfterStartAndOnlyOnce(t *testing.T) {
	d := NewMemoryStorage()
	c, err := New(Config{ID: 1, Storage: d, ElectionTick: 10, HeartbeatTick: 1, Incarnation: 11})
	if err != nil {
		t.Fatal(err)
	}
	cs := ConfState{Voters: []uint64{1, 2, 3}, Incarnations: []MemberIncarnation{{1, 11}, {2, 22}, {3, 33}}}
	if err := c.Bootstrap(BootstrapSnapshot(cs)); err != nil {
		t.Fatal(err)
	}
	rd := c.Ready()
	if rd.Snapshot.Meta.Index != 1 || len(rd.Snapshot.Meta.ConfState.Incarnations) != 3 {
		t.Fatalf("the bootstrap snapshot must come out in the Ready: %+v", rd.Snapshot.Meta)
	}
	_ = d.ApplySnapshot(rd.Snapshot)
	c.Advance()
	if err := c.Bootstrap(BootstrapSnapshot(cs)); !errors.Is(err, ErrBootstrapped) {
		t.Fatalf("second bootstrap: %v, want ErrBootstrapped", err)
	}
	if !c.promotable() {
		t.Fatal("a bootstrapped voter counted with its incarnation must be able to campaign")
	}
}

// TestNewLeaderDemotesOnlyOnEvidence: a leader demotes a voter only on an
// answer from storage other than the recorded one. A node that learned of
// a voter's new incarnation from the log (another leader restored it) and
// then leads must not demote it because of what it knew before.
func TestNewLeaderDemotesOnlyOnEvidence(t *testing.T) {
	c, d := incCore(t, 1, 11)
	cc := func(ch ConfChangeSingle) []byte { return ConfChange{Changes: []ConfChangeSingle{ch}}.Marshal() }
	// Leader 3 (term 2) demotes node 2, which lost its storage, and
	// restores it with incarnation 99; node 1 gets and applies both.
	c.Step(Message{Type: MsgApp, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 3, Incarnation: 33, Entries: []Entry{
		{Index: 2, Term: 2, Type: EntryConfChange, Data: cc(ConfChangeSingle{Type: ConfChangeAddLearner, NodeID: 2, Incarnation: 99, AutoPromote: true})},
		{Index: 3, Term: 2, Type: EntryConfChange, Data: cc(ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: 2, Incarnation: 99})},
	}})
	persistAll(c, d)
	if inc, _ := c.ConfState().IncarnationOf(2); inc != 99 || !slices.Contains(c.ConfState().Voters, 2) {
		t.Fatalf("config after applying the restoration: %+v", c.ConfState())
	}
	c.campaign(campaignElection)
	persistAll(c, d)
	c.Step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: c.term, Granted: true, Incarnation: 33})
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	for range 5 {
		c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex(), Incarnation: 33})
		c.Tick()
		persistAll(c, d)
	}
	if c.log.committed < 4 {
		t.Fatalf("the leader's no-op is not committed (%d): the test checks nothing", c.log.committed)
	}
	ents, _ := c.log.entries(4, c.log.lastIndex()+1, 1<<20)
	for _, e := range ents {
		if e.Type == EntryConfChange {
			cc, _ := UnmarshalConfChange(e.Data)
			t.Fatalf("the new leader proposed %+v without hearing from node 2", cc)
		}
	}
}

// TestLeaderDoesNotDemoteAVoterItNeverHeardFrom: a node that tracked a
// learner before anything recorded its storage, and became leader before
// applying the change that made it a voter with its incarnation, knows no
// answer from that voter: it must not take "no incarnation heard" for
// "another incarnation" and demote it (found by the whole-node simulation,
// n=5,membership seed 84).
func TestLeaderDoesNotDemoteAVoterItNeverHeardFrom(t *testing.T) {
	c, d := incCore(t, 1, 11)
	cc := func(ch ConfChangeSingle) []byte { return ConfChange{Changes: []ConfChangeSingle{ch}}.Marshal() }
	// Leader 3 (term 2) adds node 4 as a learner, its storage not yet
	// recorded (committed), then promotes it with incarnation 44 (not
	// yet committed when node 1 takes over).
	c.Step(Message{Type: MsgApp, From: 3, To: 1, Term: 2, Index: 1, LogTerm: 1, Commit: 2, Incarnation: 33, Entries: []Entry{
		{Index: 2, Term: 2, Type: EntryConfChange, Data: cc(ConfChangeSingle{Type: ConfChangeAddLearner, NodeID: 4, AutoPromote: true})},
		{Index: 3, Term: 2, Type: EntryConfChange, Data: cc(ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: 4, Incarnation: 44})},
	}})
	persistAll(c, d)
	if cs := c.ConfState(); !slices.Contains(cs.Learners, 4) {
		t.Fatalf("config after applying the learner's addition: %+v", cs)
	}
	c.campaign(campaignElection)
	persistAll(c, d)
	c.Step(Message{Type: MsgVoteResp, From: 3, To: 1, Term: c.term, Granted: true, Incarnation: 33})
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	for range 5 {
		c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex(), Incarnation: 33})
		c.Tick()
		persistAll(c, d)
	}
	if inc, _ := c.ConfState().IncarnationOf(4); inc != 44 || !slices.Contains(c.ConfState().Voters, 4) {
		t.Fatalf("the promotion is not applied (%+v): the test checks nothing", c.ConfState())
	}
	ents, _ := c.log.entries(4, c.log.lastIndex()+1, 1<<20)
	for _, e := range ents {
		if e.Type == EntryConfChange {
			cc, _ := UnmarshalConfChange(e.Data)
			t.Fatalf("the new leader proposed %+v without hearing from node 4", cc)
		}
	}
	// Node 4 answers from the recorded storage: it is caught up from
	// where it is, not probed from scratch as a new incarnation.
	c.Step(Message{Type: MsgAppResp, From: 4, To: 1, Term: c.term, Index: c.log.lastIndex(), Incarnation: 44})
	if m := c.trk.Progress[4].Match; m != c.log.lastIndex() {
		t.Fatalf("node 4's match %d after acknowledging %d from its recorded storage", m, c.log.lastIndex())
	}
}

// TestHeartbeatCommitIsForTheStorageItWasMeantFor: a heartbeat carries the
// leader's commit index capped at what the follower acknowledged, which
// says nothing about a follower whose storage was replaced since: its
// log may hold a stale leader's entries at those indexes. It commits only
// a heartbeat meant for its own incarnation.
func TestHeartbeatCommitIsForTheStorageItWasMeantFor(t *testing.T) {
	c, d := incCore(t, 2, 99) // node 2 after a wipe; the configuration counts 22
	// A stale leader of term 2 appends entries nobody committed.
	c.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 2, Index: 1, LogTerm: 1, Incarnation: 33,
		Entries: []Entry{{Index: 2, Term: 2}, {Index: 3, Term: 2}}})
	persistAll(c, d)
	// The real leader of term 3 heard node 2's old storage acknowledge 3.
	c.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 3, ToIncarnation: 22, Incarnation: 11})
	persistAll(c, d)
	if c.log.committed > 1 {
		t.Fatalf("committed %d on a heartbeat meant for other storage", c.log.committed)
	}
	c.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 3, Commit: 3, ToIncarnation: 99, Incarnation: 11})
	persistAll(c, d)
	if c.log.committed != 3 {
		t.Fatalf("committed %d, want 3 from a heartbeat meant for this storage", c.log.committed)
	}
}

// TestRemovalNamesTheStorageRemoved: a leader's proposed removal carries
// the incarnation it last heard from the member, so that another storage
// of the same id, added back later and replaying the log, can tell the
// removal was not of it.
func TestRemovalNamesTheStorageRemoved(t *testing.T) {
	c, d := incLeader(t)
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex(), Incarnation: 22})
	persistAll(c, d)
	if err := c.ProposeConfChange(ConfChange{Changes: []ConfChangeSingle{{Type: ConfChangeRemoveNode, NodeID: 2}}}); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, m := range only(persistAll(c, d), MsgApp) {
		for _, e := range m.Entries {
			if e.Type != EntryConfChange {
				continue
			}
			cc, err := UnmarshalConfChange(e.Data)
			if err != nil {
				t.Fatal(err)
			}
			if len(cc.Changes) != 1 || cc.Changes[0].Incarnation != 22 {
				t.Fatalf("removal proposed as %+v, want it to name incarnation 22", cc.Changes)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("no removal entry sent")
	}
}
