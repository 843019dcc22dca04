package driver

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
)

// holdLoop blocks d's loop goroutine in a task until the returned
// function is called.
func holdLoop(t *testing.T, d *Driver) (release func()) {
	t.Helper()
	held, rel := make(chan struct{}), make(chan struct{})
	if !d.q.push(task{func() { close(held); <-rel }}) {
		t.Fatal("the loop has stopped")
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not take the holding task")
	}
	var once atomic.Bool
	release = func() {
		if once.CompareAndSwap(false, true) {
			close(rel)
		}
	}
	t.Cleanup(release)
	return release
}

// queued returns how many events wait in d's queue.
func queued(d *Driver) int {
	d.q.mu.Lock()
	defer d.q.mu.Unlock()
	return len(d.q.events)
}

// A loop task whose caller gave up (its context ended while the loop was
// busy) shares nothing with that caller: the caller gets no result and
// goes on with what it has (Members sorts its slice), and when the loop
// reaches the task it does not run it. Run with -race: a task that built
// its result in the caller's variables after the caller returned would be
// a data race.
func TestLoopTaskAbandonedByItsCallerDoesNotRun(t *testing.T) {
	d := newLoneDriver(t)
	release := holdLoop(t, d.Driver)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller gives up while the loop is held
	var ran atomic.Bool
	ms, err := onLoop(ctx, d.Driver, func() []Member {
		ran.Store(true)
		return []Member{{ID: 3}, {ID: 1}, {ID: 2}}
	})
	if !errors.Is(err, ErrTimeout) || ms != nil {
		t.Fatalf("onLoop after its context ended: %v, %v; want no result and %v", ms, err, ErrTimeout)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })

	release()
	// The loop goes on past the abandoned task.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := onLoop(ctx, d.Driver, func() struct{} { return struct{}{} }); err != nil {
		t.Fatalf("the loop after an abandoned task: %v", err)
	}
	if ran.Load() {
		t.Error("a task whose caller gave up ran anyway")
	}
	// And Members hands its result over whole.
	lead, members, err := d.Members(ctx)
	if err != nil || lead != 1 || len(members) != 1 || members[0].ID != 1 {
		t.Errorf("Members of a lone node: %d, %v, %v", lead, members, err)
	}
}

// A membership change that was proposed but whose application its caller
// does not see (here the loop is held between the proposal and the next
// Ready, and the caller's context ends) may still be applied: it is
// answered outcomeUnknown, not timeout, and then applied indeed.
func TestProposedMembershipChangeLeftUnseenIsOutcomeUnknown(t *testing.T) {
	d := newLoneDriver(t)
	releaseFirst := holdLoop(t, d.Driver)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddLearner, NodeID: 9}}, Context: []byte("127.0.0.1:9")}
	done := make(chan error, 1)
	go func() { done <- d.ChangeMembership(ctx, cc) }()
	rpctest.Eventually(t, 10*time.Second, "the change's task is queued", func() bool { return queued(d.Driver) == 1 })
	// Hold the loop again right after the change's task: it proposes,
	// and no Ready persists or applies it until released.
	held, releaseSecond := make(chan struct{}), make(chan struct{})
	d.q.push(task{func() { close(held); <-releaseSecond }})
	releaseFirst()
	<-held
	cancel()
	err := <-done
	if !errors.Is(err, ErrChangeOutcomeUnknown) {
		t.Fatalf("a proposed change its caller stopped waiting for: %v, want outcomeUnknown", err)
	}
	close(releaseSecond)

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	rpctest.Eventually(t, 10*time.Second, "the change is applied after all", func() bool {
		_, ms, err := d.Members(wctx)
		return err == nil && len(ms) == 2
	})
}
