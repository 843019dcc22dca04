package client

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// EventType says what an Event did to its key.
type EventType uint8

// Event types.
const (
	EventPut    EventType = 1 // the key was created or replaced
	EventDelete EventType = 2 // the key was deleted
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change to a watched key.
type Event struct {
	Type EventType
	// KV is the key's state after the change; a delete has only Key and
	// ModRevision (the delete's revision).
	KV KeyValue
	// Prev is the key's state before the change, with WithPrevValue and
	// when the key existed; else nil.
	Prev *KeyValue
}

// Revision returns the revision the change took.
func (e *Event) Revision() uint64 { return e.KV.ModRevision }

// WatchResponse is what a watch channel delivers: the events of whole
// revisions, in revision order, and the revision the watch is now up to
// date with. A response without events is a progress notification. A
// response with Err set is the last: the watch ended for good.
type WatchResponse struct {
	Events []Event
	// Revision: every change to the watched keys at or below it has been
	// delivered. Resume a watch from Revision+1 (WithRevision).
	Revision uint64
	Err      error
}

// ErrCompacted is matched (errors.Is) by a watch's error when the
// revision it must resume from is no longer in the nodes' history; see
// CompactedError and ListAndWatch.
var ErrCompacted = errors.New("revision compacted")

// CompactedError is a watch's error when the node's history no longer
// holds the revision the watch must continue from: re-list and watch from
// the list's revision + 1 (ListAndWatch does both).
type CompactedError struct {
	Requested uint64 // the revision the watch asked for
	Oldest    uint64 // the oldest revision the node retains
	Addr      string
	Message   string
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("watch from revision %d: compacted, the oldest revision %s retains is %d; re-list and watch from the list's revision + 1 (client.ListAndWatch)",
		e.Requested, e.Addr, e.Oldest)
}

// Is makes errors.Is(err, ErrCompacted) true.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }

// WatchOption modifies a watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	from         uint64
	exact        bool
	prev         bool
	linearizable bool
	progress     time.Duration
}

// WithRevision starts the watch at revision rev (replayed from the
// nodes' history if it is in the past); 0, the default, starts after
// the revision of the node the watch reaches.
func WithRevision(rev uint64) WatchOption { return func(o *watchOptions) { o.from = rev } }

// WithExactKey watches only the key equal to the prefix given to Watch.
func WithExactKey() WatchOption { return func(o *watchOptions) { o.exact = true } }

// WithPrevValue fills each event's Prev with the key's state before it.
func WithPrevValue() WatchOption { return func(o *watchOptions) { o.prev = true } }

// WithLinearizableStart starts a watch without WithRevision after a read
// index, so it sees every write acknowledged before Watch was called
// (whatever node it reaches).
func WithLinearizableStart() WatchOption { return func(o *watchOptions) { o.linearizable = true } }

// WithProgressInterval asks for a progress notification (a response
// without events) at most every d while the watched keys are quiet and
// the revision moves (default 1s; 0 or less: none).
func WithProgressInterval(d time.Duration) WatchOption {
	return func(o *watchOptions) { o.progress = max(d, 0) }
}

// DefaultWatchProgress is the progress interval of a watch (see
// WithProgressInterval).
const DefaultWatchProgress = time.Second

// Watch watches the keys that start with prefix and returns the channel
// of their changes. It delivers every change exactly once, in revision
// order, resuming transparently from the last revision delivered + 1 on
// this or another endpoint when a node fails, stops, loses its leader or
// drops the watch for being too slow (and on another endpoint when one
// node's history does not reach back far enough: a node restarted from a
// snapshot keeps none before it). The channel is closed when ctx ends
// or the client is closed; a response with Err set comes before it when
// the watch ends for good (the revision it needs was compacted:
// errors.Is(err, ErrCompacted); the credential does not grant the prefix:
// ErrPermissionDenied). Read the channel promptly: the node keeps a
// bounded queue for a watcher and drops one that falls too far behind
// (the watch then resumes, unless its history no longer reaches back).
func (c *Client) Watch(ctx context.Context, prefix string, opts ...WatchOption) <-chan WatchResponse {
	o := watchOptions{progress: DefaultWatchProgress}
	for _, opt := range opts {
		opt(&o)
	}
	out := make(chan WatchResponse)
	go func() {
		defer close(out)
		c.watchLoop(ctx, prefix, o, out)
	}()
	return out
}

// watchLoop runs attempts of a watch, each on the current connection,
// until ctx or the client ends or the watch fails for good.
func (c *Client) watchLoop(ctx context.Context, prefix string, o watchOptions, out chan<- WatchResponse) {
	next := o.from
	var b backoff
	compacted := 0 // endpoints in a row whose history did not reach back
	for ctx.Err() == nil {
		progressed, err := c.watchOnce(ctx, prefix, o, &next, out)
		if err == nil || ctx.Err() != nil {
			return
		}
		if progressed {
			compacted = 0
		}
		// A node that restarted from a snapshot keeps no history before
		// it; another may still have it (watchOnce moved to the next
		// endpoint).
		if errors.Is(err, ErrCompacted) && compacted < len(c.endpoints)-1 {
			compacted++
			c.opts.log.Debug("watch: revision compacted on this node; trying the next endpoint", "prefix", prefix, "from", next, "error", err)
			continue
		}
		if errors.Is(err, ErrClosed) || !retryableWatch(err) {
			select {
			case out <- WatchResponse{Revision: next - 1, Err: err}:
			case <-ctx.Done():
			}
			return
		}
		c.opts.log.Debug("watch interrupted; resuming", "prefix", prefix, "from", next, "error", err)
		if progressed {
			b = backoff{}
		}
		b.wait(ctx, c.ctx.Done())
	}
}

// retryableWatch reports whether a watch attempt's failure is worth
// resuming from: anything but a compacted revision, a permission
// failure, a closed client or an invalid or too large request.
func retryableWatch(err error) bool {
	var se *ServerError
	switch {
	case errors.Is(err, ErrCompacted), errors.Is(err, ErrClosed), errors.Is(err, ErrPermissionDenied):
		return false
	case errors.As(err, &se):
		return se.Code != CodeInvalidArgument && se.Code != CodeTooLarge && se.Code != CodeInternal
	}
	return true
}

// watchOnce runs one attempt: it starts a watch from *next on the current
// connection and forwards its batches to out, moving *next past each,
// until the attempt ends. It returns nil when ctx ends; progressed says
// whether it delivered anything.
func (c *Client) watchOnce(ctx context.Context, prefix string, o watchOptions, next *uint64, out chan<- WatchResponse) (progressed bool, err error) {
	cn, err := c.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer c.release(cn)
	w := &watcherCap{batches: make(chan WatchResponse), closed: make(chan watchClosed, 1), done: make(chan struct{})}
	defer close(w.done)
	ex := rpc.NewExporter(c.opts.log)
	wcap := schema.Watcher(ex.Export(schema.Watcher_Methods(nil, w), w, nil))
	defer wcap.Release()

	f, rel := cn.kv.Watch(ctx, func(p schema.KV_watch_Params) error {
		r, err := p.NewReq()
		if err != nil {
			return err
		}
		if err := r.SetPrefix([]byte(prefix)); err != nil {
			return err
		}
		r.SetExact(o.exact)
		r.SetFromRevision(*next)
		r.SetPrevValue(o.prev)
		r.SetProgressMillis(uint32(min(o.progress.Milliseconds(), 1<<31)))
		r.SetLinearizable(o.linearizable && *next == 0)
		return p.SetWatcher(wcap.AddRef())
	})
	res, err := f.Struct()
	if err != nil {
		rel()
		if ctx.Err() != nil {
			return false, nil
		}
		return false, c.check(cn, "watch", err)
	}
	if res.HasError() {
		e, _ := res.Error()
		se := serverError(e, cn.addr())
		oldest := res.OldestRevision()
		rel()
		switch se.Code {
		case ErrorCode(schema.ErrorCode_compacted):
			c.moveOnCompacted(cn)
			return false, &CompactedError{Requested: *next, Oldest: oldest, Addr: cn.addr(), Message: se.Message}
		case CodeShuttingDown, CodeUnavailable, CodeTimeout:
			c.retire(cn, true)
		}
		return false, se
	}
	if *next == 0 {
		*next = res.StartRevision()
	}
	handle := res.Handle().AddRef()
	rel()
	defer func() {
		// Tell the node at once (a release alone ends the watch too, once
		// every reference is gone).
		cctx, cancel := context.WithTimeout(context.Background(), c.opts.dialTimeout())
		cf, crel := handle.Cancel(cctx, nil)
		_, _ = cf.Struct()
		crel()
		cancel()
		handle.Release()
	}()

	for {
		select {
		case resp := <-w.batches:
			// Exactly once: a batch never goes back, but an attempt
			// resumed on another node must not repeat what came before.
			evs := resp.Events[:0]
			for _, e := range resp.Events {
				if e.Revision() >= *next {
					evs = append(evs, e)
				}
			}
			if resp.Revision < *next && len(evs) == 0 {
				continue
			}
			resp.Events = evs
			select {
			case out <- resp:
			case <-ctx.Done():
				return progressed, nil
			case <-c.ctx.Done():
				return progressed, ErrClosed
			}
			*next = resp.Revision + 1
			progressed = true
		case cl := <-w.closed:
			switch cl.code {
			case schema.ErrorCode_compacted:
				c.moveOnCompacted(cn)
				return progressed, &CompactedError{Requested: *next, Oldest: cl.oldest, Addr: cn.addr(), Message: cl.reason}
			case schema.ErrorCode_shuttingDown:
				c.retire(cn, true)
			}
			return progressed, &ServerError{Code: ErrorCode(cl.code), Message: cl.reason, Addr: cn.addr()}
		case <-cn.cc.Done():
			c.retire(cn, true)
			return progressed, &UnavailableError{causes: []error{fmt.Errorf("connection to %s lost while watching", cn.addr())}}
		case <-ctx.Done():
			return progressed, nil
		case <-c.ctx.Done():
			return progressed, ErrClosed
		}
	}
}

// moveOnCompacted moves the client to the next endpoint after cn's
// history failed a watch, when there is another endpoint to ask.
func (c *Client) moveOnCompacted(cn *conn) {
	if len(c.endpoints) > 1 {
		c.retire(cn, true)
	}
}

// watchClosed is what Watcher.closed said.
type watchClosed struct {
	reason string
	code   schema.ErrorCode
	oldest uint64
}

// watcherCap is the Watcher capability a watch attempt exports.
type watcherCap struct {
	batches chan WatchResponse
	closed  chan watchClosed
	done    chan struct{} // the attempt ended
}

// Events hands a batch to the attempt; it returns once the batch is
// taken, which is what paces the node.
func (w *watcherCap) Events(ctx context.Context, call schema.Watcher_events) error {
	list, err := call.Args().Events()
	if err != nil {
		return err
	}
	resp := WatchResponse{Revision: call.Args().UpTo(), Events: make([]Event, 0, list.Len())}
	for i := 0; i < list.Len(); i++ {
		e := list.At(i)
		ev := Event{Type: EventPut}
		if e.Type() == schema.EventType_delete {
			ev.Type = EventDelete
		}
		kv, err := e.Kv()
		if err != nil {
			return err
		}
		if ev.KV, err = keyValue(kv); err != nil {
			return err
		}
		if e.HadPrev() {
			p, err := e.Prev()
			if err != nil {
				return err
			}
			prev, err := keyValue(p)
			if err != nil {
				return err
			}
			ev.Prev = &prev
		}
		resp.Events = append(resp.Events, ev)
	}
	select {
	case w.batches <- resp:
		return nil
	case <-w.done:
		return errors.New("watch ended")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Closed records why the node ended the watch.
func (w *watcherCap) Closed(_ context.Context, call schema.Watcher_closed) error {
	reason, err := call.Args().Reason()
	if err != nil {
		reason = "no reason given"
	}
	select {
	case w.closed <- watchClosed{reason: reason, code: call.Args().Code(), oldest: call.Args().OldestRevision()}:
	default:
	}
	return nil
}

// keyValue copies a wire KeyValue (its bytes alias the message).
func keyValue(kv schema.KeyValue) (KeyValue, error) {
	k, err := kv.Key()
	if err != nil {
		return KeyValue{}, err
	}
	v, err := kv.Value()
	if err != nil {
		return KeyValue{}, err
	}
	out := KeyValue{Key: string(k), CreateRevision: kv.CreateRevision(), ModRevision: kv.ModRevision(), Version: kv.Version()}
	if len(v) > 0 {
		out.Value = append([]byte(nil), v...)
	}
	return out, nil
}

// ListAndWatch lists the keys with prefix and watches them from there:
// kvs is the prefix's state at revision rev exactly (sorted by key), and
// the channel delivers every change after rev, as Watch does. It is the
// way back from a compacted watch (ErrCompacted): a cache rebuilt from
// kvs and kept up to date from the channel stays consistent.
//
// The list is read in pages, each at its own revision; the changes
// between the first page's revision and the last's are then replayed onto
// it from the watch, which makes the whole list one consistent state. If
// the history no longer reaches back to the first page (a very busy
// prefix), the list is read again, up to a few times.
func (c *Client) ListAndWatch(ctx context.Context, prefix string, opts ...WatchOption) (kvs []KeyValue, rev uint64, events <-chan WatchResponse, err error) {
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		kvs, rev, events, err = c.listAndWatchOnce(ctx, prefix, opts)
		if !errors.Is(err, ErrCompacted) {
			return kvs, rev, events, err
		}
		last = err // the history moved past the first page: list again
	}
	return nil, 0, nil, fmt.Errorf("list and watch %q: the history moved past every list: %w", prefix, last)
}

// listAndWatchOnce is one attempt of ListAndWatch.
func (c *Client) listAndWatchOnce(ctx context.Context, prefix string, opts []WatchOption) ([]KeyValue, uint64, <-chan WatchResponse, error) {
	state, lo, hi, err := c.listAll(ctx, prefix)
	if err != nil {
		return nil, 0, nil, err
	}
	// The watch ends with ctx once handed out; before, with this attempt.
	wctx, cancel := context.WithCancel(ctx)
	handed := false
	defer func() {
		if !handed {
			cancel()
		}
	}()
	ch := c.Watch(wctx, prefix, append(append([]WatchOption(nil), opts...), WithRevision(lo+1))...)
	up := lo
	for up < hi {
		resp, ok := <-ch
		if !ok {
			return nil, 0, nil, ctx.Err()
		}
		if resp.Err != nil {
			return nil, 0, nil, resp.Err
		}
		for _, e := range resp.Events {
			if e.Type == EventPut {
				state[e.KV.Key] = e.KV
			} else {
				delete(state, e.KV.Key)
			}
		}
		up = resp.Revision
	}
	kvs := make([]KeyValue, 0, len(state))
	for _, kv := range state {
		kvs = append(kvs, kv)
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	handed = true
	return kvs, up, ch, nil
}

// listAll reads every key with prefix, page by page, and returns them
// with the lowest and highest revision a page was read at.
func (c *Client) listAll(ctx context.Context, prefix string) (map[string]KeyValue, uint64, uint64, error) {
	state := make(map[string]KeyValue)
	var lo, hi uint64
	after := ""
	for i := 0; ; i++ {
		var opts []ReadOption
		if after != "" {
			opts = append(opts, After(after))
		}
		p, err := c.Range(ctx, prefix, 0, opts...)
		if err != nil {
			return nil, 0, 0, err
		}
		if i == 0 || p.Revision < lo {
			lo = p.Revision
		}
		hi = max(hi, p.Revision)
		for _, kv := range p.KVs {
			if !strings.HasPrefix(kv.Key, prefix) {
				continue
			}
			state[kv.Key] = kv
		}
		if !p.More || len(p.KVs) == 0 {
			return state, lo, hi, nil
		}
		after = p.KVs[len(p.KVs)-1].Key
	}
}
