package raftnode

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
)

// failingMachine is a state machine whose Apply or Restore fails.
type failingMachine struct {
	statemachine.Machine
	apply, restore bool
}

var errMachine = errors.New("injected state machine failure")

func (m failingMachine) Apply(ents []statemachine.Entry) ([]statemachine.Result, error) {
	if m.apply {
		return nil, errMachine
	}
	return m.Machine.Apply(ents)
}

func (m failingMachine) Restore(r io.Reader, index uint64) error {
	if m.restore {
		return errMachine
	}
	return m.Machine.Restore(r, index)
}

// startedLeader returns a single-node cluster's node once it leads.
func startedLeader(t *testing.T) (*Node, context.Context) {
	n, err := New(Config{ID: 1, DataDir: t.TempDir(), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if _, err := n.waitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n, ctx
}

// awaitStopped waits for n to stop on its own and returns why.
func awaitStopped(t *testing.T, n *Node, ctx context.Context) error {
	t.Helper()
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("the node did not stop")
	}
	return n.Err()
}

// A state machine that cannot apply stops the node with the reason, and
// the waiting write learns its outcome is unknown: nothing panics, nothing
// is applied after the failure.
func TestStateMachineApplyFailureStopsTheNode(t *testing.T) {
	n, ctx := startedLeader(t)
	// A first write applied: the leader's own entries are behind it.
	if r := <-n.submitWait(&kv.Command{Kind: kv.CmdOpenSession}); r.err != nil {
		t.Fatal(r.err)
	}
	if err := runOnLoop(ctx, n, func() { n.sm = failingMachine{Machine: n.sm, apply: true} }); err != nil {
		t.Fatal(err)
	}
	done := n.submitWait(&kv.Command{Kind: kv.CmdOpenSession})
	var r proposalResult
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the write is never answered")
	}
	if !errors.Is(r.err, errOutcomeUnknown) {
		t.Errorf("the write was answered %+v %v, want %v", r.result, r.err, errOutcomeUnknown)
	}
	if err := awaitStopped(t, n, ctx); err == nil || !strings.Contains(err.Error(), errMachine.Error()) {
		t.Errorf("the node stopped with %v, want the state machine's failure", err)
	}
}

// A snapshot the state machine cannot restore once it is on disk stops
// the node with the reason instead of panicking.
func TestSnapshotRestoreFailureStopsTheNode(t *testing.T) {
	n, ctx := startedLeader(t)
	if err := runOnLoop(ctx, n, func() {
		n.sm = failingMachine{Machine: n.sm, restore: true}
		last := n.core.LastIndex()
		sm := n.kv.Snapshot()
		sn := raft.Snapshot{Meta: raft.SnapshotMeta{Index: last + 10, Term: n.core.Term(), ConfState: n.core.ConfState()}}
		data, err := encodeSnapshotOf(map[uint64]string{1: "127.0.0.1:1"}, sm)
		if err != nil {
			t.Error(err)
			return
		}
		sn.Data = data
		n.handleReady(raft.Ready{Snapshot: sn})
	}); err != nil {
		t.Fatal(err)
	}
	err := awaitStopped(t, n, ctx)
	if err == nil || !strings.Contains(err.Error(), errMachine.Error()) {
		t.Errorf("the node stopped with %v, want the state machine's failure", err)
	}
	if err != nil && strings.Contains(err.Error(), "internal error") {
		t.Errorf("the node stopped by a recovered panic: %v", err)
	}
}

func encodeSnapshotOf(addrs map[uint64]string, sn statemachine.Snapshot) ([]byte, error) {
	var b strings.Builder
	if err := writeSnapshot(&b, addrs, sn); err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}
