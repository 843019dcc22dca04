package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/rpc"
)

// KeyValue is a key's state in the store.
type KeyValue struct {
	Key            string
	Value          []byte
	CreateRevision uint64 // revision of the write that created the key
	ModRevision    uint64 // revision of the last write to the key
	Version        uint64 // writes to the key since it was created
	Lease          uint64 // the lease the key is attached to (0: none)
}

// Page is one page of a Range.
type Page struct {
	KVs []KeyValue
	// More says another page follows; ask for it with After(the last key).
	More bool
	// Revision is the store's revision at which the page was read.
	Revision uint64
}

// ReadOption modifies a read.
type ReadOption func(*request)

// Serializable makes a read be served from the receiving node's state as
// it is: possibly stale, but needing no leader and no round to confirm
// one. Reads are linearizable by default.
func Serializable() ReadOption { return func(r *request) { r.op.Serializable = true } }

// After makes a Range start strictly after key (the last key of the
// previous page). It has no effect on Get.
func After(key string) ReadOption {
	return func(r *request) {
		if key != "" { // the empty start is no start: leave it unset
			r.op.After = []byte(key)
		}
	}
}

// Compare is the condition of a compare-and-swap or compare-and-delete.
type Compare struct {
	kind  kvwire.CompareKind
	value []byte
	rev   uint64
}

// IfValue holds when the key exists with exactly value.
func IfValue(value []byte) Compare { return Compare{kind: kvwire.CompareValue, value: value} }

// IfModRevision holds when the key was last written at revision rev
// (KeyValue.ModRevision).
func IfModRevision(rev uint64) Compare { return Compare{kind: kvwire.CompareModRevision, rev: rev} }

// IfAbsent holds when the key does not exist.
func IfAbsent() Compare { return Compare{kind: kvwire.CompareAbsent} }

// WriteOption modifies a Put (or a transaction's OpPut).
type WriteOption func(*writeOptions)

// writeOptions is what the WriteOptions of a put set.
type writeOptions struct{ lease uint64 }

// applyWrite sets opts on o.
func applyWrite(o *kvwire.Op, opts []WriteOption) {
	var w writeOptions
	for _, opt := range opts {
		opt(&w)
	}
	o.Lease = w.lease
}

// WithLease attaches the key to lease id (see Grant): the key is deleted
// when the lease is revoked or expires. A lease unknown to the cluster
// fails the put with ErrLeaseNotFound.
func WithLease(id uint64) WriteOption { return func(w *writeOptions) { w.lease = id } }

// Put sets key to value and returns the store's revision after the write.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (rev uint64, err error) {
	req := putRequest(key, value)
	applyWrite(&req.op, opts)
	r, err := c.do(ctx, req)
	if err != nil {
		return 0, err
	}
	return r.revision, nil
}

// Get returns key's state. It returns an error matching ErrNotFound when
// the key does not exist.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) (KeyValue, error) {
	r, err := c.do(ctx, getRequest(key, opts))
	if err != nil {
		return KeyValue{}, err
	}
	if !r.found {
		return KeyValue{}, fmt.Errorf("get %q: %w", key, ErrNotFound)
	}
	return r.kv, nil
}

// Delete removes key. existed says whether it existed; rev is the store's
// revision after the operation.
func (c *Client) Delete(ctx context.Context, key string) (existed bool, rev uint64, err error) {
	r, err := c.do(ctx, deleteRequest(key))
	if err != nil {
		return false, 0, err
	}
	return r.found, r.revision, nil
}

// DeletePrefix removes every key that starts with prefix, all at one
// revision (as etcd's DeleteRange with a prefix): deleted is how many
// keys it removed, rev the store's revision after it (unchanged when it
// removed none). Watchers see one delete event per key. The empty prefix
// is refused (a *ServerError with CodeInvalidArgument) rather than taken
// as every key. The
// previous values are not returned; to have them, range and delete the
// prefix in one transaction (OpRange, OpDeletePrefix), or watch with the
// previous values. A prefix holding more than 4 MiB of keys and values
// (each key counting 64 bytes more) is refused with ErrTooLarge and
// nothing is deleted: delete narrower prefixes.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (deleted uint64, rev uint64, err error) {
	req := deletePrefixRequest(prefix)
	if prefix == "" {
		return 0, 0, fmt.Errorf("%s: %w", req.describe(), &ServerError{Code: CodeInvalidArgument,
			Message: "the empty prefix would delete every key: refused (delete the prefixes in use one by one)"})
	}
	r, err := c.do(ctx, req)
	if err != nil {
		return 0, 0, err
	}
	return r.count, r.revision, nil
}

// CompareAndSwap sets key to value if its current state matches expect,
// and returns the store's revision after the write. When the compare
// fails, nothing is written and the error is a *CompareFailedError
// (errors.Is(err, ErrCompareFailed)) holding the key's current state.
func (c *Client) CompareAndSwap(ctx context.Context, key string, expect Compare, value []byte) (rev uint64, err error) {
	return c.cas(ctx, key, expect, value, false)
}

// CompareAndDelete deletes key if its current state matches expect; see
// CompareAndSwap.
func (c *Client) CompareAndDelete(ctx context.Context, key string, expect Compare) (rev uint64, err error) {
	return c.cas(ctx, key, expect, nil, true)
}

func (c *Client) cas(ctx context.Context, key string, expect Compare, value []byte, del bool) (uint64, error) {
	req := casRequest(key, expect, value, del)
	if expect.kind == 0 {
		return 0, fmt.Errorf("%s: no compare given; use IfValue, IfModRevision or IfAbsent", req.describe())
	}
	r, err := c.do(ctx, req)
	if err != nil {
		return 0, err
	}
	if !r.succeeded {
		e := &CompareFailedError{Key: key, Revision: r.revision}
		if r.found {
			kv := r.kv
			e.Current = &kv
		}
		return 0, e
	}
	return r.revision, nil
}

// Range returns the keys starting with prefix, in byte order, at most
// limit of them (0: the node's maximum page). Page.More says whether more
// follow; pass After(last key) for the next page.
func (c *Client) Range(ctx context.Context, prefix string, limit int, opts ...ReadOption) (Page, error) {
	if limit < 0 || limit > 1<<31 {
		return Page{}, fmt.Errorf("range %q: limit %d out of range; use 0 for the node's maximum", prefix, limit)
	}
	r, err := c.do(ctx, rangeRequest(prefix, uint32(limit), opts))
	if err != nil {
		return Page{}, err
	}
	return Page{KVs: r.kvs, More: r.more, Revision: r.revision}, nil
}

// The requests of the operations. What they hold is what the client
// sends (kvwire encodes every field of an Op as it is).

func putRequest(key string, value []byte) *request {
	return &request{op: kvwire.Op{Kind: kvwire.Put, Key: []byte(key), Value: value}}
}

func getRequest(key string, opts []ReadOption) *request {
	req := &request{op: kvwire.Op{Kind: kvwire.Get, Key: []byte(key)}}
	for _, o := range opts {
		o(req)
	}
	return req
}

func deleteRequest(key string) *request {
	return &request{op: kvwire.Op{Kind: kvwire.Delete, Key: []byte(key)}}
}

func deletePrefixRequest(prefix string) *request {
	return &request{op: kvwire.Op{Kind: kvwire.Delete, Key: []byte(prefix), Prefix: true}}
}

// casRequest is a compare-and-swap of key to value, or a
// compare-and-delete (del), whose new value is left unset.
func casRequest(key string, expect Compare, value []byte, del bool) *request {
	if del {
		value = nil
	}
	return &request{op: kvwire.Op{Kind: kvwire.CAS, Key: []byte(key), Value: value, DeleteOnSuccess: del,
		Compare: expect.kind, CompareValue: expect.value, CompareRevision: expect.rev}}
}

func rangeRequest(prefix string, limit uint32, opts []ReadOption) *request {
	req := &request{op: kvwire.Op{Kind: kvwire.Range, Key: []byte(prefix), Limit: limit}}
	for _, o := range opts {
		o(req)
	}
	return req
}

// Backoff between retries: exponential from backoffMin to backoffMax,
// with jitter.
const (
	backoffMin = 5 * time.Millisecond
	backoffMax = 500 * time.Millisecond
)

type backoff struct{ d time.Duration }

// wait sleeps for the next backoff step, or until ctx or the client ends.
func (b *backoff) wait(ctx context.Context, closed <-chan struct{}) {
	if b.d == 0 {
		b.d = backoffMin
	} else {
		b.d = min(2*b.d, backoffMax)
	}
	d := b.d/2 + rand.N(b.d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-closed:
	}
}

// do runs req until it succeeds, fails for good, or ctx ends; see the
// package comment for what is retried.
func (c *Client) do(ctx context.Context, req *request) (res result, err error) {
	write := req.write()
	maybeApplied := false // an attempt of this write may have reached a node
	var last error        // the last transient failure
	var b backoff
	attempts := 0 // tries begun, counting session opens
	defer func() {
		if req.op.Seq != 0 {
			c.sess.complete(req.session, req.op.Seq)
		}
	}()
	fail := func(err error) (result, error) {
		if write && maybeApplied {
			return result{}, &unknownOutcomeError{op: req.describe(), what: writeOutcome, cause: err}
		}
		return result{}, err
	}
	giveUp := func(ctxErr error) (result, error) {
		switch {
		case write && maybeApplied:
			return fail(errors.Join(last, ctxErr))
		case attempts == 0:
			return result{}, fmt.Errorf("%s: %w", req.describe(), ctxErr)
		default:
			return result{}, unavailable(req.describe(), last, ctxErr)
		}
	}
	if err := c.checkSize(req); err != nil {
		return result{}, err
	}
	if n := req.size(); n > c.maxOpBytes() {
		// A message over the node's limit would make it drop the whole
		// connection, and the retry would do it again.
		return result{}, &ServerError{Code: CodeTooLarge, Message: fmt.Sprintf(
			"%s: %d bytes, over the client's limit of %d for one operation", req.describe(), n, c.maxOpBytes())}
	}
	for {
		if err := ctx.Err(); err != nil {
			return giveUp(err)
		}
		attempts++
		if write && req.op.Seq == 0 {
			id, seq, err := c.assign(ctx)
			switch {
			case err == nil:
				req.session, req.op.Seq = id, seq
			case errors.Is(err, ErrClosed):
				return fail(ErrClosed)
			case ctx.Err() != nil:
				return giveUp(ctx.Err())
			case transient(err):
				last = err
				b.wait(ctx, c.ctx.Done())
				continue
			default:
				return fail(fmt.Errorf("%s: opening a session: %w", req.describe(), err))
			}
		}
		a := &attempt{req: req, session: req.session, seq: req.op.Seq, done: make(chan struct{})}
		q, ok, lead := c.enqueue(a)
		if !ok {
			return fail(ErrClosed)
		}
		if lead {
			c.lead(ctx, q)
		}
		select {
		case <-a.done:
		case <-ctx.Done():
			if !a.abandon() && write {
				maybeApplied = true
			}
			return giveUp(ctx.Err())
		}
		if a.err != nil {
			var te *transportError
			switch {
			case errors.Is(a.err, ErrClosed):
				return fail(fmt.Errorf("%s: %w", req.describe(), ErrClosed))
			case errors.As(a.err, &te):
				maybeApplied = maybeApplied || write
				last = a.err
			case transient(a.err):
				last = a.err // the node could not be reached: not sent
			default:
				return fail(fmt.Errorf("%s: %w", req.describe(), a.err))
			}
			b.wait(ctx, c.ctx.Done())
			continue
		}
		r := a.res
		if !r.failed {
			return r, nil
		}
		se := &ServerError{Code: r.code, Message: r.message, Addr: a.cn.addr(), LeaderHint: r.hint}
		switch r.code {
		case CodeUnavailable, CodeShuttingDown:
			// Nothing was applied. The node is cut off from the leader or
			// stopping: another may do better.
			last = se
			c.moveOn(a.cn)
		case CodeOutcomeUnknown, CodeTimeout:
			maybeApplied = maybeApplied || write
			last = se
			if r.code == CodeTimeout {
				c.moveOn(a.cn)
			}
		case CodeSessionExpired:
			if !write {
				return fail(fmt.Errorf("%s: %w", req.describe(), se))
			}
			c.sess.expire(req.session)
			if maybeApplied {
				return fail(fmt.Errorf("the retry found the session expired: %w", se))
			}
			// Never applied: resend in a new session.
			c.sess.complete(req.session, req.op.Seq)
			req.session, req.op.Seq = 0, 0
			last = se
			continue
		case CodeStaleSequence:
			return fail(fmt.Errorf("%s: the cluster forgot this write's result: %w", req.describe(), se))
		default:
			return fail(fmt.Errorf("%s: %w", req.describe(), se))
		}
		b.wait(ctx, c.ctx.Done())
	}
}

// maxOpBytes is the largest operation the client sends: the connection's
// message limit, less room for the rest of the message.
func (c *Client) maxOpBytes() int {
	limit := c.opts.dial.MaxMessageSize
	if limit == 0 {
		limit = rpc.DefaultMaxMessageSize
	}
	return int(limit) - 64<<10
}

// transient reports whether err is a failure worth retrying: no node
// reachable, a lost connection, a timeout, or a retryable answer.
func transient(err error) bool {
	var se *ServerError
	if errors.As(err, &se) {
		switch se.Code {
		case CodeUnavailable, CodeShuttingDown, CodeOutcomeUnknown, CodeTimeout:
			return true
		}
		return false
	}
	var te *transportError
	return IsUnavailable(err) || errors.As(err, &te)
}

// moveOn makes the next calls use another endpoint than cn's, if there is
// one. Calls in flight on cn finish there.
func (c *Client) moveOn(cn *conn) {
	if cn != nil && len(c.endpoints) > 1 {
		c.retire(cn, true)
	}
}
