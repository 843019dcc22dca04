package concurrency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/capraft/capraft/client"
)

// Errors of an Election.
var (
	// ErrNotLeader is Proclaim's error when the Election does not lead
	// (it never won, resigned, or its key was deleted).
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader is Leader's error when nobody campaigns.
	ErrNoLeader = errors.New("no leader")
)

// Election is a leader election named by a key prefix: candidates queue
// their keys, each holding the candidate's value, and the first leads
// (see the package comment). Leadership passes in the order candidates
// joined, when the leader resigns or its session ends. It is safe for
// concurrent use.
type Election struct {
	s      *Session
	prefix string
	key    string

	mu  sync.Mutex
	rev uint64 // the key's create revision while leading; 0: not leading
}

// NewElection returns the election called name for session s: its
// candidates are the keys under name + "/", and s's key there is
// name/<lease id in hex>.
func NewElection(s *Session, name string) *Election {
	prefix := name + "/"
	return &Election{s: s, prefix: prefix, key: queueKey(prefix, s.id)}
}

// Campaign stands for election with value and waits until it leads, ctx
// ends or the session ends. A Campaign that fails withdraws the
// candidacy. Like Lock, it is safe to call again after a failure: a
// candidacy of the session found in place keeps its place (and takes
// value). Campaign by a leader proclaims value.
func (e *Election) Campaign(ctx context.Context, value []byte) error {
	if e.Revision() != 0 {
		return e.Proclaim(ctx, value) // leading already
	}
	if err := e.s.claim(ctx, e.key, true); err != nil {
		return fmt.Errorf("campaign %q: %w", e.prefix, err)
	}
	me, q, err := enqueue(ctx, e.s, e.prefix, e.key, value)
	if err == nil && !bytes.Equal(me.Value, value) {
		err = e.proclaim(ctx, me.CreateRevision, value)
	}
	if err == nil {
		err = waitTurn(ctx, e.s, e.prefix, me, q)
	}
	if err != nil {
		e.s.abandon(ctx, e.key, me.CreateRevision)
		return fmt.Errorf("campaign %q: %w", e.prefix, err)
	}
	e.mu.Lock()
	e.rev = me.CreateRevision
	e.mu.Unlock()
	return nil
}

// Proclaim changes the leader's value without a new election. It fails
// with ErrNotLeader when the Election does not lead: then it no longer
// does (its key was deleted: the session ended).
func (e *Election) Proclaim(ctx context.Context, value []byte) error {
	e.mu.Lock()
	rev := e.rev
	e.mu.Unlock()
	if rev == 0 {
		return fmt.Errorf("proclaim %q: %w", e.prefix, ErrNotLeader)
	}
	err := e.proclaim(ctx, rev, value)
	if errors.Is(err, ErrNotLeader) {
		e.mu.Lock()
		if e.rev == rev {
			e.rev = 0
			e.s.unclaim(e.key)
		}
		e.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("proclaim %q: %w", e.prefix, err)
	}
	return nil
}

// proclaim sets the key created at rev to value.
func (e *Election) proclaim(ctx context.Context, rev uint64, value []byte) error {
	var resp *client.TxnResponse
	err := idempotent(ctx, func() (err error) {
		resp, err = e.s.c.Txn(ctx).If(client.CreateRevision(e.key).Equal(rev)).
			Then(client.OpPut(e.key, value, client.WithLease(e.s.id))).Commit()
		return err
	})
	if errors.Is(err, client.ErrLeaseNotFound) {
		return fmt.Errorf("%w: %w", ErrNotLeader, ErrSessionExpired)
	}
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("key %q (created at revision %d) is gone: %w", e.key, rev, ErrNotLeader)
	}
	return nil
}

// Resign gives up leadership, if the Election leads: its key is deleted,
// and the next candidate leads. If that fails, the key is deleted in the
// background until the session ends, and the error says so; either way
// the Election no longer leads.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	rev := e.rev
	e.rev = 0
	e.mu.Unlock()
	if rev == 0 {
		return nil
	}
	if err := deleteKey(ctx, e.s.c, e.key, rev); err != nil {
		e.s.abandon(ctx, e.key, rev)
		return fmt.Errorf("resign %q: %w (the key is deleted in the background, or when the session ends)", e.prefix, err)
	}
	e.s.unclaim(e.key)
	return nil
}

// Key returns the session's key among the candidates.
func (e *Election) Key() string { return e.key }

// Revision returns the leadership's fencing token while the Election
// leads (0 otherwise): the revision that created its key, larger for
// every later leader (see Mutex.Revision).
func (e *Election) Revision() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rev
}

// IsLeader is a transaction comparison that holds only while this
// Election's key is still the one it won with (see Mutex.IsOwner).
func (e *Election) IsLeader() client.Cmp {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.rev == 0 {
		return client.CreateRevision(e.key).Less(0) // never holds
	}
	return client.CreateRevision(e.key).Equal(e.rev)
}

// Leader returns the current leader's key: its Value is the leader's
// value, its CreateRevision the leadership's fencing token. It fails with
// ErrNoLeader when there is no candidate. The read is linearizable.
func (e *Election) Leader(ctx context.Context) (client.KeyValue, error) {
	q, err := list(ctx, e.s.c, e.prefix)
	if err != nil {
		return client.KeyValue{}, fmt.Errorf("leader %q: %w", e.prefix, err)
	}
	head, ok := first(q)
	if !ok {
		return client.KeyValue{}, fmt.Errorf("leader %q: %w", e.prefix, ErrNoLeader)
	}
	return head.kv, nil
}

// Observe returns a channel of the election's leaders, the current one
// first (if any), then each change: a new leader, or a new value
// proclaimed, in the order they happened, without gaps (it follows the
// candidates with client.ListAndWatch and resumes across failures, with
// a fresh list when the history no longer reaches back, after which a
// leader that came and went meanwhile is not seen). A time without a
// leader is not reported. The channel is closed when ctx ends, the
// client closes, or the watch fails for good (the credential does not
// grant the prefix).
func (e *Election) Observe(ctx context.Context) <-chan client.KeyValue {
	out := make(chan client.KeyValue)
	go func() {
		defer close(out)
		e.observe(ctx, out)
	}()
	return out
}

// observe runs Observe's watches until one fails for good or ctx ends.
func (e *Election) observe(ctx context.Context, out chan<- client.KeyValue) {
	var last client.KeyValue
	wait := 10 * time.Millisecond
	for ctx.Err() == nil { // bounded by ctx
		// With progress notifications: ListAndWatch reconciles pages
		// read at different revisions by watching up to the last one.
		kvs, _, ch, err := e.s.c.ListAndWatch(ctx, e.prefix)
		if err != nil && !retryObserve(err) {
			return
		}
		if err == nil {
			wait = 10 * time.Millisecond
			cands := make(map[string]client.KeyValue, len(kvs))
			for _, kv := range kvs {
				cands[kv.Key] = kv
			}
			if !send(ctx, out, cands, &last) {
				return
			}
			for resp := range ch {
				if resp.Err != nil {
					err = resp.Err
					break
				}
				// One revision at a time: a batch may bring several
				// changes of leader.
				for i, ev := range resp.Events {
					if ev.Type == client.EventPut {
						cands[ev.KV.Key] = ev.KV
					} else {
						delete(cands, ev.KV.Key)
					}
					if i+1 < len(resp.Events) && resp.Events[i+1].Revision() == ev.Revision() {
						continue
					}
					if !send(ctx, out, cands, &last) {
						return
					}
				}
			}
			if err == nil || !retryObserve(err) {
				return // ctx ended or the client closed
			}
		}
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		wait = min(2*wait, time.Second)
	}
}

// retryObserve reports whether Observe should list and watch again after
// err.
func retryObserve(err error) bool {
	return !errors.Is(err, client.ErrClosed) && !errors.Is(err, client.ErrPermissionDenied) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// send delivers the leader among cands to out if it differs from *last
// (another key, or the same key written since). It returns false when
// ctx ended.
func send(ctx context.Context, out chan<- client.KeyValue, cands map[string]client.KeyValue, last *client.KeyValue) bool {
	var head client.KeyValue
	for _, kv := range cands {
		if head.CreateRevision == 0 || kv.CreateRevision < head.CreateRevision {
			head = kv
		}
	}
	if head.CreateRevision == 0 || (head.Key == last.Key && head.CreateRevision == last.CreateRevision && head.ModRevision == last.ModRevision) {
		return true
	}
	select {
	case out <- head:
		*last = head
		return true
	case <-ctx.Done():
		return false
	}
}
