package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/schema"
)

// opKind is the kind of a KV operation.
type opKind uint8

const (
	kindPut opKind = iota
	kindGet
	kindDelete
	kindCas
	kindRange
)

func (k opKind) String() string {
	return [...]string{"put", "get", "delete", "cas", "range"}[k]
}

// request is one KV operation, kept across its attempts.
type request struct {
	kind         opKind
	key          []byte
	value        []byte // put: the value; cas: the new value
	cmp          Compare
	casDelete    bool
	serializable bool
	after        []byte // range
	limit        uint32 // range

	// Writes: the session and sequence number the write carries. A retry
	// keeps them, so the cluster applies the write at most once.
	session, seq uint64
}

func (r *request) write() bool {
	return r.kind == kindPut || r.kind == kindDelete || r.kind == kindCas
}

func (r *request) size() int { return len(r.key) + len(r.value) + len(r.cmp.value) + len(r.after) + 32 }

// describe names the operation and its key for messages; a long key is
// shortened (an error must not carry a key of kilobytes).
func (r *request) describe() string {
	const max = 64
	if len(r.key) > max {
		return fmt.Sprintf("%s %q... (a %d-byte key)", r.kind, r.key[:max], len(r.key))
	}
	return fmt.Sprintf("%s %q", r.kind, r.key)
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

	found     bool // get: found; cas: found; delete: deleted; put: hadPrev
	succeeded bool // cas
	kv        KeyValue
	kvs       []KeyValue
	more      bool
}

// queue holds the attempts waiting for a batch, and counts the senders.
type queue struct {
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

// enqueue queues a for the next batch. If fewer than the maximum senders
// are running, the caller becomes one: enqueue reports lead, and the
// caller must call lead(ctx), which sends a batch from its own goroutine
// (saving two goroutine hand-offs on a lone operation's path). It returns
// false if the client is closed.
func (c *Client) enqueue(a *attempt) (ok, lead bool) {
	q := &c.q
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false, false
	}
	q.pending = append(q.pending, a)
	lead = q.senders < c.opts.maxInFlight
	if lead {
		q.senders++
		c.wg.Add(1)
	}
	q.mu.Unlock()
	return true, lead
}

// sender sends batches until the queue is empty.
func (c *Client) sender() {
	defer c.wg.Done()
	for {
		batch := c.take()
		if batch == nil {
			return
		}
		c.sendBatch(batch)
	}
}

// lead is a caller's turn as a sender (see enqueue): it sends one batch
// and waits for its answer on the caller's goroutine, then hands the
// sender's role to a goroutine if more is queued. A caller whose ctx ends
// first, or who would have to wait for a connection, hands the batch over
// at once, so ctx is honoured as when a goroutine sends.
func (c *Client) lead(ctx context.Context) {
	batch := c.take()
	if batch == nil {
		c.wg.Done()
		return
	}
	cn := c.readyConn()
	if cn == nil {
		c.handOff(func() { c.sendBatch(batch) })
		return
	}
	call := c.issue(cn, batch)
	if call != nil {
		select {
		case <-call.f.Done():
		case <-ctx.Done():
			c.handOff(call.finish)
			return
		}
		call.finish()
	}
	if next := c.take(); next != nil {
		c.handOff(func() { c.sendBatch(next) })
		return
	}
	c.wg.Done()
}

// handOff passes a caller's sender role to a goroutine, which runs first
// (the caller's unfinished batch) and then sends until the queue is empty.
func (c *Client) handOff(first func()) {
	go func() {
		first()
		c.sender()
	}()
}

// take removes the next batch from the queue: the queued attempts in order,
// up to the batch limits, whose writes all belong to one session. It
// returns nil, and ends the calling sender, when nothing is queued.
func (c *Client) take() []*attempt {
	q := &c.q
	q.mu.Lock()
	defer q.mu.Unlock()
	var batch []*attempt
	var session uint64
	bytes := 0
	rest := q.pending[:0]
	for i, a := range q.pending {
		if len(batch) >= c.opts.maxBatch || (len(batch) > 0 && bytes+a.req.size() > c.opts.maxBatchBytes) {
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

// sendBatch makes one KV.batch call for batch and delivers the results.
func (c *Client) sendBatch(batch []*attempt) {
	cn, err := c.acquire(c.ctx)
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

	ctx, cancel := context.WithTimeout(c.ctx, c.opts.requestTimeout)
	f, release := cn.kv.Batch(ctx, func(p schema.KV_batch_Params) error {
		req, err := p.NewReq()
		if err != nil {
			return err
		}
		req.SetSession(session)
		req.SetAckedBelow(acked)
		ops, err := req.NewOps(int32(len(sent)))
		if err != nil {
			return err
		}
		for i, a := range sent {
			if err := encodeOp(ops.At(i), a); err != nil {
				return err
			}
		}
		return nil
	})
	return &batchCall{c: c, cn: cn, sent: sent, ctx: ctx, cancel: cancel, f: f, release: release,
		unwatch: c.watchStall(cn, f.Done())}
}

// finish waits for the call's answer and delivers the results.
func (b *batchCall) finish() {
	c, cn, sent := b.c, b.cn, b.sent
	defer c.release(cn)
	defer b.cancel()
	defer b.release()
	res, err := b.f.Struct()
	b.unwatch()
	if err != nil {
		deliver(sent, c.batchError(cn, b.ctx, err))
		return
	}
	list, err := res.Results()
	if err == nil && list.Len() != len(sent) {
		err = fmt.Errorf("%d results answered for %d operations (a bug in the node)", list.Len(), len(sent))
	}
	if err != nil {
		deliver(sent, &ServerError{Code: CodeInternal, Message: err.Error(), Addr: cn.addr()})
		return
	}
	for i, a := range sent {
		a.res, a.err = decodeResult(list.At(i), a.req.kind, cn.addr())
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

// encodeOp writes attempt a into op.
func encodeOp(op schema.Op, a *attempt) error {
	r := a.req
	op.SetSeq(a.seq)
	consistency := schema.Consistency_linearizable
	if r.serializable {
		consistency = schema.Consistency_serializable
	}
	switch r.kind {
	case kindPut:
		p, err := op.NewPut()
		if err != nil {
			return err
		}
		if err := p.SetKey(r.key); err != nil {
			return err
		}
		return p.SetValue(r.value)
	case kindGet:
		g, err := op.NewGet()
		if err != nil {
			return err
		}
		g.SetConsistency(consistency)
		return g.SetKey(r.key)
	case kindDelete:
		d, err := op.NewDelete()
		if err != nil {
			return err
		}
		return d.SetKey(r.key)
	case kindCas:
		cs, err := op.NewCas()
		if err != nil {
			return err
		}
		if err := cs.SetKey(r.key); err != nil {
			return err
		}
		switch r.cmp.kind {
		case cmpValue:
			if err := cs.Expected().SetValue(r.cmp.value); err != nil {
				return err
			}
		case cmpModRevision:
			cs.Expected().SetModRevision(r.cmp.rev)
		default:
			cs.Expected().SetAbsent()
		}
		cs.SetDelete(r.casDelete)
		if r.casDelete {
			return nil
		}
		return cs.SetNewValue(r.value)
	case kindRange:
		rg, err := op.NewRange()
		if err != nil {
			return err
		}
		if err := rg.SetPrefix(r.key); err != nil {
			return err
		}
		if len(r.after) > 0 {
			if err := rg.SetAfter(r.after); err != nil {
				return err
			}
		}
		rg.SetLimit(r.limit)
		rg.SetConsistency(consistency)
		return nil
	}
	return fmt.Errorf("unknown operation kind %d", r.kind)
}

// decodeKV copies a KeyValue out of its message.
func decodeKV(kv schema.KeyValue) KeyValue {
	k, _ := kv.Key()
	v, _ := kv.Value()
	return KeyValue{
		Key:            string(k),
		Value:          append([]byte{}, v...),
		CreateRevision: kv.CreateRevision(),
		ModRevision:    kv.ModRevision(),
		Version:        kv.Version(),
	}
}

// resultWhich is the result kind that answers each operation kind.
var resultWhich = [...]schema.Result_Which{
	kindPut: schema.Result_Which_put, kindGet: schema.Result_Which_get, kindDelete: schema.Result_Which_delete,
	kindCas: schema.Result_Which_cas, kindRange: schema.Result_Which_range,
}

// decodeResult copies the answer to one operation of kind out of r.
func decodeResult(r schema.Result, kind opKind, addr string) (result, error) {
	out := result{revision: r.Revision()}
	bad := func(err error) (result, error) {
		return result{}, &ServerError{Code: CodeInternal, Addr: addr,
			Message: fmt.Sprintf("malformed answer to %s: %v (a bug in the node)", kind, err)}
	}
	which := r.Which()
	if which == schema.Result_Which_error {
		e, err := r.Error()
		if err != nil {
			return bad(err)
		}
		msg, _ := e.Message_()
		out.failed, out.code, out.hint = true, ErrorCode(e.Code()), e.LeaderHint()
		out.message = trimCode(out.code, msg)
		return out, nil
	}
	if which != resultWhich[kind] {
		return bad(fmt.Errorf("a %v result", which))
	}
	switch kind {
	case kindPut:
		p, err := r.Put()
		if err != nil {
			return bad(err)
		}
		out.found = p.HadPrev()
		if out.found {
			prev, err := p.Prev()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(prev)
		}
	case kindGet:
		g, err := r.Get()
		if err != nil {
			return bad(err)
		}
		out.found = g.Found()
		if out.found {
			kv, err := g.Kv()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(kv)
		}
	case kindDelete:
		d, err := r.Delete()
		if err != nil {
			return bad(err)
		}
		out.found = d.Deleted()
		if out.found && d.HasPrev() {
			prev, err := d.Prev()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(prev)
		}
	case kindCas:
		cs, err := r.Cas()
		if err != nil {
			return bad(err)
		}
		out.succeeded, out.found = cs.Succeeded(), cs.Found()
		if !out.succeeded && out.found {
			cur, err := cs.Current()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(cur)
		}
	case kindRange:
		rg, err := r.Range()
		if err != nil {
			return bad(err)
		}
		list, err := rg.Kvs()
		if err != nil {
			return bad(err)
		}
		out.kvs = make([]KeyValue, list.Len())
		for i := range out.kvs {
			out.kvs[i] = decodeKV(list.At(i))
		}
		out.more = rg.More()
	}
	return out, nil
}
