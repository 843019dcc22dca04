package driver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
)

// A proposal is answered with the result of the entry the core appended it
// as, known by its index and term: the entry applied at its index with
// its term is it (whichever leader committed it); any other entry there
// (a later leader's command, empty entry or membership change) means it
// was overwritten and will never be applied.
func TestProposalIsAnsweredByTheEntryAtItsIndexAndTerm(t *testing.T) {
	d := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := (&kv.Command{Kind: kv.CmdOpenSession}).AppendBinary(nil)
	cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddLearner, NodeID: 9}}}
	const term = 5
	cases := []struct {
		name    string
		entry   raft.Entry // Index set below
		applied bool
	}{
		{"its own entry", raft.Entry{Term: term, Type: raft.EntryNormal, Data: open}, true},
		{"its own entry after other entries of its term", raft.Entry{Term: term, Type: raft.EntryNormal, Data: open}, true},
		{"a later leader's command", raft.Entry{Term: term + 1, Type: raft.EntryNormal, Data: open}, false},
		{"a later leader's empty entry", raft.Entry{Term: term + 1, Type: raft.EntryNormal}, false},
		{"a membership change of its term", raft.Entry{Term: term, Type: raft.EntryConfChange, Data: cc.Marshal()}, false},
	}
	done := make([]chan Result, len(cases))
	index := make([]uint64, len(cases))
	if err := runOnLoop(ctx, d.Driver, func() {
		// Far beyond the log: nothing else touches these indexes.
		base := d.sm.Applied() + 1000
		ents := make([]raft.Entry, len(cases))
		for i, tc := range cases {
			ch := make(chan Result, 1)
			done[i] = ch
			p := &proposal{data: open, index: base + uint64(i), term: term, reply: func(r Result) { ch <- r }}
			d.loop.byIndex[p.index] = p
			ents[i] = tc.entry
			ents[i].Index = p.index
			index[i] = p.index
		}
		d.applyAll(ents) // one batch
	}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		select {
		case r := <-done[i]:
			switch {
			case tc.applied && r.Err != nil:
				t.Errorf("%s: %v, want its result", tc.name, r.Err)
			case tc.applied && (applied(r).Kind != kv.CmdOpenSession || applied(r).Session != index[i]):
				t.Errorf("%s: answered %+v, not its entry's result", tc.name, applied(r))
			case !tc.applied && !errors.Is(r.Err, ErrDropped):
				t.Errorf("%s: answered %+v %v, want %v", tc.name, r.Value, r.Err, ErrDropped)
			}
		default:
			t.Errorf("%s: the proposal is not answered once its index is applied", tc.name)
		}
	}
}
