package driver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
)

// A membership change waits for the entry at the index it was appended
// at. If a new leader overwrote that index, the entry applied there is not
// this change: the waiter must hear that its change was not applied (a
// different change at that index must not be reported as success, and a
// normal entry must not leave the waiter to time out).
func TestOverwrittenConfChangeIsNotReportedApplied(t *testing.T) {
	n := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddLearner, NodeID: 9}}}
	for _, tc := range []struct {
		name  string
		entry func(index uint64) raft.Entry
	}{
		{"another change", func(i uint64) raft.Entry {
			return raft.Entry{Index: i, Term: 99, Type: raft.EntryConfChange, Data: other.Marshal()}
		}},
		{"a normal entry", func(i uint64) raft.Entry { return raft.Entry{Index: i, Term: 99, Type: raft.EntryNormal} }},
	} {
		ch := make(chan error, 1)
		// Simulate on the loop: a waiter for index i (as changeMembership
		// registers one), then a new leader's entry applied at i.
		if _, err := onLoop(ctx, n.Driver, func() struct{} {
			i := n.sm.Applied() + 1000
			n.loop.confWaiters[i] = ch
			n.applyAll([]raft.Entry{tc.entry(i)})
			return struct{}{}
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("%s applied at the index of a pending membership change: reported as applied", tc.name)
			}
		case <-time.After(time.Second):
			t.Errorf("%s applied at the index of a pending membership change: its waiter is never answered", tc.name)
		}
	}
}

// A peer's send call returns once the core has stepped its messages, not
// once the core answers them: a MsgReadIndex that reaches a node that
// does not lead (the sender's view of the leader is stale), which the
// core ignores, must not hold its call until this node sees a leader
// change, which may never come.
func TestPeerSendReturnsOnceStepped(t *testing.T) {
	// A member waiting to be added: no configuration, no leader.
	n := newTestDriver(t, func(cfg *Config) {
		cfg.Bootstrap = nil
		cfg.Peers = map[uint64]string{1: "127.0.0.1:1", 2: "127.0.0.1:2"}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	taken := make(chan error, 1)
	n.Deliver([]raft.Message{{Type: raft.MsgReadIndex, From: 2, To: 1, Term: 1, Context: []byte("read-1")}},
		func(_ *NotMember, err error) { taken <- err })
	var err error
	select {
	case err = <-taken:
	case <-ctx.Done():
		err = ctx.Err()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		t.Error("a read index sent to a follower holds its send call")
	case err != nil:
		t.Errorf("read index: %v", err)
	}
}

// A proposal whose entry a new leader overwrote can still sit in byIndex
// when this node leads again and appends a new proposal at the same index
// (it had not applied that index yet). The new proposal must not silently
// replace the old one: the old one's entry is gone from the leader's log,
// so it is answered as not applied rather than left to time out.
func TestProposalReplacedAtItsIndexIsAnswered(t *testing.T) {
	n := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oldDone, freshDone := make(chan Result, 1), make(chan Result, 1)
	old := &proposal{reply: func(r Result) { oldDone <- r }}
	fresh := &proposal{data: openSession(), reply: func(r Result) { freshDone <- r }}
	if _, err := onLoop(ctx, n.Driver, func() struct{} {
		// The old proposal, of an earlier term, waits at the index the
		// next one will take.
		old.index, old.term = n.core.LastIndex()+1, n.core.Term()-1
		n.loop.byIndex[old.index] = old
		n.loop.newProp = append(n.loop.newProp, fresh)
		return struct{}{}
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-freshDone:
		if r.Err != nil {
			t.Fatalf("the new proposal: %v", r.Err)
		}
		if a := applied(r); a.Kind != kv.CmdOpenSession || a.Session == 0 {
			t.Fatalf("the new proposal was answered with %+v, not its entry's result", a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the new proposal was not applied")
	}
	select {
	case r := <-oldDone:
		if r.Err == nil {
			t.Error("the replaced proposal was reported applied")
		}
	case <-time.After(time.Second):
		t.Error("the replaced proposal is never answered")
	}
	left, err := onLoop(ctx, n.Driver, func() int { return len(n.loop.byIndex) })
	if err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d proposals still wait after every entry was applied", left)
	}
}
