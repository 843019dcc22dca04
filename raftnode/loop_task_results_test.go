package raftnode

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// newLoneNode starts a single-node cluster and waits until it leads.
func newLoneNode(t *testing.T) *Node {
	t.Helper()
	n, err := New(Config{ID: 1, DataDir: t.TempDir(), Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.waitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// holdLoop blocks n's loop goroutine in a task until the returned
// function is called.
func holdLoop(t *testing.T, n *Node) (release func()) {
	t.Helper()
	held, rel := make(chan struct{}), make(chan struct{})
	if !n.q.push(task{func() { close(held); <-rel }}) {
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

// queued returns how many events wait in n's queue.
func queued(n *Node) int {
	n.q.mu.Lock()
	defer n.q.mu.Unlock()
	return len(n.q.events)
}

// A loop task whose caller gave up (its context ended while the loop was
// busy) shares nothing with that caller: the caller gets no result and
// goes on with what it has (Members sorts its slice), and when the loop
// reaches the task it does not run it. Run with -race: a task that built
// its result in the caller's variables after the caller returned would be
// a data race.
func TestLoopTaskAbandonedByItsCallerDoesNotRun(t *testing.T) {
	n := newLoneNode(t)
	release := holdLoop(t, n)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller gives up while the loop is held
	var ran atomic.Bool
	ms, err := onLoop(ctx, n, func() []Member {
		ran.Store(true)
		return []Member{{ID: 3}, {ID: 1}, {ID: 2}}
	})
	if !errors.Is(err, errTimeout) || ms != nil {
		t.Fatalf("onLoop after its context ended: %v, %v; want no result and %v", ms, err, errTimeout)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })

	release()
	// The loop goes on past the abandoned task.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := onLoop(ctx, n, func() struct{} { return struct{}{} }); err != nil {
		t.Fatalf("the loop after an abandoned task: %v", err)
	}
	if ran.Load() {
		t.Error("a task whose caller gave up ran anyway")
	}
	// And Members hands its result over whole.
	lead, members, err := n.Members(ctx)
	if err != nil || lead != 1 || len(members) != 1 || members[0].ID != 1 {
		t.Errorf("Members of a lone node: %d, %v, %v", lead, members, err)
	}
}

// A membership change that was proposed but whose application its caller
// does not see (here the loop is held between the proposal and the next
// Ready, and the caller's context ends) may still be applied: it is
// answered outcomeUnknown, not timeout, and then applied indeed.
func TestProposedMembershipChangeLeftUnseenIsOutcomeUnknown(t *testing.T) {
	n := newLoneNode(t)
	releaseFirst := holdLoop(t, n)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddLearner, NodeID: 9}}, Context: []byte("127.0.0.1:9")}
	done := make(chan error, 1)
	go func() { done <- n.changeMembership(ctx, cc) }()
	rpctest.Eventually(t, 10*time.Second, "the change's task is queued", func() bool { return queued(n) == 1 })
	// Hold the loop again right after the change's task: it proposes,
	// and no Ready persists or applies it until released.
	held, releaseSecond := make(chan struct{}), make(chan struct{})
	n.q.push(task{func() { close(held); <-releaseSecond }})
	releaseFirst()
	<-held
	cancel()
	err := <-done
	var re *requestError
	if !errors.As(err, &re) || re.code != schema.ErrorCode_outcomeUnknown {
		t.Fatalf("a proposed change its caller stopped waiting for: %v, want outcomeUnknown", err)
	}
	close(releaseSecond)

	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	rpctest.Eventually(t, 10*time.Second, "the change is applied after all", func() bool {
		_, ms, err := n.Members(wctx)
		return err == nil && len(ms) == 2
	})
}
