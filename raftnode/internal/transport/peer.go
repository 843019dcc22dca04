package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Reasons a connection ends other than a failure.
var (
	errStopped = errors.New("peer removed or transport closed")
	errRedial  = errors.New("peer address changed")
)

// queued is a message waiting to be sent and its accounted size.
type queued struct {
	m    raft.Message
	size int64
}

// msgSize estimates the memory a queued message holds and the bytes it
// puts on the wire; it is what MaxQueueBytes counts.
func msgSize(m *raft.Message) int64 {
	n := int64(128 + len(m.Context))
	for i := range m.Entries {
		n += int64(32 + len(m.Entries[i].Data))
	}
	return n
}

// peer is the sending side towards one node: one lane per Lane.
type peer struct {
	lanes [numLanes]*lane
}

func newPeer(t *Transport, id uint64, addr string) *peer {
	p := &peer{}
	for l := range p.lanes {
		p.lanes[l] = newLane(t, id, Lane(l), addr)
	}
	return p
}

// start starts each lane's goroutine.
func (p *peer) start() {
	for _, l := range p.lanes {
		go l.run()
	}
}

func (p *peer) setAddr(addr string) {
	for _, l := range p.lanes {
		l.setAddr(addr)
	}
}

// stopAndWait stops every lane and waits for their goroutines.
func (p *peer) stopAndWait() {
	for _, l := range p.lanes {
		l.stopAsync()
	}
	for _, l := range p.lanes {
		l.stopAndWait()
	}
}

func (p *peer) stats() PeerStats {
	st := PeerStats{Known: true}
	st.Connected = true
	for i, l := range p.lanes {
		ls, addr := l.stats()
		st.Addr = addr
		st.Lanes[i] = ls
		st.Queued += ls.Queued
		st.QueuedBytes += ls.QueuedBytes
		st.InFlight += ls.InFlight
		st.Connected = st.Connected && ls.Connected
		st.Dials += ls.Dials
		st.Failures += ls.Failures
		st.Calls += ls.Calls
		st.Sent += ls.Sent
		st.Delivered += ls.Delivered
		st.SentBytes += ls.SentBytes
		st.Dropped += ls.Dropped
	}
	return st
}

// lane is the sending side of one lane towards one node: a bounded queue
// and the goroutine (run) that owns the lane's connection and stream.
type lane struct {
	t    *Transport
	id   uint64
	kind Lane
	log  hclog.Logger

	wake chan struct{} // messages queued or overflow to report (capacity 1)
	kick chan struct{} // Node wants a connection now (capacity 1)
	stop chan struct{} // closed by stopAndWait
	done chan struct{} // closed when run returns

	lastOverflowReport time.Time // owned by run

	mu            sync.Mutex
	addr          string
	stopped       bool
	cancelAttempt context.CancelFunc // ends the current dial or connection
	queue         []queued           // FIFO from qhead
	qhead         int
	qbytes        int64
	overflow      bool            // a message was dropped for lack of room: report Unreachable
	cc            *rpc.ClientConn // the live connection, nil when down
	rc            schema.Raft     // the peer's Raft capability on cc
	changed       chan struct{}   // closed and replaced whenever cc changes
	st            LaneStats       // counters (queue fields are computed)
}

func newLane(t *Transport, id uint64, kind Lane, addr string) *lane {
	return &lane{
		t:       t,
		id:      id,
		kind:    kind,
		log:     t.log.With("peer", id, "lane", kind.String()),
		wake:    make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		addr:    addr,
		changed: make(chan struct{}),
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// enqueue adds m to the queue, or drops it if the queue is full (a single
// message larger than MaxQueueBytes is accepted into an empty queue, so
// that it can be sent at all).
func (p *lane) enqueue(m raft.Message) {
	size := msgSize(&m)
	cfg := &p.t.cfg
	p.mu.Lock()
	n := len(p.queue) - p.qhead
	if n >= cfg.MaxQueue || (n > 0 && p.qbytes+size > cfg.MaxQueueBytes) {
		p.st.Dropped++
		first := !p.overflow
		p.overflow = true
		p.mu.Unlock()
		if first {
			p.log.Debug("queue full; dropping messages", "msg", m.Type, "queued", n)
		}
		signal(p.wake)
		return
	}
	p.queue = append(p.queue, queued{m: m, size: size})
	p.qbytes += size
	p.mu.Unlock()
	signal(p.wake)
}

// dropQueue drops every queued message (they are older than the failure
// being handled; Raft retransmits) and returns how many there were.
func (p *lane) dropQueue() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.queue) - p.qhead
	p.st.Dropped += uint64(n)
	p.queue, p.qhead, p.qbytes = nil, 0, 0
	return n
}

// takeOverflow reports (once) whether messages were dropped for lack of
// room since the last call.
func (p *lane) takeOverflow() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.overflow
	p.overflow = false
	return o
}

// reportOverflow reports dropped messages as Unreachable, at most once per
// BackoffMin: a driver that keeps sending to a stalled peer would
// otherwise get a report per Send. Drops within the interval are reported
// with the next wake after it.
func (p *lane) reportOverflow() {
	if time.Since(p.lastOverflowReport) < p.cfg().BackoffMin {
		return
	}
	if p.takeOverflow() {
		p.lastOverflowReport = time.Now()
		p.t.cfg.Unreachable(p.id)
	}
}

func (p *lane) setAddr(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addr == addr {
		return
	}
	p.log.Info("peer address changed; reconnecting", "old", p.addr, "new", addr)
	p.addr = addr
	if p.cancelAttempt != nil {
		p.cancelAttempt()
	}
}

// stopAsync stops the lane without waiting for its goroutine.
func (p *lane) stopAsync() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stopped {
		p.stopped = true
		close(p.stop)
		if p.cancelAttempt != nil {
			p.cancelAttempt()
		}
	}
}

func (p *lane) stopAndWait() {
	p.stopAsync()
	<-p.done
}

// beginAttempt returns the address to dial and a context that ends with
// the attempt, or ok=false if the peer is stopped.
func (p *lane) beginAttempt() (ctx context.Context, addr string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil, "", false
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancelAttempt = cancel
	p.st.Dials++
	return ctx, p.addr, true
}

// endAttempt cancels the attempt's context and reports why it ended: the
// peer stopped, its address changed, or err.
func (p *lane) endAttempt(addr string, err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cancelAttempt()
	p.cancelAttempt = nil
	switch {
	case p.stopped:
		return errStopped
	case p.addr != addr:
		return errRedial
	}
	return err
}

// setConn publishes (or, with nil, withdraws) the live connection and
// the peer's Raft capability on it (borrowed: serve owns it).
func (p *lane) setConn(cc *rpc.ClientConn, rc schema.Raft) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cc, p.rc = cc, rc
	p.st.Connected = cc != nil
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *lane) count(f func(st *LaneStats)) {
	p.mu.Lock()
	f(&p.st)
	p.mu.Unlock()
}

func (p *lane) stats() (LaneStats, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.st
	st.Queued = len(p.queue) - p.qhead
	st.QueuedBytes = p.qbytes
	return st, p.addr
}

// raft returns the peer's Raft capability on the live connection,
// waiting for one.
func (p *lane) raft(ctx context.Context) (schema.Raft, error) {
	for {
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return schema.Raft{}, ErrClosed
		}
		if p.cc != nil {
			r := p.rc.AddRef()
			p.mu.Unlock()
			return r, nil
		}
		ch := p.changed
		p.mu.Unlock()
		signal(p.kick)
		select {
		case <-ch:
		case <-p.stop:
			return schema.Raft{}, ErrClosed
		case <-ctx.Done():
			return schema.Raft{}, fmt.Errorf("connect to node %d: %w", p.id, ctx.Err())
		}
	}
}

// run owns the peer's connection: it dials, serves the connection until it
// fails, and reconnects with backoff, until the peer is stopped.
func (p *lane) run() {
	defer close(p.done)
	cfg := &p.t.cfg
	up := false     // the last state logged at Info was "connected"
	logged := false // some state was logged at Info
	failures := 0   // consecutive failed attempts
	for {
		ctx, addr, ok := p.beginAttempt()
		if !ok {
			return
		}
		served := false
		cc, rc, ps, err := p.connect(ctx, addr)
		if err == nil {
			if !up {
				p.log.Info("connected to peer", "addr", addr)
			}
			up, logged = true, true
			p.setConn(cc, rc)
			served, err = p.serve(ctx, cc, rc, ps)
		}
		err = p.endAttempt(addr, err)
		if served {
			failures = 0
		}
		switch {
		case errors.Is(err, errStopped):
			if up {
				p.log.Info("disconnected from peer: stopped", "addr", addr)
			}
			return
		case errors.Is(err, errRedial):
			if cc != nil {
				p.cfg().Unreachable(p.id)
			}
			up = false
			continue
		}
		p.count(func(st *LaneStats) { st.Failures++ })
		dropped := p.dropQueue()
		p.takeOverflow()
		cfg.Unreachable(p.id)
		switch {
		case up:
			p.log.Info("lost connection to peer; reconnecting", "addr", addr, "error", err, "dropped", dropped)
		case !logged:
			p.log.Info("cannot reach peer; retrying", "addr", addr, "error", err)
		default:
			p.log.Debug("peer still unreachable", "addr", addr, "error", err, "attempts", failures+1)
		}
		up, logged = false, true
		failures++
		if !p.backoff(failures) {
			return
		}
	}
}

func (p *lane) cfg() *Config { return &p.t.cfg }

// backoff waits before the next attempt: full jitter over an exponential
// bound. A Node call waiting for a connection shortens it to BackoffMin.
// It returns false if the peer was stopped.
func (p *lane) backoff(failures int) bool {
	cfg := p.cfg()
	bound := cfg.BackoffMin
	for i := 1; i < failures && bound < cfg.BackoffMax; i++ {
		bound *= 2
	}
	bound = min(bound, cfg.BackoffMax)
	d := max(p.t.jitter(bound), time.Millisecond)
	start := time.Now()
	timer := time.NewTimer(d)
	defer timer.Stop()
	p.mu.Lock()
	addr := p.addr
	p.mu.Unlock()
	for {
		select {
		case <-timer.C:
			return true
		case <-p.stop:
			return false
		case <-p.wake:
			p.reportOverflow()
			p.mu.Lock()
			changed := p.addr != addr
			p.mu.Unlock()
			if changed {
				return true
			}
		case <-p.kick:
			rest := cfg.BackoffMin - time.Since(start)
			if rest <= 0 {
				return true
			}
			if rest < time.Until(start.Add(d)) {
				timer.Reset(rest)
			}
		}
	}
}

// connect dials addr, proves this node a member (Config.Authenticate),
// obtains the peer's Raft capability and opens this lane's stream,
// waiting until the peer has answered each step (which also avoids
// go-capnp's trouble with calls pipelined on an unresolved capability
// whose server uses call.Go).
func (p *lane) connect(ctx context.Context, addr string) (*rpc.ClientConn, schema.Raft, schema.PeerStream, error) {
	dctx, cancel := p.t.dialContext(ctx)
	defer cancel()
	cc, rc, err := p.t.dialRaft(dctx, p.id, addr)
	if err != nil {
		return nil, schema.Raft{}, schema.PeerStream{}, err
	}
	cfg := p.cfg()
	of, orelease := rc.Open(dctx, func(ps schema.Raft_open_Params) error {
		h, err := ps.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: cfg.ClusterID, from: cfg.LocalID, to: p.id, inc: cfg.Incarnation})
		ps.SetLane(p.kind.wire())
		return nil
	})
	ores, err := of.Struct()
	if err != nil {
		// Close first: releasing a question the peer never answered
		// blocks on a live connection.
		cc.Close()
		orelease()
		rc.Release()
		return nil, schema.Raft{}, schema.PeerStream{}, fmt.Errorf("open the %s stream to %s: %w", p.kind, addr, err)
	}
	ps := ores.Stream().AddRef()
	orelease()
	return cc, rc, ps, nil
}

// dialContext bounds one connection attempt by the dial timeout.
func (t *Transport) dialContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := t.cfg.Dial.Timeout
	if timeout <= 0 {
		timeout = rpc.DefaultDialTimeout
	}
	return context.WithTimeout(ctx, timeout)
}

// dialRaft dials peer id at addr, proves this node a member
// (Config.Authenticate) and obtains the peer's Raft capability, which the
// caller releases (after closing the connection, if it fails).
func (t *Transport) dialRaft(ctx context.Context, id uint64, addr string) (*rpc.ClientConn, schema.Raft, error) {
	dial := t.cfg.Dial
	if dial.TLSConfig != nil {
		dial.TLSConfig = expectNode(dial.TLSConfig, id)
	}
	cc, err := rpc.Dial(ctx, addr, dial)
	if err != nil {
		return nil, schema.Raft{}, err
	}
	fail := func(err error) (*rpc.ClientConn, schema.Raft, error) {
		// Close first: releasing a question the peer never answered
		// blocks on a live connection.
		cc.Close()
		return nil, schema.Raft{}, err
	}
	node := cc.Node()
	if auth := t.cfg.Authenticate; auth != nil {
		if node, err = auth(ctx, id, node); err != nil {
			return fail(fmt.Errorf("authenticate to %s: %w", addr, err))
		}
		defer node.Release()
	}
	f, release := node.Raft(ctx, nil)
	res, err := f.Struct()
	if err != nil {
		defer release()
		return fail(fmt.Errorf("obtain Raft capability from %s: %w", addr, err))
	}
	rc := res.Raft().AddRef()
	release()
	return cc, rc, nil
}

// expectNode returns cfg checking, after the usual verification, that a
// server certificate naming a node id (rpc.CertificateNodeID) names id:
// another member's certificate cannot answer at this member's address.
// A certificate naming no id is accepted, as the server side accepts one.
func expectNode(cfg *tls.Config, id uint64) *tls.Config {
	cfg = cfg.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return nil
		}
		got, ok, err := rpc.CertificateNodeID(cs.PeerCertificates[0])
		switch {
		case err != nil:
			return fmt.Errorf("node %d's certificate: %w", id, err)
		case ok && got != id:
			return fmt.Errorf("the certificate at node %d's address names node %d: not trusting it (check --peers)", id, got)
		}
		return nil
	}
	return cfg
}

// call is one send call (or keepalive probe) in flight.
type call struct {
	n        int              // messages carried
	first    raft.MessageType // the first one's type, for errors
	fut      *capnp.Future
	release  capnp.ReleaseFunc
	sent     time.Time
	released bool
	probe    bool // a keepalive probe (Node.info), not a send
}

// serve sends the queued messages on the stream, batched into send calls
// with up to Window calls in flight, until the connection fails or ctx
// ends. served reports whether any call returned.
//
// Calls are completed in send order by waiting on the oldest alone: the
// peer answers the calls of one stream in the order they arrive, so
// nothing is gained by watching the others, and not spawning a waiter per
// call saves a goroutine and a hand-off on every call.
func (p *lane) serve(ctx context.Context, cc *rpc.ClientConn, rc schema.Raft, ps schema.PeerStream) (served bool, err error) {
	cfg := p.cfg()
	var (
		pending  []*call // in send order; completed ones are removed from the front
		lastCall = time.Now()
		probing  bool
		batch    []raft.Message // reused between calls
	)
	defer func() {
		p.setConn(nil, schema.Raft{})
		// Close the connection first: go-capnp can block for ever
		// releasing a question its peer never answered on a live
		// connection. Closing fails every pending call.
		cc.Close()
		for _, c := range pending {
			if !c.released {
				c.release()
			}
		}
		ps.Release()
		rc.Release()
		p.count(func(st *LaneStats) { st.InFlight = 0 })
	}()
	start := func(c *call) {
		c.sent = time.Now()
		lastCall = c.sent
		pending = append(pending, c)
	}
	limit := p.maxWireSize()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for len(pending) < cfg.Window {
			batch = p.popBatch(batch[:0], limit)
			if len(batch) == 0 {
				break
			}
			c, err := p.issue(ps, batch)
			clear(batch)
			if err != nil {
				p.count(func(st *LaneStats) { st.Dropped += uint64(len(batch)) })
				p.log.Warn("dropping messages that cannot be sent", "messages", len(batch), "first", batch[0].Type.String(), "error", err)
				continue
			}
			start(c)
		}
		p.count(func(st *LaneStats) { st.InFlight = len(pending) })

		var (
			deadline time.Time
			oldest   <-chan struct{} // nil (never ready) when nothing is in flight
		)
		switch {
		case len(pending) > 0:
			deadline = pending[0].sent.Add(cfg.CallTimeout)
			oldest = pending[0].fut.Done()
		case cfg.KeepAlive > 0:
			deadline = lastCall.Add(cfg.KeepAlive)
		}
		if !deadline.IsZero() {
			timer.Reset(max(time.Until(deadline), 0))
		}
		select {
		case <-ctx.Done():
			return served, errStopped
		case <-cc.Done():
			return served, errors.New("connection closed")
		case <-p.wake:
			p.reportOverflow()
		case <-oldest:
			c := pending[0]
			pending[0] = nil
			pending = pending[1:]
			if c.probe {
				probing = false
			}
			if err := p.complete(c); err != nil {
				// Left in pending for the cleanup to release after closing.
				pending = append(pending, c)
				return served, err
			}
			served = true
		case <-timer.C:
			now := time.Now()
			if len(pending) > 0 {
				if now.Sub(pending[0].sent) >= cfg.CallTimeout {
					return served, fmt.Errorf("no return of %s within %v", describe(pending[0]), cfg.CallTimeout)
				}
			} else if cfg.KeepAlive > 0 && !probing && now.Sub(lastCall) >= cfg.KeepAlive {
				f, release := cc.Node().Info(context.Background(), nil)
				probing = true
				start(&call{fut: f.Future, release: release, probe: true})
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

func describe(c *call) string {
	if c.probe {
		return "keepalive probe"
	}
	return fmt.Sprintf("a send of %d messages (the first a %s)", c.n, c.first)
}

// complete handles the return of c and releases it; an error fails the
// connection.
func (p *lane) complete(c *call) error {
	st, err := c.fut.Struct()
	if c.probe {
		if err != nil && exc.IsType(err, exc.Disconnected) {
			return fmt.Errorf("keepalive probe: %w", err)
		}
		c.release()
		c.released = true
		return nil
	}
	if err != nil {
		// Left for serve's cleanup to release after closing.
		return fmt.Errorf("%s failed: %w", describe(c), err)
	}
	res := schema.PeerStream_send_Results(st)
	var nm *raft.NotMember
	if res.HasNotMember() {
		w, err := res.NotMember()
		if err != nil {
			return fmt.Errorf("read the return of %s: %w", describe(c), err)
		}
		nm = &raft.NotMember{Index: w.Index(), Term: w.Term()}
	}
	c.release()
	c.released = true
	p.count(func(st *LaneStats) { st.Delivered += uint64(c.n) })
	p.cfg().Observer.RoundTrip(p.id, p.kind, time.Since(c.sent))
	if nm != nil {
		p.cfg().NotMember(p.id, *nm)
	}
	return nil
}

// popBatch appends to batch the oldest queued messages that fit in one
// send call (at most MaxBatch, about MaxBatchBytes, or one message of up
// to limit bytes) and removes them from the queue. A message that is
// invalid or alone exceeds limit is dropped (the peer would abort the
// whole connection on reading it).
func (p *lane) popBatch(batch []raft.Message, limit int64) []raft.Message {
	max, maxBytes := p.cfg().MaxBatch, min(p.cfg().MaxBatchBytes, limit)
	p.mu.Lock()
	defer p.mu.Unlock()
	var size int64
	for p.qhead < len(p.queue) && len(batch) < max {
		q := &p.queue[p.qhead]
		if err := p.checkOutgoing(&q.m, q.size, limit); err != nil {
			p.st.Dropped++
			p.log.Warn("dropping message that cannot be sent", "msg", q.m.String(), "error", err)
		} else {
			if len(batch) > 0 && size+q.size > maxBytes {
				break
			}
			batch = append(batch, q.m)
			size += q.size
		}
		p.qbytes -= q.size
		*q = queued{}
		p.qhead++
	}
	p.st.SentBytes += uint64(size)
	if p.qhead == len(p.queue) {
		p.queue, p.qhead = p.queue[:0], 0
	} else if p.qhead >= 1024 && p.qhead*2 >= len(p.queue) {
		n := copy(p.queue, p.queue[p.qhead:])
		clear(p.queue[n:])
		p.queue, p.qhead = p.queue[:n], 0
	}
	return batch
}

// checkOutgoing refuses what must not be sent: what the encoder would fail
// on, a message over the frame limit, and a message from another node or
// storage incarnation than the stream's header names.
func (p *lane) checkOutgoing(m *raft.Message, size, limit int64) error {
	if err := validateOutgoing(m); err != nil {
		return err
	}
	if size > limit {
		return fmt.Errorf("message of about %d bytes exceeds the %d-byte frame limit", size, limit)
	}
	cfg := p.cfg()
	if m.From != cfg.LocalID || m.Incarnation != cfg.Incarnation {
		return fmt.Errorf("message from node %d incarnation %016x on the stream of node %d incarnation %016x",
			m.From, m.Incarnation, cfg.LocalID, cfg.Incarnation)
	}
	return nil
}

// issue starts the send call carrying msgs.
func (p *lane) issue(ps schema.PeerStream, msgs []raft.Message) (*call, error) {
	c := &call{n: len(msgs), first: msgs[0].Type}
	f, rel := ps.Send(context.Background(), func(params schema.PeerStream_send_Params) error {
		list, err := params.NewMsgs(int32(len(msgs)))
		if err != nil {
			return err
		}
		for i := range msgs {
			if err := encodeMessage(list.At(i), &msgs[i]); err != nil {
				return fmt.Errorf("encode %s: %w", msgs[i].Type, err)
			}
		}
		return nil
	})
	c.fut, c.release = f.Future, rel
	p.count(func(st *LaneStats) { st.Calls++; st.Sent += uint64(len(msgs)) })
	return c, nil
}

// maxWireSize is the largest message sent: the frame limit both ends are
// meant to share (Dial.MaxMessageSize, default rpc.DefaultMaxMessageSize)
// less room for the RPC envelope.
func (p *lane) maxWireSize() int64 {
	limit := p.cfg().Dial.MaxMessageSize
	if limit == 0 {
		limit = rpc.DefaultMaxMessageSize
	}
	return int64(limit) - min(int64(limit)/16, 64<<10)
}
