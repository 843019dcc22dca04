package client

import (
	"context"
	"sync"
	"time"
)

// A node can stop answering without its connection ending: a paused
// process (SIGSTOP, a VM frozen for migration) or a link that drops
// packets keeps the TCP connection open, so a call to it would wait for
// the request timeout and its retry on the same connection again. So
// while a call waits longer than the stall timeout, the client asks the
// node a trivial question (Node.info, which does not touch its Raft
// loop). A node that answers neither is stalled: the client closes the
// connection, which fails every call on it at once, and retries them on
// another endpoint (writes with their session and sequence number, so
// they apply exactly once).

// DefaultStallTimeout is WithStallTimeout's default.
const DefaultStallTimeout = time.Second

// WithStallTimeout sets how long a call waits before the client checks
// that the node is alive, and how long that check may take (default 1s;
// negative disables the checks). A node that answers neither the call
// nor the check within twice this is treated as stalled: its connection
// is closed and the calls on it are retried elsewhere.
func WithStallTimeout(d time.Duration) Option { return func(o *options) { o.stallTimeout = d } }

// stallWatch checks on one call (see watchStall).
type stallWatch struct {
	c        *Client
	cn       *conn
	answered <-chan struct{}
	d        time.Duration

	mu      sync.Mutex
	t       *time.Timer
	stopped bool
}

// watchStall checks on a call on cn whose answer closes answered, until
// the returned stop is called; see WithStallTimeout.
func (c *Client) watchStall(cn *conn, answered <-chan struct{}) (stop func()) {
	if c.opts.stallTimeout <= 0 || cn.cc == nil {
		return func() {}
	}
	w := &stallWatch{c: c, cn: cn, answered: answered, d: c.opts.stallTimeout}
	w.mu.Lock()
	w.t = time.AfterFunc(w.d, w.check)
	w.mu.Unlock()
	return w.stop
}

func (w *stallWatch) stop() {
	w.mu.Lock()
	w.stopped = true
	w.t.Stop()
	w.mu.Unlock()
}

// waiting reports whether the call still waits for its answer.
func (w *stallWatch) waiting() bool {
	select {
	case <-w.answered:
		return false
	case <-w.c.ctx.Done():
		return false
	default:
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.stopped
}

// check runs once the call has waited d: it probes the node, and closes
// the connection if the probe goes unanswered for d too.
func (w *stallWatch) check() {
	c := w.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()
	if !w.waiting() {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, w.d)
	defer cancel()
	// On the bootstrap, not the logged-in node: info needs no credential,
	// and the probe asks whether the node lives, not what it grants.
	f, release := w.cn.cc.Node().Info(ctx, nil)
	_, err := f.Struct()
	if err == nil {
		release()
		w.mu.Lock()
		if !w.stopped {
			w.t.Reset(w.d) // alive but slow: check again later
		}
		w.mu.Unlock()
		return
	}
	if w.waiting() {
		c.opts.log.Warn("node stalled: neither a call nor a liveness probe answered; closing the connection to retry elsewhere",
			"addr", w.cn.addr(), "waited", 2*w.d)
		c.abandon(w.cn)
	}
	// After the close: go-capnp may block releasing a call its peer
	// never answered while the connection is up.
	release()
}

// abandon retires cn and closes its connection at once, failing every
// call on it; the next call dials the next endpoint.
func (c *Client) abandon(cn *conn) {
	c.retire(cn, true)
	_ = cn.cc.Close()
}
