package concurrency_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
)

// observed is a leader as Observe reports it.
type observed struct{ key, value string }

// next returns the next leader on ch.
func next(t *testing.T, ctx context.Context, ch <-chan client.KeyValue) observed {
	t.Helper()
	select {
	case kv, ok := <-ch:
		if !ok {
			t.Fatal("Observe's channel closed")
		}
		return observed{kv.Key, string(kv.Value)}
	case <-ctx.Done():
		t.Fatal("no leader observed")
	}
	return observed{}
}

// Observe reports the leaders in order: the first candidate, its new
// value when it proclaims one, and the candidate queued behind it once
// it resigns; Leader agrees, and Campaign of the second returns only
// then, with a larger token.
func TestObserveSeesEachLeaderInOrder(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	const name = "elections/observe"
	watcher := concurrency.NewElection(session(t, cl, 10*time.Second), name)
	if _, err := watcher.Leader(ctx); !errors.Is(err, concurrency.ErrNoLeader) {
		t.Fatalf("Leader of an empty election: %v, want ErrNoLeader", err)
	}
	octx, stop := context.WithCancel(ctx)
	defer stop()
	obs := watcher.Observe(octx)

	e1 := concurrency.NewElection(session(t, cl, 10*time.Second), name)
	e2 := concurrency.NewElection(session(t, cl, 10*time.Second), name)
	if err := e1.Campaign(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ctx, obs); got != (observed{e1.Key(), "one"}) {
		t.Fatalf("first leader %+v, want %s=one", got, e1.Key())
	}
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, []byte("two")) }()
	awaitQueue(t, cl, name+"/", 2)
	if err := e2.Proclaim(ctx, []byte("not yet")); !errors.Is(err, concurrency.ErrNotLeader) {
		t.Fatalf("Proclaim of a candidate that does not lead: %v, want ErrNotLeader", err)
	}
	if err := e1.Proclaim(ctx, []byte("one again")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, ctx, obs); got != (observed{e1.Key(), "one again"}) {
		t.Fatalf("after Proclaim: %+v", got)
	}
	select {
	case err := <-won:
		t.Fatalf("the second candidate won while the first led: %v", err)
	default:
	}
	first := e1.Revision()
	if err := e1.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-won; err != nil {
		t.Fatal(err)
	}
	if got := next(t, ctx, obs); got != (observed{e2.Key(), "two"}) {
		t.Fatalf("after Resign: %+v", got)
	}
	if e2.Revision() <= first {
		t.Fatalf("the second leader's token %d is not above the first's %d", e2.Revision(), first)
	}
	l, err := watcher.Leader(ctx)
	if err != nil || l.Key != e2.Key() || string(l.Value) != "two" || l.CreateRevision != e2.Revision() {
		t.Fatalf("Leader: %+v, %v", l, err)
	}
	if err := e1.Proclaim(ctx, []byte("gone")); !errors.Is(err, concurrency.ErrNotLeader) {
		t.Fatalf("Proclaim after Resign: %v, want ErrNotLeader", err)
	}
}

// A leader whose session ends loses leadership: its next Proclaim fails
// with ErrNotLeader, and the next candidate leads.
func TestALeaderWhoseSessionEndsLosesTheElection(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	const name = "elections/lost"
	s1, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e1 := concurrency.NewElection(s1, name)
	if err := e1.Campaign(ctx, []byte("one")); err != nil {
		t.Fatal(err)
	}
	e2 := concurrency.NewElection(session(t, cl, 10*time.Second), name)
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, []byte("two")) }()
	awaitQueue(t, cl, name+"/", 2)
	if err := s1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-won; err != nil {
		t.Fatal(err)
	}
	if err := e1.Proclaim(ctx, []byte("still?")); !errors.Is(err, concurrency.ErrNotLeader) {
		t.Fatalf("Proclaim after the session closed: %v, want ErrNotLeader", err)
	}
	l, err := e2.Leader(ctx)
	if err != nil || l.Key != e2.Key() {
		t.Fatalf("Leader: %+v, %v", l, err)
	}
}

// A campaign found in place (a restarted process's, on its lease) keeps
// its place and takes the new value.
func TestCampaignAgainTakesTheNewValue(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	s1, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	e1 := concurrency.NewElection(s1, "elections/again")
	if err := e1.Campaign(ctx, []byte("old")); err != nil {
		t.Fatal(err)
	}
	s1.Orphan()
	s2, err := concurrency.NewSession(ctx, cl, concurrency.WithLease(s1.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	e2 := concurrency.NewElection(s2, "elections/again")
	if err := e2.Campaign(ctx, []byte("new")); err != nil {
		t.Fatal(err)
	}
	l, err := e2.Leader(ctx)
	if err != nil || string(l.Value) != "new" || l.CreateRevision != e1.Revision() || e2.Revision() != e1.Revision() {
		t.Fatalf("Leader after campaigning again: %+v, %v (first token %d, now %d)", l, err, e1.Revision(), e2.Revision())
	}
}
