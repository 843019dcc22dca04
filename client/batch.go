package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/schema"
)

// request is one KV operation, kept across its attempts.
type request struct {
	// op is the operation. A write's op.Seq is its sequence number in
	// session (0 until one is assigned): a retry keeps them, so the
	// cluster applies the write at most once.
	op      kvwire.Op
	session uint64
}

func (r *request) write() bool { return r.op.IsWrite() }

// size is what the request counts towards a batch's size: its keys and
// values and room for the rest of its encoding.
func (r *request) size() int { return r.op.Bytes() + 32*r.op.Count() }

// describe names the operation and its key for messages; a long key is
// shortened (an error must not carry a key of kilobytes).
func (r *request) describe() string {
	if t := r.op.Txn; t != nil {
		return fmt.Sprintf("txn (%d compares, %d then, %d else)", len(t.Compares), len(t.Then), len(t.Else))
	}
	kind := r.op.Kind.String()
	if r.op.Prefix {
		kind += " prefix"
	}
	const max = 64
	if k := r.op.Key; len(k) > max {
		return fmt.Sprintf("%s %q... (a %d-byte key)", kind, k[:max], len(k))
	}
	return fmt.Sprintf("%s %q", kind, r.op.Key)
}

// Attempt states. The sender moves an attempt queued -> taken -> sent; the
// caller may abandon it before it is sent.
const (
	stateQueued int32 = iota
	stateTaken
	stateSent
	stateAbandoned
)

// attempt is one try of a request: queued, put in a batch, answered.
type attempt struct {
	req          *request
	session, seq uint64
	state        atomic.Int32
	done         chan struct{} // closed when res or err is set
	res          result
	err          error // the batch call failed (res is unset)
	cn           *conn // the connection it was sent on
}

// abandon withdraws the attempt if it was not sent; it reports whether it
// was withdrawn (and so certainly never reached a node).
func (a *attempt) abandon() bool {
	return a.state.CompareAndSwap(stateQueued, stateAbandoned) ||
		a.state.CompareAndSwap(stateTaken, stateAbandoned)
}

// result is the decoded answer to one operation, copied out of the message.
type result struct {
	revision uint64
	failed   bool
	code     ErrorCode
	message  string
	hint     uint64

	found     bool   // get: found; cas: found; delete: deleted; put: hadPrev
	succeeded bool   // cas
	count     uint64 // delete: the number of keys deleted
	kv        KeyValue
	kvs       []KeyValue
	more      bool
	txn       *TxnResponse
}

// batchKind is what a batch's answer waits for: the commit of its
// writes, a read barrier, or nothing. A batch is answered as a whole,
// once its slowest operation is: a read batched with writes would wait
// for their commit, and a serializable read for a linearizable read's
// barrier. So each kind has its own queue and its own batch calls in
// flight, and each batch is answered as soon as its kind allows.
type batchKind uint8

const (
	writeBatch batchKind = iota
	linearizableBatch
	serializableBatch
	batchKinds
)

func kindOf(r *request) batchKind {
	switch {
	case r.write():
		return writeBatch
	case r.op.Serializable:
		return serializableBatch
	}
	return linearizableBatch
}

// queue holds the attempts of one kind waiting for a batch, and counts
// their senders.
type queue struct {
	kind    batchKind
	mu      sync.Mutex
	pending []*attempt
	senders int // sender goroutines running, each with at most one batch in flight
	closed  bool
}

func (q *queue) close() {
	q.mu.Lock()
	pending := q.pending
	q.pending = nil
	q.closed = true
	q.mu.Unlock()
	for _, a := range pending {
		if a.state.CompareAndSwap(stateQueued, stateTaken) {
			a.err = ErrClosed
			close(a.done)
		}
	}
}

// enqueue queues a for the next batch of its kind. If fewer than the
// maximum senders of that kind are running, the caller becomes one:
// enqueue reports lead, and the caller must call lead(ctx, q), which
// sends a batch from its own goroutine (saving two goroutine hand-offs on
// a lone operation's path). It returns false if the client is closed.
func (c *Client) enqueue(a *attempt) (q *queue, ok, lead bool) {
	q = &c.queues[kindOf(a.req)]
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return q, false, false
	}
	q.pending = append(q.pending, a)
	lead = q.senders < c.opts.maxInFlight ||
		q.senders < c.maxSenders(q.kind) && c.fullBatchQueued(q)
	if lead {
		q.senders++
		c.wg.Add(1)
	}
	q.mu.Unlock()
	return q, true, lead
}

// maxSenders is how many batch calls of kind may be in flight at once:
// WithMaxInFlight on the current connection, or on each pooled one for
// reads spread over the endpoints. Beyond WithMaxInFlight, a sender
// starts, and goes on, only while a full batch is queued: more calls in
// flight make smaller batches, and each call costs both ends more CPU
// than an operation in a batch (measured: spreading 256 goroutines' reads
// over three nodes with a call in flight on each halved the reads per
// second on 2 shared cores), so the extra calls are only for a load one
// connection's calls cannot carry.
func (c *Client) maxSenders(kind batchKind) int {
	if kind != writeBatch && c.spreading() {
		return c.opts.maxInFlight * max(1, int(c.pool.ready.Load()))
	}
	return c.opts.maxInFlight
}

// fullBatchQueued reports whether a full batch waits in q (q.mu held).
func (c *Client) fullBatchQueued(q *queue) bool { return len(q.pending) >= c.opts.maxBatch }

// readyConnFor is readyConn for a batch of kind: reads spreading over
// the endpoints take a pooled connection first.
func (c *Client) readyConnFor(kind batchKind) *conn {
	if kind != writeBatch && c.spreading() {
		if cn := c.readConn(); cn != nil {
			return cn
		}
	}
	return c.readyConn()
}

// sender sends batches until q is empty.
func (c *Client) sender(q *queue) {
	defer c.wg.Done()
	for {
		batch := c.take(q)
		if batch == nil {
			return
		}
		c.sendBatch(q.kind, batch)
	}
}

// lead is a caller's turn as a sender (see enqueue): it sends one batch
// and waits for its answer on the caller's goroutine, then hands the
// sender's role to a goroutine if more is queued. A caller whose ctx ends
// first, or who would have to wait for a connection, hands the batch over
// at once, so ctx is honoured as when a goroutine sends.
func (c *Client) lead(ctx context.Context, q *queue) {
	batch := c.take(q)
	if batch == nil {
		c.wg.Done()
		return
	}
	cn := c.readyConnFor(q.kind)
	if cn == nil {
		c.handOff(q, func() { c.sendBatch(q.kind, batch) })
		return
	}
	call := c.issue(cn, batch)
	if call != nil {
		select {
		case <-call.f.Done():
		case <-ctx.Done():
			c.handOff(q, call.finish)
			return
		}
		call.finish()
	}
	if next := c.take(q); next != nil {
		c.handOff(q, func() { c.sendBatch(q.kind, next) })
		return
	}
	c.wg.Done()
}

// handOff passes a caller's sender role to a goroutine, which runs first
// (the caller's unfinished batch) and then sends until the queue is empty.
func (c *Client) handOff(q *queue, first func()) {
	go func() {
		first()
		c.sender(q)
	}()
}

// take removes the next batch from q: the queued attempts in order, up
// to the batch limits, whose writes all belong to one session. It returns
// nil, and ends the calling sender, when nothing is queued, or when the
// sender is an extra one (see maxSenders) and no full batch is.
func (c *Client) take(q *queue) []*attempt {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.senders > c.opts.maxInFlight && !c.fullBatchQueued(q) {
		// An extra sender (see maxSenders) ends once no full batch is
		// queued; the others send what is.
		q.senders--
		return nil
	}
	var batch []*attempt
	var session uint64
	bytes := 0
	count := 0 // a txn counts its compares and operations too
	rest := q.pending[:0]
	for i, a := range q.pending {
		if len(batch) > 0 && (count+a.req.op.Count() > c.opts.maxBatch || bytes+a.req.size() > c.opts.maxBatchBytes) {
			rest = append(rest, q.pending[i:]...)
			break
		}
		if a.session != 0 {
			if session != 0 && a.session != session {
				rest = append(rest, a) // another session's write: a later batch
				continue
			}
			session = a.session
		}
		if !a.state.CompareAndSwap(stateQueued, stateTaken) {
			continue // abandoned by its caller
		}
		batch = append(batch, a)
		bytes += a.req.size()
		count += a.req.op.Count()
	}
	for i := len(rest); i < len(q.pending); i++ {
		q.pending[i] = nil
	}
	q.pending = rest
	if len(batch) == 0 {
		// Only abandoned attempts were queued (a batch member is needed
		// to hold anything back), so the queue is empty now.
		q.senders--
		return nil
	}
	return batch
}

// deliver finishes the attempts of a batch with err.
func deliver(batch []*attempt, err error) {
	for _, a := range batch {
		a.err = err
		close(a.done)
	}
}

// sendBatch makes one KV.batch call for batch, of kind, and delivers the
// results.
func (c *Client) sendBatch(kind batchKind, batch []*attempt) {
	var cn *conn
	var err error
	if kind != writeBatch && c.spreading() {
		cn = c.readConn()
	}
	if cn == nil {
		cn, err = c.acquire(c.ctx)
	}
	if err != nil {
		if c.ctx.Err() != nil {
			err = ErrClosed
		}
		deliver(batch, err)
		return
	}
	if call := c.issue(cn, batch); call != nil {
		call.finish()
	}
}

// batchCall is a KV.batch call in flight.
type batchCall struct {
	c       *Client
	cn      *conn
	sent    []*attempt
	read    bool // counted in cn.readsInFlight
	ctx     context.Context
	cancel  context.CancelFunc
	f       schema.KV_batch_Results_Future
	release func()
	unwatch func() // ends watchStall
}

// issue sends batch on cn, which it releases once the call is finished;
// it returns nil if nothing was left to send.
func (c *Client) issue(cn *conn, batch []*attempt) *batchCall {
	// Attempts abandoned while the connection was dialled drop out now;
	// the rest are sent.
	sent := batch[:0]
	var session uint64
	for _, a := range batch {
		if a.state.CompareAndSwap(stateTaken, stateSent) {
			a.cn = cn
			sent = append(sent, a)
			if a.session != 0 {
				session = a.session
			}
		}
	}
	if len(sent) == 0 {
		c.release(cn)
		return nil
	}
	if session != 0 {
		c.sess.wrote(session)
	}
	acked := c.sess.ackedBelow(session)
	read := !sent[0].req.write() // a batch holds one kind of operation
	if read {
		cn.readsInFlight.Add(1)
	}

	ctx, cancel := context.WithTimeout(c.ctx, c.opts.requestTimeout)
	f, release := cn.kv.Batch(ctx, func(p schema.KV_batch_Params) error {
		ops, err := kvwire.NewRequest(p, kvwire.Header{Session: session, AckedBelow: acked}, len(sent))
		if err != nil {
			return err
		}
		for i, a := range sent {
			op := a.req.op
			op.Seq = a.seq
			if err := kvwire.EncodeOp(ops.At(i), &op); err != nil {
				return err
			}
		}
		return nil
	})
	return &batchCall{c: c, cn: cn, sent: sent, read: read, ctx: ctx, cancel: cancel, f: f, release: release,
		unwatch: c.watchStall(cn, f.Done())}
}

// finish waits for the call's answer and delivers the results.
func (b *batchCall) finish() {
	c, cn, sent := b.c, b.cn, b.sent
	defer c.release(cn)
	if b.read {
		defer cn.readsInFlight.Add(-1)
	}
	defer b.cancel()
	defer b.release()
	res, err := b.f.Struct()
	b.unwatch()
	if err != nil {
		deliver(sent, c.batchError(cn, b.ctx, err))
		return
	}
	c.servedOnce(cn)
	list, err := kvwire.Results(res, len(sent))
	if err != nil {
		deliver(sent, &ServerError{Code: CodeInternal, Message: err.Error() + " (a bug in the node)", Addr: cn.addr()})
		return
	}
	for i, a := range sent {
		a.res, a.err = decodeResult(list.At(i), a.req.op.Kind, cn.addr())
		close(a.done)
	}
}

// transportError reports a batch call that failed on the way: the
// connection was lost or the attempt timed out. The operation is retried.
type transportError struct {
	addr    string
	timeout bool
	err     error
}

// Error says which node failed to answer, and how.
func (e *transportError) Error() string {
	if e.timeout {
		return fmt.Sprintf("no answer from %s in time", e.addr)
	}
	return fmt.Sprintf("connection to %s lost: %s", e.addr, rootMessage(e.err))
}

func (e *transportError) Unwrap() error { return e.err }

// batchError classifies the error of a failed batch call on cn.
func (c *Client) batchError(cn *conn, ctx context.Context, err error) error {
	if pe := permissionError(err, cn.addr()); pe != nil {
		// An answer, not a failure of the node: not retried, and the
		// connection stays.
		return pe
	}
	switch {
	case c.ctx.Err() != nil:
		return ErrClosed
	case c.connLost(cn, err):
		return &transportError{addr: cn.addr(), err: err}
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		// No answer within the request timeout, which is above the
		// node's own: it is stalled or overloaded. Try another.
		c.moveOn(cn)
		return &transportError{addr: cn.addr(), timeout: true, err: err}
	case exc.IsType(err, exc.Unimplemented):
		return &ServerError{Code: CodeInternal, Addr: cn.addr(),
			Message: "the node does not serve the key-value store (" + rootMessage(err) + "); is it a raftnode of this version?"}
	default:
		return &ServerError{Code: CodeInternal, Addr: cn.addr(), Message: rootMessage(err)}
	}
}

// copyKV copies a KeyValue out of its message.
func copyKV(kv *kvwire.KeyValue) KeyValue {
	return KeyValue{
		Key:            string(kv.Key),
		Value:          append([]byte{}, kv.Value...),
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Version:        kv.Version,
		Lease:          kv.Lease,
	}
}

// decodeResult copies the answer to one operation of kind out of src.
func decodeResult(src schema.Result, kind kvwire.Kind, addr string) (result, error) {
	r, err := kvwire.DecodeResult(src, kind)
	if err != nil {
		return result{}, &ServerError{Code: CodeInternal, Addr: addr,
			Message: fmt.Sprintf("malformed answer to %s: %v (a bug in the node)", kind, err)}
	}
	out := result{revision: r.Revision}
	if e := r.Err; e != nil {
		out.failed, out.code, out.hint = true, ErrorCode(e.Code), e.LeaderHint
		out.message = trimCode(out.code, e.Message)
		return out, nil
	}
	switch kind {
	case kvwire.Put, kvwire.Get:
		out.found = r.Found
		if r.Found {
			out.kv = copyKV(&r.KV)
		}
	case kvwire.Delete:
		out.found, out.count = r.Succeeded, r.Count
		if r.Succeeded && r.Found {
			out.kv = copyKV(&r.KV)
		}
	case kvwire.CAS:
		out.succeeded, out.found = r.Succeeded, r.Found
		if !r.Succeeded && r.Found {
			out.kv = copyKV(&r.KV)
		}
	case kvwire.Range:
		out.kvs = make([]KeyValue, len(r.KVs))
		for i := range r.KVs {
			out.kvs[i] = copyKV(&r.KVs[i])
		}
		out.more = r.More
	case kvwire.Txn:
		out.txn = txnResponse(&r)
	}
	return out, nil
}
