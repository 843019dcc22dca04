package client

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Read spreading (WithReadSpreading). Every node serves reads from its
// own state: a serializable read as the node has applied it, a
// linearizable one after the node has learnt a read index from the
// leader and applied up to it (the leader confirms its leadership with a
// heartbeat round; the read's data never travels through the leader).
// So reads need not queue behind the writes on the leader's connection:
// the client keeps one connection to each endpoint it can reach (the
// pool) and sends each read batch on the one with the fewest read batch
// calls in flight, ties going to the client's home endpoint (drawn at random).
// Extra calls go out only when a full batch is queued (see maxSenders),
// so a client's reads stay on its home node until its load needs more.
// Writes, sessions, leases,
// watches and admin calls keep using the current connection, which
// steering moves to the leader.
//
// The pool grows in the background: a read never waits for a dial. Once
// a connection is up, a read finding an endpoint without a
// connection starts dialling it and goes elsewhere meanwhile. A
// connection that fails (lost, stalled, or its node cut off from the
// leader: see retire) leaves the pool, and its endpoint is dialled again
// only after a backoff, doubling from poolRetryMin to poolRetryMax while
// the dials keep failing. With no pooled connection up, reads use the
// current connection, which fails over as it always does.

// DefaultReadSpreading is WithReadSpreading's default.
const DefaultReadSpreading = false

// WithReadSpreading makes the client spread its reads (Get, Range, and
// read-only transactions; serializable and linearizable) over all its
// endpoints instead of sending them to the node it writes through (the
// leader, once found); see DefaultReadSpreading for the default. A
// linearizable read stays linearizable wherever it is served. A
// serializable read is served from whichever node gets it, so with
// spreading two serializable reads in a row may see the store go back in
// time (the second node may be behind the first), and a serializable
// read may miss the client's own acknowledged write.
func WithReadSpreading(on bool) Option { return func(o *options) { o.spread = &on } }

// Backoff before dialling again, for reads, an endpoint whose connection
// failed or whose dial failed.
const (
	poolRetryMin = 250 * time.Millisecond
	poolRetryMax = 5 * time.Second
)

// pool is the connections reads spread over: at most one per endpoint.
// Its fields and the slots are guarded by Client.mu, but for ready.
type pool struct {
	slots []poolSlot // by endpoint index
	// ready counts the pooled connections: a read queue runs up to
	// WithMaxInFlight senders per pooled connection.
	ready atomic.Int32
	// home is the endpoint the client's reads prefer when the loads
	// tie, drawn at random when the client is created: a client keeps
	// its reads on one warm connection while its load allows, and many
	// clients spread theirs over the nodes.
	home int
}

type poolSlot struct {
	cn      *conn // the endpoint's pooled connection (ready), or nil
	dialing bool
	fails   int       // failures since a pooled connection last served
	retryAt time.Time // no dial before then
}

func (p *pool) init(n int) {
	p.slots = make([]poolSlot, n)
	p.home = rand.N(n)
}

// spreading reports whether reads spread over the endpoints.
func (c *Client) spreading() bool {
	on := DefaultReadSpreading
	if c.opts.spread != nil {
		on = *c.opts.spread
	}
	return on && len(c.endpoints) > 1
}

// poolLocked adds cn, dialled and ready, to the pool if its endpoint has
// no connection there yet.
func (c *Client) poolLocked(cn *conn) {
	if !c.spreading() || cn.pooled || cn.err != nil {
		return
	}
	s := &c.pool.slots[cn.idx]
	if s.cn != nil {
		return
	}
	s.cn = cn
	cn.pooled = true
	c.pool.ready.Add(1)
}

// servedOnce notes that a batch call on cn was answered: a pooled
// connection that serves ends its endpoint's run of failures.
func (c *Client) servedOnce(cn *conn) {
	if cn.served.Swap(true) {
		return // once per connection
	}
	c.mu.Lock()
	if s := &c.pool.slots[cn.idx]; s.cn == cn {
		s.fails = 0
	}
	c.mu.Unlock()
}

// unpoolLocked takes cn out of the pool after it failed: its endpoint is
// not dialled again for reads before a backoff. The caller closes cn if
// nothing else uses it (see retireLocked).
func (c *Client) unpoolLocked(cn *conn) {
	if !cn.pooled {
		return
	}
	cn.pooled = false
	s := &c.pool.slots[cn.idx]
	if s.cn == cn {
		s.cn = nil
		c.pool.ready.Add(-1)
		c.backOffLocked(s)
	}
}

func (c *Client) backOffLocked(s *poolSlot) {
	s.fails++
	d := poolRetryMin << min(s.fails-1, 8)
	s.retryAt = time.Now().Add(min(d, poolRetryMax))
}

// adoptLocked makes the pooled connection of the endpoint acquire would
// dial next the current connection, saving a dial (steering moved to
// the leader's endpoint, say), and steers from it as a dial does. It
// returns nil if there is none, or it has ended.
func (c *Client) adoptLocked() *conn {
	if !c.spreading() {
		return nil
	}
	cn := c.pool.slots[c.next].cn
	if cn == nil || cn.closed || cn.dead() {
		return nil // readConn retires a dead one
	}
	cn.retired = false
	c.cur = cn
	if len(c.endpoints) > 1 {
		cn.users++ // steer's use (see dial)
		c.wg.Add(1)
		go c.steer(cn)
	}
	return cn
}

// readConn returns a pooled connection for a read batch, holding a use of
// it for the caller to release: the one with the fewest read batch calls
// in flight, ties going to the home endpoint first. On the way it retires pooled
// connections that have ended and starts dialling endpoints without one
// (once a connection is up, and not before their backoff). It
// never waits: nil means no pooled connection is up, and the read takes
// the current connection.
func (c *Client) readConn() *conn {
	var ended []*conn
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	// Dial more only once a connection is up (the current one, or a
	// pooled one while steering moves the current one elsewhere).
	cur := c.cur
	canDial := (cur != nil && cur.err == nil && isClosed(cur.ready)) || c.pool.ready.Load() > 0
	slots := c.pool.slots
	n := len(slots)
	var best *conn
	var bestLoad int32
	var now time.Time
	for i := range n {
		idx := (c.pool.home + i) % n
		s := &slots[idx]
		cn := s.cn
		if cn == nil {
			if !canDial || s.dialing {
				continue
			}
			if now.IsZero() {
				now = time.Now()
			}
			if now.Before(s.retryAt) {
				continue
			}
			s.dialing = true
			c.wg.Add(1)
			go c.poolDial(idx)
			continue
		}
		if cn.dead() {
			if c.retireLocked(cn, true) {
				ended = append(ended, cn)
			}
			continue
		}
		if load := cn.readsInFlight.Load(); best == nil || load < bestLoad {
			best, bestLoad = cn, load
		}
	}
	if best != nil {
		best.users++
	}
	c.mu.Unlock()
	for _, cn := range ended {
		cn.close()
	}
	return best
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// poolDial connects to the endpoint at idx for reads and pools the
// connection.
func (c *Client) poolDial(idx int) {
	defer c.wg.Done()
	cn := &conn{ready: make(chan struct{}), retired: true} // retired: not the current one
	err := c.connect(cn, idx)
	cn.err = err
	close(cn.ready)
	c.mu.Lock()
	s := &c.pool.slots[idx]
	s.dialing = false
	closeIt := false
	switch {
	case err != nil:
		c.backOffLocked(s)
	case c.closed:
		closeIt = true
	default:
		c.poolLocked(cn)
		closeIt = !cn.pooled // the endpoint got another meanwhile
	}
	if closeIt {
		cn.closed = true
	}
	c.mu.Unlock()
	if err != nil {
		c.opts.log.Debug("dial for reads failed; retrying later", "addr", c.endpoints[idx], "error", err)
	}
	if closeIt {
		cn.close()
	}
}

// drainPoolLocked empties the pool as the client closes and returns its
// connections to close, but cur (Close closes that itself).
func (c *Client) drainPoolLocked(cur *conn) []*conn {
	var out []*conn
	for i := range c.pool.slots {
		s := &c.pool.slots[i]
		cn := s.cn
		if cn == nil {
			continue
		}
		s.cn = nil
		cn.pooled, cn.retired = false, true
		if cn != cur && !cn.closed {
			cn.closed = true
			out = append(out, cn)
		}
	}
	c.pool.ready.Store(0)
	return out
}
