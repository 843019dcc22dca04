package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/capraft/capraft/schema"
)

// Leases. A lease lives for its TTL unless kept alive; keys put with
// WithLease are deleted when it is revoked or expires. Lease time is the
// cluster's log time: a lease expires once its deadline has passed and
// the leader has proposed its expiry (after a leader change, not before
// its TTL plus an election timeout from the change).
//
// KeepAlive keeps leases alive in the background. All the leases a
// Client keeps alive share one call per interval (a third of the
// shortest TTL among them): keeping N leases alive costs one call and
// one log entry per interval, not N.

// Lease is a lease's state.
type Lease struct {
	ID  uint64
	TTL time.Duration
	// Remaining is the lease's time to live as the answering node last
	// applied the log (<= 0: due, its expiry on its way).
	Remaining time.Duration
	// Keys is the number of keys attached (Grant, TimeToLive; -1 when
	// not counted: Leases, KeepAlive).
	Keys int64
	// Prefix is the prefix the lease's keys must have (the granting
	// credential's).
	Prefix string
}

var leaseOutcome = outcome{"the lease may or may not have been granted", "list the leases to find out"}

func leaseOf(s schema.LeaseStatus) Lease {
	p, _ := s.Prefix()
	return Lease{ID: s.Id(), TTL: time.Duration(min(s.TtlMillis(), math.MaxInt64/uint64(time.Millisecond))) * time.Millisecond,
		Remaining: time.Duration(s.RemainingMillis()) * time.Millisecond, Keys: s.Keys(), Prefix: string(p)}
}

// leaseCall runs call until the cluster answers it, it fails for good or
// ctx ends. call makes one call on cn and returns the node's answer: nil,
// a *ServerError, or the call's failure. A call lost after it was sent
// is sent again if resendable; otherwise its outcome is unknown.
func (c *Client) leaseCall(ctx context.Context, op string, resendable bool, call func(ctx context.Context, cn *conn) error) error {
	var b backoff
	var last error
	sent := false
	for {
		if err := ctx.Err(); err != nil {
			if sent && !resendable {
				return &unknownOutcomeError{op: op, what: leaseOutcome, cause: errors.Join(last, err)}
			}
			return unavailable(op, last, err)
		}
		err := func() error {
			rctx, cancel := context.WithTimeout(ctx, c.opts.requestTimeout)
			defer cancel()
			cn, err := c.acquire(rctx)
			if err != nil {
				return err
			}
			defer c.release(cn)
			err = call(rctx, cn)
			var se *ServerError
			if err != nil && !errors.As(err, &se) {
				return c.batchError(cn, rctx, err)
			}
			if se != nil && (se.Code == CodeUnavailable || se.Code == CodeShuttingDown || se.Code == CodeTimeout) {
				c.moveOn(cn)
			}
			return err
		}()
		var se *ServerError
		var te *transportError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrClosed):
			return fmt.Errorf("%s: %w", op, ErrClosed)
		case errors.As(err, &te):
			sent = true
		case errors.As(err, &se) && (se.Code == CodeUnavailable || se.Code == CodeShuttingDown):
			// Nothing was done: ask again.
		case errors.As(err, &se) && (se.Code == CodeOutcomeUnknown || se.Code == CodeTimeout):
			sent = true
		case transient(err):
		default:
			return fmt.Errorf("%s: %w", op, err)
		}
		last = err
		if sent && !resendable {
			return &unknownOutcomeError{op: op, what: leaseOutcome, cause: err}
		}
		b.wait(ctx, c.ctx.Done())
	}
}

// answered returns the error an answer's Error field holds, if any.
func answered[R interface {
	Error() (schema.Error, error)
	HasError() bool
}](res R, cn *conn) error {
	if !res.HasError() {
		return nil
	}
	e, err := res.Error()
	if err != nil {
		return err
	}
	return serverError(e, cn.addr())
}

// Grant grants a lease of ttl (rounded down to milliseconds; within the
// cluster's bounds, 1 s to 24 h by default). Granting is not idempotent:
// a grant whose answer was lost returns an error wrapping
// ErrUnknownOutcome. On a credential restricted to a prefix the lease is
// confined to it.
func (c *Client) Grant(ctx context.Context, ttl time.Duration) (Lease, error) {
	var l Lease
	err := c.leaseCall(ctx, "lease grant", false, func(ctx context.Context, cn *conn) error {
		f, rel := cn.kv.LeaseGrant(ctx, func(p schema.KV_leaseGrant_Params) error {
			p.SetTtlMillis(uint64(max(ttl, 0) / time.Millisecond))
			return nil
		})
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return err
		}
		if err := answered(res, cn); err != nil {
			return err
		}
		s, err := res.Lease()
		if err != nil {
			return err
		}
		l = leaseOf(s)
		return nil
	})
	return l, err
}

// Revoke ends lease id now, deleting its keys (all at one revision,
// returned). An unknown lease fails with ErrLeaseNotFound; so does a
// revoke whose first attempt was applied but whose answer was lost (the
// retry finds the lease gone): either way the lease is over.
func (c *Client) Revoke(ctx context.Context, id uint64) (rev uint64, err error) {
	err = c.leaseCall(ctx, "lease revoke", true, func(ctx context.Context, cn *conn) error {
		f, rel := cn.kv.LeaseRevoke(ctx, func(p schema.KV_leaseRevoke_Params) error { p.SetLease(id); return nil })
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return err
		}
		if err := answered(res, cn); err != nil {
			return err
		}
		rev = res.Revision()
		return nil
	})
	return rev, err
}

// TimeToLive returns lease id's state as the connected node applied it
// (serializable: a lease granted a moment ago through another node may
// not be there yet). An unknown lease fails with ErrLeaseNotFound.
func (c *Client) TimeToLive(ctx context.Context, id uint64) (Lease, error) {
	var l Lease
	err := c.leaseCall(ctx, "lease time to live", true, func(ctx context.Context, cn *conn) error {
		f, rel := cn.kv.LeaseTimeToLive(ctx, func(p schema.KV_leaseTimeToLive_Params) error { p.SetLease(id); return nil })
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return err
		}
		if err := answered(res, cn); err != nil {
			return err
		}
		s, err := res.Lease()
		if err != nil {
			return err
		}
		l = leaseOf(s)
		return nil
	})
	return l, err
}

// maxLeasePages bounds the pages Leases reads (1000 leases a page).
const maxLeasePages = 10_000

// Leases lists the leases the client's credential may see, in id order,
// as the connected node applied them (serializable).
func (c *Client) Leases(ctx context.Context) ([]Lease, error) {
	var out []Lease
	after := uint64(0)
	for range maxLeasePages {
		more := false
		err := c.leaseCall(ctx, "lease list", true, func(ctx context.Context, cn *conn) error {
			f, rel := cn.kv.LeaseList(ctx, func(p schema.KV_leaseList_Params) error { p.SetAfter(after); return nil })
			defer rel()
			res, err := f.Struct()
			if err != nil {
				return err
			}
			if err := answered(res, cn); err != nil {
				return err
			}
			l, err := res.Leases()
			if err != nil {
				return err
			}
			for i := 0; i < l.Len(); i++ {
				out = append(out, leaseOf(l.At(i)))
			}
			more = res.More() && l.Len() > 0
			return nil
		})
		if err != nil {
			return nil, err
		}
		if !more {
			return out, nil
		}
		after = out[len(out)-1].ID
	}
	return out, nil
}

// KeepAlive keeps lease id alive until ctx ends, the lease is gone
// (revoked or expired: it could not be renewed in time), or the client
// closes. It first renews the lease once, returning ErrLeaseNotFound if
// it is gone already. The channel receives the lease's state after each
// renewal (the latest only, if the reader is slow) and is closed when
// keeping it alive stops; then TimeToLive says whether it still exists.
func (c *Client) KeepAlive(ctx context.Context, id uint64) (<-chan Lease, error) {
	ls, err := c.keepAliveCall(ctx, []uint64{id})
	if err != nil {
		return nil, err
	}
	if !ls[0].found {
		return nil, fmt.Errorf("lease keepalive: lease %d: %w", id, ErrLeaseNotFound)
	}
	return c.keeper.add(c, ctx, ls[0].Lease)
}

// keptLease is a keepalive's answer for one lease.
type keptLease struct {
	Lease
	found bool
}

// keepAliveCall renews ids in one call.
func (c *Client) keepAliveCall(ctx context.Context, ids []uint64) ([]keptLease, error) {
	var out []keptLease
	err := c.leaseCall(ctx, "lease keepalive", true, func(ctx context.Context, cn *conn) error {
		f, rel := cn.kv.LeaseKeepAlive(ctx, func(p schema.KV_leaseKeepAlive_Params) error {
			l, err := p.NewLeases(int32(len(ids)))
			if err != nil {
				return err
			}
			for i, id := range ids {
				l.Set(i, id)
			}
			return nil
		})
		defer rel()
		res, err := f.Struct()
		if err != nil {
			return err
		}
		if err := answered(res, cn); err != nil {
			return err
		}
		sl, err := res.Statuses()
		if err != nil {
			return err
		}
		if sl.Len() != len(ids) {
			return &ServerError{Code: CodeInternal, Addr: cn.addr(), Message: fmt.Sprintf("%d statuses for %d leases", sl.Len(), len(ids))}
		}
		out = make([]keptLease, len(ids))
		for i := range out {
			s := sl.At(i)
			out[i] = keptLease{Lease: leaseOf(s), found: s.Found()}
			out[i].ID = ids[i]
		}
		return nil
	})
	return out, err
}

// maxKeepAliveBatch is the most leases one keepalive call renews (the
// node's limit).
const maxKeepAliveBatch = 1024

// keeper renews every lease a Client keeps alive, all of them in one
// call per interval, on one goroutine that runs while there are any.
type keeper struct {
	mu      sync.Mutex
	leases  map[uint64]*kept
	running bool
	wake    chan struct{} // a lease was added: reconsider the interval
}

// kept is one KeepAlive's lease.
type kept struct {
	ttl      time.Duration
	deadline time.Time // when the cluster may expire it, as last renewed
	ch       chan Lease
	stop     func() bool
}

// add keeps l alive for ctx, starting the keeper if needed.
func (k *keeper) add(c *Client, ctx context.Context, l Lease) (<-chan Lease, error) {
	ch := make(chan Lease, 1)
	ch <- l
	k.mu.Lock()
	defer k.mu.Unlock()
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.wg.Add(1)
	}
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if k.leases == nil {
		k.leases = make(map[uint64]*kept)
		k.wake = make(chan struct{}, 1)
	}
	if old := k.leases[l.ID]; old != nil {
		// A second KeepAlive of the same lease replaces the first.
		old.stop()
		close(old.ch)
	}
	kp := &kept{ttl: l.TTL, deadline: time.Now().Add(l.Remaining), ch: ch}
	kp.stop = context.AfterFunc(ctx, func() { k.remove(l.ID, kp) })
	k.leases[l.ID] = kp
	select {
	case k.wake <- struct{}{}:
	default:
	}
	if k.running {
		c.wg.Done()
	} else {
		k.running = true
		go k.run(c)
	}
	return ch, nil
}

// remove stops keeping lease id alive, if kp still keeps it.
func (k *keeper) remove(id uint64, kp *kept) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.leases[id] == kp {
		delete(k.leases, id)
		close(kp.ch)
	}
}

// minLeaseInterval bounds how often the keeper renews, whatever the TTLs.
const minLeaseInterval = 10 * time.Millisecond

// run renews the leases every third of the shortest TTL (sooner after a
// failure) until none is left or the client closes.
func (k *keeper) run(c *Client) {
	defer c.wg.Done()
	var b backoff
	failed := false
	for {
		k.mu.Lock()
		if len(k.leases) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		interval := time.Duration(math.MaxInt64)
		for _, kp := range k.leases {
			interval = min(interval, kp.ttl/3)
		}
		k.mu.Unlock()
		interval = max(interval, minLeaseInterval)
		if failed {
			b.wait(c.ctx, nil)
		} else {
			t := time.NewTimer(interval)
			select {
			case <-c.ctx.Done():
				t.Stop()
			case <-t.C:
			case <-k.wake:
				t.Stop()
				continue // recompute the interval
			}
		}
		if c.ctx.Err() != nil {
			k.closeAll()
			return
		}
		failed = !k.renew(c)
		if !failed {
			b = backoff{}
		}
	}
}

// renew renews every lease once, in calls of at most maxKeepAliveBatch,
// and reports whether every call was answered. A lease the cluster no
// longer has, or that could not be renewed before its deadline, stops
// being kept.
func (k *keeper) renew(c *Client) bool {
	k.mu.Lock()
	ids := make([]uint64, 0, len(k.leases))
	for id := range k.leases {
		ids = append(ids, id)
	}
	k.mu.Unlock()
	ok := true
	for len(ids) > 0 {
		n := min(len(ids), maxKeepAliveBatch)
		batch := ids[:n]
		ids = ids[n:]
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.requestTimeout)
		start := time.Now()
		ls, err := c.keepAliveCall(ctx, batch)
		cancel()
		k.mu.Lock()
		if err != nil {
			ok = false
			c.opts.log.Debug("lease keepalive failed", "leases", len(batch), "error", err)
			now := time.Now()
			for _, id := range batch {
				if kp := k.leases[id]; kp != nil && now.After(kp.deadline) {
					// Past its deadline: it may be gone; stop claiming it.
					delete(k.leases, id)
					kp.stop()
					close(kp.ch)
				}
			}
		}
		for _, l := range ls {
			kp := k.leases[l.ID]
			if kp == nil {
				continue
			}
			if !l.found {
				delete(k.leases, l.ID)
				kp.stop()
				close(kp.ch)
				continue
			}
			kp.ttl, kp.deadline = l.TTL, start.Add(l.Remaining)
			select { // keep the latest only
			case <-kp.ch:
			default:
			}
			kp.ch <- l.Lease
		}
		k.mu.Unlock()
	}
	return ok
}

// closeAll stops keeping every lease (the client closed).
func (k *keeper) closeAll() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, kp := range k.leases {
		delete(k.leases, id)
		kp.stop()
		close(kp.ch)
	}
	k.running = false
}
