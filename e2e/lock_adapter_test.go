package e2e

// This file is the only one that names the client's concurrency recipes;
// TestMutexNeverHasTwoHoldersUnderFaults uses the lockClient it defines.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
)

// lockClient takes one lock with its own client and session, opening a
// new session when the last one ended.
type lockClient struct {
	c    *client.Client
	name string
	ttl  time.Duration
	s    *concurrency.Session
	m    *concurrency.Mutex
}

// lockClient returns a lockClient for the lock name, talking to
// endpoints, with sessions of ttl; closed when the test ends.
func (e *env) lockClient(name string, ttl time.Duration, endpoints ...string) *lockClient {
	e.t.Helper()
	kc := e.client(endpoints...)
	l := &lockClient{c: kc.(realClient).c, name: name, ttl: ttl}
	e.t.Cleanup(func() {
		if l.s != nil {
			ctx, cancel := opCtx()
			defer cancel()
			_ = l.s.Close(ctx)
		}
	})
	return l
}

// Lock waits for the lock and returns its fencing token.
func (l *lockClient) Lock(ctx context.Context) (uint64, error) {
	if l.s != nil {
		select {
		case <-l.s.Done():
			l.s, l.m = nil, nil
		default:
		}
	}
	if l.s == nil {
		s, err := concurrency.NewSession(ctx, l.c, concurrency.WithTTL(l.ttl))
		if err != nil {
			return 0, err
		}
		l.s, l.m = s, concurrency.NewMutex(s, l.name)
	}
	if err := l.m.Lock(ctx); err != nil {
		return 0, err
	}
	return l.m.Revision(), nil
}

// Crash abandons the session as a process that dies would: nothing
// keeps its lease alive, so the cluster deletes its keys (releasing its
// lock) when the TTL runs out. The next Lock opens a new session.
func (l *lockClient) Crash() {
	if l.s != nil {
		l.s.Orphan()
		l.s, l.m = nil, nil
	}
}

// Unlock releases the lock.
func (l *lockClient) Unlock(ctx context.Context) error { return l.m.Unlock(ctx) }

// sessionLost reports whether err says the session ended.
func sessionLost(err error) bool { return errors.Is(err, concurrency.ErrSessionExpired) }

// GuardedPut puts value at key if the lock is still held and key was
// last written at modRev (0: absent), in one transaction; it returns
// whether both held and the transaction's revision.
func (l *lockClient) GuardedPut(ctx context.Context, key string, modRev uint64, value []byte) (bool, uint64, error) {
	resp, err := l.c.Txn(ctx).If(l.m.IsOwner(), client.ModRevision(key).Equal(modRev)).
		Then(client.OpPut(key, value)).Commit()
	if err != nil {
		return false, 0, err
	}
	return resp.Succeeded, resp.Revision, nil
}

// Read returns key's value and mod revision (nil and 0: absent).
func (l *lockClient) Read(ctx context.Context, key string) ([]byte, uint64, error) {
	kv, err := l.c.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %q: %w", key, err)
	}
	return kv.Value, kv.ModRevision, nil
}
