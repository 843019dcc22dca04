package concurrency

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/capraft/capraft/client"
)

// DefaultSessionTTL is a session's lease TTL unless WithTTL says
// otherwise: how long the cluster keeps a dead session's keys.
const DefaultSessionTTL = 60 * time.Second

// ErrSessionExpired is matched (errors.Is) by the error of an operation
// whose session ended (its lease was revoked, expired or could not be
// renewed in time), or whose key the cluster deleted meanwhile.
var ErrSessionExpired = errors.New("session expired")

// SessionOption configures a Session.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	ttl   time.Duration
	lease uint64
}

// WithTTL sets the session's lease TTL (default DefaultSessionTTL; the
// cluster's bounds apply, 1s to 24h by default). A shorter TTL passes a
// dead holder's lock on sooner and costs more keepalives.
func WithTTL(ttl time.Duration) SessionOption {
	return func(o *sessionOptions) {
		if ttl > 0 {
			o.ttl = ttl
		}
	}
}

// WithLease makes the session keep an existing lease alive instead of
// granting one: a process restarted within the TTL finds its locks and
// candidacies again (Lock and Campaign reuse the session's keys). Only
// one Session at a time may use a lease: two would share keys.
func WithLease(id uint64) SessionOption { return func(o *sessionOptions) { o.lease = id } }

// Session is a lease kept alive by the client, which the keys of locks
// and elections are attached to. It is safe for concurrent use; several
// Mutexes and Elections may share one session, as long as each name is
// used by one at a time (a second Lock of the same name on the same
// session waits for the first to Unlock).
type Session struct {
	c   *client.Client
	id  uint64
	ttl time.Duration

	ctx    context.Context // ends with the session
	cancel context.CancelFunc
	done   chan struct{} // closed when the session has ended
	wg     sync.WaitGroup

	mu     sync.Mutex
	guards map[string]chan struct{} // a key in use by this session's Mutex or Election
}

// NewSession grants a lease of the session's TTL (or takes the one
// WithLease names) and keeps it alive until Close, Orphan, the lease is
// lost or c is closed. ctx bounds the grant and the first renewal only.
// A grant whose answer was lost fails with an error matching
// client.ErrUnknownOutcome; that lease, if granted, expires by itself.
func NewSession(ctx context.Context, c *client.Client, opts ...SessionOption) (*Session, error) {
	o := sessionOptions{ttl: DefaultSessionTTL}
	for _, opt := range opts {
		opt(&o)
	}
	id := o.lease
	ttl := o.ttl
	if id == 0 {
		l, err := c.Grant(ctx, o.ttl)
		if err != nil {
			return nil, fmt.Errorf("new session: %w", err)
		}
		id, ttl = l.ID, l.TTL
	}
	sctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	// The keepalive outlives ctx: it is the session's, not the call's.
	kctx, kcancel := context.WithCancel(sctx)
	stop := context.AfterFunc(ctx, kcancel) // until the first renewal answers
	ch, err := c.KeepAlive(kctx, id)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		kcancel()
		cancel()
		if o.lease == 0 {
			// Best effort: a lease nobody keeps alive expires anyway.
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_, _ = c.Revoke(rctx, id)
			rcancel()
		}
		if errors.Is(err, client.ErrLeaseNotFound) {
			err = fmt.Errorf("lease %d: %w: %w", id, ErrSessionExpired, err)
		}
		return nil, fmt.Errorf("new session: %w", err)
	}
	// KeepAlive hands over the first renewal's answer at once: it says
	// the lease's TTL (WithLease names a lease of any TTL).
	first, ok := <-ch
	if !ok {
		kcancel()
		cancel()
		return nil, fmt.Errorf("new session: lease %d: %w", id, ErrSessionExpired)
	}
	if first.TTL > 0 {
		ttl = first.TTL
	}
	s := &Session{c: c, id: id, ttl: ttl, ctx: sctx, cancel: cancel, done: make(chan struct{}),
		guards: make(map[string]chan struct{})}
	s.wg.Add(1)
	go s.keep(ch, kcancel, first, start)
	return s, nil
}

// keep follows the keepalive's renewals until it stops or the lease's
// deadline passes without one, then ends the session.
//
// The deadline of a renewal is counted from a moment before the call that
// made it started: before KeepAlive for the first, the arrival of the
// previous renewal for the others (the keeper starts its next call a
// third of the TTL after delivering one). So Done is closed no later than the cluster may expire
// the lease, even while a renewal call hangs (the keeper itself gives up
// on a lease only after a failed call, which can take a request timeout).
func (s *Session) keep(ch <-chan client.Lease, stop context.CancelFunc, first client.Lease, from time.Time) {
	defer s.wg.Done()
	defer close(s.done)
	defer s.cancel()
	defer stop()
	timer := time.NewTimer(time.Until(from.Add(first.Remaining)))
	defer timer.Stop()
	from = time.Now()
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				return // lost, revoked, past its deadline, or the client closed
			}
			timer.Reset(time.Until(from.Add(l.Remaining)))
			from = time.Now()
		case <-timer.C:
			return // not renewed in time: the cluster may expire it now
		case <-s.ctx.Done():
			return
		}
	}
}

// Client returns the client the session uses.
func (s *Session) Client() *client.Client { return s.c }

// Lease returns the id of the session's lease.
func (s *Session) Lease() uint64 { return s.id }

// TTL returns the session's lease TTL.
func (s *Session) TTL() time.Duration { return s.ttl }

// Done returns a channel closed when the session ends: its lease was
// revoked, expired or could not be renewed before its deadline, the
// session was closed or orphaned, or the client closed. From then on the
// cluster deletes (or has deleted) the session's keys: its locks and
// leaderships are lost.
func (s *Session) Done() <-chan struct{} { return s.done }

// Orphan stops keeping the lease alive without revoking it: its keys stay
// until the TTL runs out. It ends the session. Use it to hand the lease
// to another process (WithLease) or when the cluster cannot be reached.
func (s *Session) Orphan() {
	s.cancel()
	s.wg.Wait()
}

// Close ends the session and revokes its lease, which deletes its keys at
// once: every lock it holds is released and every leadership resigned.
// ctx bounds the revoke; a lease whose revoke fails expires after its
// TTL anyway.
func (s *Session) Close(ctx context.Context) error {
	s.Orphan()
	if _, err := s.c.Revoke(ctx, s.id); err != nil && !errors.Is(err, client.ErrLeaseNotFound) {
		return fmt.Errorf("close session (lease %d): %w", s.id, err)
	}
	return nil
}

// claim reserves key for one Mutex or Election of this session: it waits
// while another holds it, until ctx or the session ends. An ended
// session claims nothing: its keys would outlive no lease kept alive.
func (s *Session) claim(ctx context.Context, key string, wait bool) (err error) {
	defer func() {
		if err == nil && s.ctx.Err() != nil {
			s.unclaim(key)
			err = fmt.Errorf("lease %d: %w", s.id, ErrSessionExpired)
		}
	}()
	s.mu.Lock()
	g := s.guards[key]
	if g == nil {
		g = make(chan struct{}, 1)
		s.guards[key] = g
	}
	s.mu.Unlock()
	if !wait {
		select {
		case g <- struct{}{}:
			return nil
		default:
			return errBusy
		}
	}
	select {
	case g <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return fmt.Errorf("lease %d: %w", s.id, ErrSessionExpired)
	}
}

// errBusy: another Mutex or Election of the session uses the key.
var errBusy = errors.New("the session is using this key")

// unclaim gives key back.
func (s *Session) unclaim(key string) {
	s.mu.Lock()
	g := s.guards[key]
	s.mu.Unlock()
	<-g
}

// abandon deletes key (only while created at rev, if rev > 0) and then
// gives it back: at once if it can, else in the background, retrying
// until it succeeds or the session ends (the lease's end deletes it
// anyway). A key left behind would block every waiter queued after it.
func (s *Session) abandon(ctx context.Context, key string, rev uint64) {
	if s.ctx.Err() != nil {
		s.unclaim(key)
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ttl/4+time.Second)
	err := deleteKey(dctx, s.c, key, rev)
	cancel()
	if err == nil {
		s.unclaim(key)
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.unclaim(key)
		wait := 10 * time.Millisecond
		for s.ctx.Err() == nil { // bounded by the session's life
			dctx, cancel := context.WithTimeout(s.ctx, s.ttl/4+time.Second)
			err := deleteKey(dctx, s.c, key, rev)
			cancel()
			if err == nil {
				return
			}
			t := time.NewTimer(wait/2 + rand.N(wait/2+1))
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
			}
			wait = min(2*wait, time.Second)
		}
	}()
}

// deleteKey deletes key, if created at rev when rev > 0.
func deleteKey(ctx context.Context, c *client.Client, key string, rev uint64) error {
	return idempotent(ctx, func() error {
		if rev == 0 {
			_, _, err := c.Delete(ctx, key)
			return err
		}
		_, err := c.Txn(ctx).If(client.CreateRevision(key).Equal(rev)).Then(client.OpDelete(key)).Commit()
		return err
	})
}

// maxUnknownOutcomes bounds the attempts of an idempotent write whose
// outcomes stay unknown while its context lasts.
const maxUnknownOutcomes = 5

// idempotent runs write, an operation whose second application changes
// nothing, again while its outcome is unknown (the client gave up on an
// attempt: its write session expired meanwhile) and ctx lasts.
func idempotent(ctx context.Context, write func() error) error {
	var err error
	for range maxUnknownOutcomes {
		if err = write(); !errors.Is(err, client.ErrUnknownOutcome) || ctx.Err() != nil {
			return err
		}
	}
	return err
}
