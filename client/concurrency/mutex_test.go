package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
)

// lockWaiter runs m.Lock in the background: acquired receives once it
// holds the lock, and it unlocks when release is closed.
type lockWaiter struct {
	m        *concurrency.Mutex
	acquired chan error
	release  chan struct{}
	unlocked chan error
}

func startLock(ctx context.Context, m *concurrency.Mutex) *lockWaiter {
	w := &lockWaiter{m: m, acquired: make(chan error, 1), release: make(chan struct{}), unlocked: make(chan error, 1)}
	go func() {
		err := m.Lock(ctx)
		w.acquired <- err
		if err != nil {
			return
		}
		<-w.release
		w.unlocked <- m.Unlock(ctx)
	}()
	return w
}

// Waiters are served in the order they joined the queue, not in the
// order of their keys (sessions are created in one order and queue in a
// shuffled one), each Unlock hands the lock to the next waiter only, and
// every holder's fencing token is larger than the one before.
func TestLockServesWaitersInTheOrderTheyQueued(t *testing.T) {
	rng := seeded(t)
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	const name, waiters = "locks/fair", 6

	holder := concurrency.NewMutex(session(t, cl, 10*time.Second), name)
	if err := holder.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	muts := make([]*concurrency.Mutex, waiters)
	for i := range muts {
		muts[i] = concurrency.NewMutex(session(t, cl, 10*time.Second), name)
	}
	order := rng.Perm(waiters)
	ws := make([]*lockWaiter, waiters)
	for n, i := range order {
		ws[i] = startLock(ctx, muts[i])
		awaitQueue(t, cl, name+"/", n+2)
	}
	t.Logf("queued in order %v", order)

	last := holder.Revision()
	if last == 0 {
		t.Fatal("the holder's token is 0")
	}
	if err := holder.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, i := range order {
		select {
		case err := <-ws[i].acquired:
			if err != nil {
				t.Fatalf("waiter %d: %v", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("waiter %d never got the lock", i)
		}
		for _, j := range order {
			if j != i {
				select {
				case <-ws[j].acquired:
					t.Fatalf("waiter %d got the lock while waiter %d held it", j, i)
				default:
				}
			}
		}
		if tok := muts[i].Revision(); tok <= last {
			t.Fatalf("waiter %d's token %d is not above the previous holder's %d", i, tok, last)
		}
		last = muts[i].Revision()
		close(ws[i].release)
		if err := <-ws[i].unlocked; err != nil {
			t.Fatalf("waiter %d unlock: %v", i, err)
		}
	}
	if n := queueLen(t, cl, name+"/"); n != 0 {
		t.Fatalf("%d keys left in the queue", n)
	}
}

// TryLock fails with ErrLocked while another session holds the lock and
// leaves no key behind; once the lock is free it takes it, with a larger
// token than the last holder's.
func TestTryLockFailsWhileAnotherSessionHoldsTheLock(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	a := concurrency.NewMutex(session(t, cl, 10*time.Second), "locks/try")
	b := concurrency.NewMutex(session(t, cl, 10*time.Second), "locks/try")
	if err := a.TryLock(ctx); err != nil {
		t.Fatalf("TryLock of a free lock: %v", err)
	}
	if err := b.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock of a held lock: %v, want ErrLocked", err)
	}
	if err := a.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
		t.Fatalf("TryLock of a lock the mutex holds: %v, want ErrLocked", err)
	}
	awaitQueue(t, cl, "locks/try/", 1)
	if b.Revision() != 0 {
		t.Fatalf("a failed TryLock has token %d", b.Revision())
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); !errors.Is(err, concurrency.ErrNotLocked) {
		t.Fatalf("second Unlock: %v, want ErrNotLocked", err)
	}
	if err := b.TryLock(ctx); err != nil {
		t.Fatalf("TryLock after the holder unlocked: %v", err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// A Lock that gives up (its context ends) leaves the queue, so the
// waiters behind it are not blocked by its key.
func TestALockThatGivesUpLeavesTheQueue(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	const name = "locks/giveup"
	a := concurrency.NewMutex(session(t, cl, 10*time.Second), name)
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithCancel(ctx)
	b := startLock(bctx, concurrency.NewMutex(session(t, cl, 10*time.Second), name))
	awaitQueue(t, cl, name+"/", 2)
	cw := startLock(ctx, concurrency.NewMutex(session(t, cl, 10*time.Second), name))
	awaitQueue(t, cl, name+"/", 3)
	cancel()
	if err := <-b.acquired; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Lock: %v, want context.Canceled", err)
	}
	awaitQueue(t, cl, name+"/", 2)
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-cw.acquired; err != nil {
		t.Fatal(err)
	}
	close(cw.release)
	if err := <-cw.unlocked; err != nil {
		t.Fatal(err)
	}
}

// A holder whose process dies (its client closes: nothing keeps its
// lease alive) releases the lock when its lease expires through the log,
// and its session reports the loss.
func TestAHolderWhoseSessionDiesReleasesTheLock(t *testing.T) {
	c := newCluster(t, 1)
	ctx := testCtx(t)
	const name, ttl = "locks/dies", time.Second
	dying := c.client()
	ds := session(t, dying, ttl)
	a := concurrency.NewMutex(ds, name)
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	cl := c.client()
	b := startLock(ctx, concurrency.NewMutex(session(t, cl, 10*time.Second), name))
	awaitQueue(t, cl, name+"/", 2)
	start := time.Now()
	dying.Close()
	select {
	case <-ds.Done():
	case <-ctx.Done():
		t.Fatal("the dead client's session never reported its end")
	}
	if err := <-b.acquired; err != nil {
		t.Fatal(err)
	}
	t.Logf("the waiter got the lock %v after the holder's client closed (TTL %v)", time.Since(start).Round(time.Millisecond), ttl)
	if b.m.Revision() <= a.Revision() {
		t.Fatalf("token %d after the dead holder's %d", b.m.Revision(), a.Revision())
	}
	close(b.release)
	if err := <-b.unlocked; err != nil {
		t.Fatal(err)
	}
}

// A process restarted with its lease (WithLease) finds its key again and
// holds the lock it held, with the same token: taking a lock is
// idempotent per session.
func TestARestartedSessionFindsItsLockAgain(t *testing.T) {
	c := newCluster(t, 1)
	ctx := testCtx(t)
	before := c.client()
	s1, err := concurrency.NewSession(ctx, before, concurrency.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m1 := concurrency.NewMutex(s1, "locks/restart")
	if err := m1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	s1.Orphan() // the process "dies" with its lease alive on the cluster

	after := c.client()
	s2, err := concurrency.NewSession(ctx, after, concurrency.WithLease(s1.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	m2 := concurrency.NewMutex(s2, "locks/restart")
	if err := m2.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if m2.Key() != m1.Key() || m2.Revision() != m1.Revision() {
		t.Fatalf("after the restart: key %q token %d, before: key %q token %d", m2.Key(), m2.Revision(), m1.Key(), m1.Revision())
	}
	awaitQueue(t, after, "locks/restart/", 1)
}

// IsOwner guards a write with the lock: it holds while the lock is held
// and fails once the session that held it is gone; the closed session
// takes no lock.
func TestIsOwnerGuardsWritesWithTheLock(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	s, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m := concurrency.NewMutex(s, "locks/guard")
	guarded := func() bool {
		resp, err := cl.Txn(ctx).If(m.IsOwner()).Then(client.OpPut("guarded", []byte(fmt.Sprint(m.Revision())))).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	if guarded() {
		t.Fatal("a write guarded by a lock not held succeeded")
	}
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if !guarded() {
		t.Fatal("a write guarded by the held lock failed")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if guarded() {
		t.Fatal("a write guarded by a lock whose session was closed succeeded")
	}
	if err := m.Lock(ctx); !errors.Is(err, concurrency.ErrSessionExpired) {
		t.Fatalf("Lock on a closed session: %v, want ErrSessionExpired", err)
	}
}

// Locks are granted in order across a leader change: the holder's
// Unlock and the waiters' watches go on through the new leader.
func TestLockAcrossALeaderChange(t *testing.T) {
	c := newCluster(t, 3)
	lead := c.leader()
	cl := c.client()
	ctx := testCtx(t)
	const name = "locks/failover"
	a := concurrency.NewMutex(session(t, cl, 5*time.Second), name)
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	ws := make([]*lockWaiter, 3)
	for i := range ws {
		ws[i] = startLock(ctx, concurrency.NewMutex(session(t, cl, 5*time.Second), name))
		awaitQueue(t, cl, name+"/", i+2)
	}
	c.stop(lead)
	t.Logf("stopped leader %d", lead)
	c.leader()
	last := a.Revision()
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	for i, w := range ws {
		if err := <-w.acquired; err != nil {
			t.Fatalf("waiter %d: %v", i, err)
		}
		if w.m.Revision() <= last {
			t.Fatalf("waiter %d: token %d after %d", i, w.m.Revision(), last)
		}
		last = w.m.Revision()
		close(w.release)
		if err := <-w.unlocked; err != nil {
			t.Fatalf("waiter %d unlock: %v", i, err)
		}
	}
}

// A waiter whose session ends stops waiting at once, with
// ErrSessionExpired, while the holder still holds the lock (etcd's
// waiters learn it only when the keys ahead of them go: etcd issue
// 19597).
func TestAWaiterWhoseSessionEndsStopsWaiting(t *testing.T) {
	c := newCluster(t, 1)
	cl := c.client()
	ctx := testCtx(t)
	const name = "locks/waiter-dies"
	a := concurrency.NewMutex(session(t, cl, 10*time.Second), name)
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	bs := session(t, cl, 10*time.Second)
	b := startLock(ctx, concurrency.NewMutex(bs, name))
	awaitQueue(t, cl, name+"/", 2)
	bs.Orphan()
	if err := <-b.acquired; !errors.Is(err, concurrency.ErrSessionExpired) {
		t.Fatalf("Lock of a waiter whose session ended: %v, want ErrSessionExpired", err)
	}
	if a.Revision() == 0 {
		t.Fatal("the holder lost the lock")
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}
