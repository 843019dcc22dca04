package concurrency

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/capraft/capraft/client"
)

// Errors of a Mutex.
var (
	// ErrLocked is TryLock's error when another session holds the lock.
	ErrLocked = errors.New("locked by another session")
	// ErrNotLocked is Unlock's error when the Mutex does not hold the lock.
	ErrNotLocked = errors.New("mutex not locked")
)

// Mutex is a distributed lock named by a key prefix, held by one session
// at a time, granted in the order sessions asked for it (see the package
// comment). It is safe for concurrent use, but like sync.Mutex it is
// held, not owned by a goroutine: Lock twice without Unlock waits
// forever (until ctx ends).
type Mutex struct {
	s      *Session
	prefix string
	key    string

	mu  sync.Mutex
	rev uint64 // the key's create revision while held; 0: not held
}

// NewMutex returns the lock called name for session s: its queue is the
// keys under name + "/", and s's key there is name/<lease id in hex>.
func NewMutex(s *Session, name string) *Mutex {
	prefix := name + "/"
	return &Mutex{s: s, prefix: prefix, key: queueKey(prefix, s.id)}
}

// Lock waits until the session holds the lock, ctx ends or the session
// ends. Waiters are served in the order their Lock joined the queue; a
// holder whose session ends (its process died: its lease expires) hands
// the lock on within its TTL. A Lock that fails leaves the queue.
//
// Lock is safe to call again after a failure of any kind: the key is the
// session's, so one whose creation's outcome was unknown is found again
// and keeps its place.
func (m *Mutex) Lock(ctx context.Context) error {
	if err := m.s.claim(ctx, m.key, true); err != nil {
		return fmt.Errorf("lock %q: %w", m.prefix, err)
	}
	me, q, err := enqueue(ctx, m.s, m.prefix, m.key, nil)
	if err == nil {
		err = waitTurn(ctx, m.s, m.prefix, me, q)
	}
	if err != nil {
		m.s.abandon(ctx, m.key, me.CreateRevision)
		return fmt.Errorf("lock %q: %w", m.prefix, err)
	}
	m.mu.Lock()
	m.rev = me.CreateRevision
	m.mu.Unlock()
	return nil
}

// TryLock takes the lock if it is free (or the session's key is first
// already, left by a process that used its lease before) and
// fails with ErrLocked otherwise, without waiting, leaving the queue as
// it was. It also fails with ErrLocked while another Mutex of the same
// session and name is locking or holds it.
func (m *Mutex) TryLock(ctx context.Context) error {
	if err := m.s.claim(ctx, m.key, false); err != nil {
		if errors.Is(err, errBusy) {
			return fmt.Errorf("lock %q: %w", m.prefix, ErrLocked)
		}
		return fmt.Errorf("lock %q: %w", m.prefix, err)
	}
	me, q, err := enqueue(ctx, m.s, m.prefix, m.key, nil)
	if err == nil && q == nil {
		q, err = list(ctx, m.s.c, m.prefix)
	}
	if err == nil {
		_, ahead, present := position(q, me)
		switch {
		case !present:
			err = fmt.Errorf("key %q is gone from the queue: %w", m.key, ErrSessionExpired)
		case ahead:
			err = ErrLocked
		}
	}
	if err != nil {
		m.s.abandon(ctx, m.key, me.CreateRevision)
		return fmt.Errorf("lock %q: %w", m.prefix, err)
	}
	m.mu.Lock()
	m.rev = me.CreateRevision
	m.mu.Unlock()
	return nil
}

// Unlock releases the lock: it deletes the session's key, if it is still
// the one that won the lock. If that fails (ctx ended, the cluster was
// unreachable) the key is deleted in the background until the session
// ends, and the error says so; either way the Mutex no longer holds the
// lock.
func (m *Mutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	rev := m.rev
	m.rev = 0
	m.mu.Unlock()
	if rev == 0 {
		return fmt.Errorf("unlock %q: %w", m.prefix, ErrNotLocked)
	}
	if err := deleteKey(ctx, m.s.c, m.key, rev); err != nil {
		m.s.abandon(ctx, m.key, rev)
		return fmt.Errorf("unlock %q: %w (the lock's key is deleted in the background, or when the session ends)", m.prefix, err)
	}
	m.s.unclaim(m.key)
	return nil
}

// Key returns the session's key in the lock's queue.
func (m *Mutex) Key() string { return m.key }

// Revision returns the lock's fencing token while the Mutex holds it (0
// otherwise): the revision that created its key. Every later holder's
// token is larger, so a resource that refuses tokens below the highest
// it has seen refuses a holder that lost the lock without knowing it
// (paused past its TTL).
func (m *Mutex) Revision() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rev
}

// IsOwner is a transaction comparison that holds only while the lock's
// key is still the one this Mutex holds the lock with: guard writes to
// the cluster with it (client.Txn.If). With the lock not held, it never
// holds.
func (m *Mutex) IsOwner() client.Cmp {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rev == 0 {
		return client.CreateRevision(m.key).Less(0) // never holds
	}
	return client.CreateRevision(m.key).Equal(m.rev)
}
