package driver

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

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

// startedLeader returns a single-node cluster's driver once it leads.
func startedLeader(t *testing.T) (*testDriver, context.Context) {
	d := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return d, ctx
}

// awaitStopped waits for d to stop on its own and returns why.
func awaitStopped(t *testing.T, d *Driver, ctx context.Context) error {
	t.Helper()
	select {
	case <-d.Done():
	case <-ctx.Done():
		t.Fatal("the driver did not stop")
	}
	return d.Err()
}

// proposeWait proposes data and waits for its outcome, however long.
func proposeWait(d *Driver, data []byte) <-chan Result {
	done := make(chan Result, 1)
	d.Propose(data, func(r Result) { done <- r })
	return done
}

// A state machine that cannot apply stops the driver with the reason, and
// the waiting write learns its outcome is unknown: nothing panics, nothing
// is applied after the failure.
func TestStateMachineApplyFailureStopsTheNode(t *testing.T) {
	d, ctx := startedLeader(t)
	// A first write applied: the leader's own entries are behind it.
	if r := <-proposeWait(d.Driver, openSession()); r.Err != nil {
		t.Fatal(r.Err)
	}
	if err := runOnLoop(ctx, d.Driver, func() { d.sm = failingMachine{Machine: d.sm, apply: true} }); err != nil {
		t.Fatal(err)
	}
	done := proposeWait(d.Driver, openSession())
	var r Result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the write is never answered")
	}
	if !errors.Is(r.Err, ErrOutcomeUnknown) {
		t.Errorf("the write was answered %+v %v, want %v", r.Value, r.Err, ErrOutcomeUnknown)
	}
	if err := awaitStopped(t, d.Driver, ctx); err == nil || !strings.Contains(err.Error(), errMachine.Error()) {
		t.Errorf("the node stopped with %v, want the state machine's failure", err)
	}
}

// A snapshot the state machine cannot restore once it is on disk stops
// the driver with the reason instead of panicking.
func TestSnapshotRestoreFailureStopsTheNode(t *testing.T) {
	d, ctx := startedLeader(t)
	if err := runOnLoop(ctx, d.Driver, func() {
		d.sm = failingMachine{Machine: d.sm, restore: true}
		last := d.core.LastIndex()
		sm := d.kv.Snapshot()
		sn := raft.Snapshot{Meta: raft.SnapshotMeta{Index: last + 10, Term: d.core.Term(), ConfState: d.core.ConfState()}}
		data, err := encodeSnapshotOf(map[uint64]string{1: "127.0.0.1:1"}, sm)
		if err != nil {
			t.Error(err)
			return
		}
		sn.Data = data
		d.handleReady(raft.Ready{Snapshot: sn})
	}); err != nil {
		t.Fatal(err)
	}
	err := awaitStopped(t, d.Driver, ctx)
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
