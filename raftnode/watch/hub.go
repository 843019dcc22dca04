// Package watch serves KV watches: it delivers the changes the kv store's
// event history records to the Watcher capabilities clients pass in.
//
// Delivery design. The apply loop does nothing per watcher: it records
// each change once in the store's history (kv.Store.ReadEvents) and wakes
// whoever waits on it, O(events) per entry. Each watch has its own
// goroutine that reads the history from its own position, keeps the
// events of its keys in its own queue, and delivers them in batched
// events calls, one call in flight at a time, reading on while a call is
// in flight. So the fan-out happens off the loop, each watcher pays for
// its own scan, and a slow watcher only falls behind itself: it never
// holds back the history (which is trimmed by its own bounds) or another
// watcher.
//
// A watcher whose undelivered events (queued, or in the call in flight)
// pass QueueBytes is cancelled and told why through Watcher.closed, as is
// one whose next revision the history no longer holds (code compacted),
// one whose credential fails its check, and every watcher when the hub
// closes. A batch holds whole revisions, at most about MaxBatchBytes of
// them (one larger revision travels alone), and states the revision it
// brings the watcher up to.
package watch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Defaults for Config.
const (
	DefaultQueueBytes    = 8 << 20
	DefaultMaxBatchBytes = 1 << 20
	DefaultMaxScan       = 4096
	DefaultCloseTimeout  = 5 * time.Second
	// DefaultCheckInterval is how often an idle watch checks its
	// credential (and sends due progress notifications).
	DefaultCheckInterval = time.Second
)

// eventOverhead is what an event costs in a queue beyond its key and
// values, for QueueBytes: empty events are not free.
const eventOverhead = 64

func cost(e *kv.Event) int64 {
	return int64(len(e.KV.Key)+len(e.KV.Value)+len(e.Prev.Value)) + eventOverhead
}

// Config configures a Hub. Zero fields take their defaults.
type Config struct {
	// QueueBytes bounds a watcher's undelivered events, queued or in the
	// call in flight; past it the watcher is cancelled.
	QueueBytes int64
	// MaxBatchBytes caps the events' bytes in one delivery call (a
	// revision is never split: a larger one travels alone).
	MaxBatchBytes int
	// MaxScan bounds the events one history read looks at, so a watcher
	// far behind notices its call returning, or its cancellation, between
	// reads.
	MaxScan int
	// CheckInterval is how often an idle watch checks its credential.
	CheckInterval time.Duration
	// Workers bounds the watches that read and send at once (default:
	// half the CPUs the process may use, at least 1), so that the
	// fan-out never takes every core from the writes.
	Workers int
	// CloseTimeout bounds the final closed() call to a cancelled watcher.
	CloseTimeout time.Duration
	// Logger receives the hub's logs.
	Logger hclog.Logger
}

func (c Config) withDefaults() Config {
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.MaxScan <= 0 {
		c.MaxScan = DefaultMaxScan
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.Workers <= 0 {
		c.Workers = max(1, runtime.GOMAXPROCS(0)/2)
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}

// Request is what a watch asks for.
type Request struct {
	// Prefix selects the keys that start with it; with Exact, the key
	// equal to it.
	Prefix []byte
	Exact  bool
	// From is the first revision to deliver (0: the next one).
	From uint64
	// WithPrev fills each event's previous state.
	WithPrev bool
	// Progress, above 0, asks for an empty events call at most this often
	// while the watcher's keys do not change but the revision moves.
	Progress time.Duration
}

// Hub runs the watches of one node. It is safe for concurrent use.
type Hub struct {
	cfg   Config
	log   hclog.Logger
	store *kv.Store

	mu       sync.Mutex
	watchers map[*watcher]struct{}
	closed   bool
	wg       sync.WaitGroup

	// The relay (relay) waits on the store's history alone and wakes the
	// watchers by closing bcast, so that the apply loop, which wakes
	// whoever waits on the history, wakes one goroutine per entry, not
	// one per watcher.
	bmu   sync.Mutex
	bcast chan struct{}
	stop  chan struct{}
	// work holds a token per watch reading or sending (Config.Workers).
	work chan struct{}
}

// NewHub returns a hub serving watches from store's history.
func NewHub(store *kv.Store, cfg Config) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{cfg: cfg, log: cfg.Logger, store: store, watchers: make(map[*watcher]struct{}),
		bcast: make(chan struct{}), stop: make(chan struct{}), work: make(chan struct{}, cfg.Workers)}
	h.wg.Add(1)
	go h.relay()
	return h
}

// relay closes bcast after every change to the history: each close
// happens after the change that caused it, so a watcher that took bcast
// before reading the history is woken by any change it did not read.
func (h *Hub) relay() {
	defer h.wg.Done()
	for {
		changed := h.store.HistoryChanged()
		h.bmu.Lock()
		close(h.bcast)
		h.bcast = make(chan struct{})
		h.bmu.Unlock()
		select {
		case <-changed:
		case <-h.stop:
			return
		}
	}
}

// changed returns a channel closed after the next change to the history
// (take it before reading the history).
func (h *Hub) changed() <-chan struct{} {
	h.bmu.Lock()
	defer h.bmu.Unlock()
	return h.bcast
}

// ErrClosed is Watch's error once the hub is closed.
var ErrClosed = errors.New("watch: the node is shutting down")

// Watch starts delivering what req selects to w, and returns the first
// revision it delivers. The hub takes ownership of w (it is released even
// when Watch fails). A req.From older than the history's oldest revision
// fails with a *kv.CompactedError. check, if not nil, runs before each
// delivery and now and then while idle: once it fails (the watcher's
// credential was revoked or expired), the watch is closed with its error
// as the reason. cancel ends the watch without calling w.closed; it is
// idempotent.
func (h *Hub) Watch(w schema.Watcher, req Request, check func() error) (start uint64, cancel func(), err error) {
	// Resolve and validate the start now, so the caller hears of a
	// compacted revision in its answer rather than in a closed call.
	page, err := h.store.ReadEvents(kv.EventQuery{From: req.From, Prefix: req.Prefix, Exact: req.Exact, MaxScan: 1}, nil)
	if err != nil {
		w.Release()
		return 0, nil, err
	}
	start = req.From
	if start == 0 {
		start = page.Head + 1
	}
	x := &watcher{hub: h, cap: w, req: req, check: check, start: start, done: make(chan struct{})}
	x.ctx, x.cancelCalls = context.WithCancel(context.Background())
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		w.Release()
		return 0, nil, ErrClosed
	}
	h.watchers[x] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go h.run(x)
	return start, func() { h.end(x, closing{}) }, nil
}

// NumWatchers reports how many watches are running.
func (h *Hub) NumWatchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers)
}

// Close ends every watch, telling each watcher the node is shutting down,
// and waits for their goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		close(h.stop)
	}
	h.closed = true
	ws := h.watchers
	h.watchers = make(map[*watcher]struct{})
	h.mu.Unlock()
	for w := range ws {
		w.stop(closing{reason: ErrClosed.Error(), code: schema.ErrorCode_shuttingDown})
	}
	h.wg.Wait()
}

// end stops w for why (closing{}: its client left, nobody is told).
func (h *Hub) end(w *watcher, why closing) {
	h.mu.Lock()
	delete(h.watchers, w)
	h.mu.Unlock()
	w.stop(why)
}

// closing says why a watch ends: reason "" means its client ended it and
// is not told.
type closing struct {
	reason string
	code   schema.ErrorCode
	oldest uint64
}

// watcher is one watch.
type watcher struct {
	hub   *Hub
	cap   schema.Watcher
	req   Request
	check func() error
	start uint64

	ctx         context.Context // cancelled when stopped: aborts a call in flight
	cancelCalls context.CancelFunc
	done        chan struct{}

	mu      sync.Mutex
	stopped bool
	why     closing
}

// stop ends w; the first call wins.
func (w *watcher) stop(why closing) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped, w.why = true, why
		close(w.done)
		w.cancelCalls()
	}
}

func (w *watcher) closing() closing {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.why
}

// inFlight is a delivery call under way.
type inFlight struct {
	done    <-chan struct{}
	wait    func() error
	release func()
	bytes   int64
	upTo    uint64
}

// run is a watch's goroutine: it owns the Watcher capability, reads the
// history from the watch's position and delivers it, until the watch
// stops.
func (h *Hub) run(w *watcher) {
	defer h.wg.Done()
	defer w.cap.Release()
	upTo := h.deliverAll(w)
	why := w.closing()
	if why.reason == "" {
		return
	}
	h.log.Info("closing watch", "prefix", fmt.Sprintf("%q", w.req.Prefix), "reason", why.reason)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.CloseTimeout)
	defer cancel()
	f, release := w.cap.Closed(ctx, func(p schema.Watcher_closed_Params) error {
		p.SetCode(why.code)
		p.SetUpTo(upTo)
		p.SetOldestRevision(why.oldest)
		return p.SetReason(why.reason)
	})
	_, _ = f.Struct()
	release()
}

// deliverAll is run's loop. It returns the revision the watcher was last
// told it is up to date with.
func (h *Hub) deliverAll(w *watcher) (sentUpTo uint64) {
	cfg := &h.cfg
	q := kv.EventQuery{Prefix: w.req.Prefix, Exact: w.req.Exact, WithPrev: w.req.WithPrev, MaxScan: cfg.MaxScan}
	scanned := w.start - 1 // every revision up to it is read into queue
	sentUpTo = scanned
	var queue []kv.Event
	var queued int64
	var call *inFlight
	lastCall := time.Now()
	ticker := time.NewTicker(min(cfg.CheckInterval, max(w.req.Progress, time.Millisecond)))
	defer ticker.Stop()
	defer func() {
		if call != nil {
			// Stopped: the call was cancelled with w.ctx. Releasing a
			// call waits for its answer, which a stalled watcher's
			// connection may hold until it closes: do that apart, so
			// that ending a watch (and closing the hub) never waits for
			// a watcher.
			select {
			case <-call.done:
				call.release()
			default:
				go call.release()
			}
		}
	}()
	working := false
	fail := func(why closing) uint64 {
		if working {
			<-h.work
		}
		h.end(w, why)
		return sentUpTo
	}
	for {
		// Work (read, encode, send) only in one of the hub's worker
		// slots: the fan-out then takes at most Workers cores from the
		// writes, and a watcher waiting for a slot gathers more events
		// into its next call.
		select {
		case h.work <- struct{}{}:
			working = true
		case <-w.done:
			return sentUpTo
		}
		// Read what the history holds past scanned.
		q.From = scanned + 1
		n := len(queue)
		changed := h.changed() // before the read: see relay
		page, err := h.store.ReadEvents(q, queue)
		var ce *kv.CompactedError
		if errors.As(err, &ce) {
			return fail(closing{
				reason: fmt.Sprintf("watch closed: %v (it fell behind the node's history)", err),
				code:   schema.ErrorCode_compacted, oldest: ce.Oldest,
			})
		}
		queue, scanned = page.Events, page.UpTo
		for j := n; j < len(queue); j++ {
			queued += cost(&queue[j])
		}
		if backlog := queued + inflightBytes(call); backlog > cfg.QueueBytes {
			return fail(closing{
				reason: fmt.Sprintf("watcher too slow: it fell %d bytes behind (limit %d bytes); resume from revision %d", backlog, cfg.QueueBytes, sentUpTo+1),
				code:   schema.ErrorCode_unavailable,
			})
		}

		// Start the next call when none is in flight.
		if call == nil {
			progress := w.req.Progress > 0 && scanned > sentUpTo && time.Since(lastCall) >= w.req.Progress
			if len(queue) > 0 || progress {
				if w.check != nil {
					if err := w.check(); err != nil {
						return fail(closing{reason: "watch closed: " + err.Error(), code: schema.ErrorCode_permissionDenied})
					}
				}
				var batch []kv.Event
				batch, queue = takeBatch(queue, cfg.MaxBatchBytes)
				var bytes int64
				for j := range batch {
					bytes += cost(&batch[j])
				}
				queued -= bytes
				up := scanned
				if len(queue) > 0 {
					up = queue[0].Revision() - 1 // batches end on whole revisions
				}
				call = send(w, batch, up, bytes)
				sentUpTo = up
				lastCall = time.Now()
				clear(batch) // the call holds its own copy
			}
		}

		<-h.work
		working = false
		// Wait for something to do: more history, the call's return, a
		// tick, or the end. With more history to read, only look.
		var returned <-chan struct{}
		if call != nil {
			returned = call.done
		}
		if scanned < page.Head {
			select {
			case <-w.done:
				return sentUpTo
			case <-returned:
				if why, ok := h.returned(w, &call); !ok {
					return fail(why)
				}
			default:
			}
			continue
		}
		select {
		case <-w.done:
			return sentUpTo
		case <-changed:
		case <-returned:
			if why, ok := h.returned(w, &call); !ok {
				return fail(why)
			}
		case <-ticker.C:
			if w.check != nil && call == nil {
				if err := w.check(); err != nil {
					return fail(closing{reason: "watch closed: " + err.Error(), code: schema.ErrorCode_permissionDenied})
				}
			}
		}
	}
}

// returned ends the call in flight, which returned; ok is false when the
// watch must end (why: how; closing{} when the watcher went away or the
// watch was already stopped).
func (h *Hub) returned(w *watcher, call **inFlight) (why closing, ok bool) {
	err := (*call).wait()
	(*call).release()
	*call = nil
	if err == nil {
		return closing{}, true
	}
	var tooLarge *rpc.MessageTooLargeError
	switch {
	case w.ctx.Err() != nil:
	case errors.As(err, &tooLarge):
		why = closing{reason: "watch closed: " + tooLarge.Error(), code: schema.ErrorCode_tooLarge}
	default:
		h.log.Debug("watcher call failed; ending its watch", "error", err)
	}
	return why, false
}

func inflightBytes(c *inFlight) int64 {
	if c == nil {
		return 0
	}
	return c.bytes
}

// takeBatch splits queue after the whole revisions that bring the batch
// to at least maxBytes of keys and values (at least one revision).
func takeBatch(queue []kv.Event, maxBytes int) (batch, rest []kv.Event) {
	size := 0
	for i := range queue {
		if i > 0 && queue[i].Revision() != queue[i-1].Revision() && size >= maxBytes {
			return queue[:i:i], queue[i:]
		}
		size += len(queue[i].KV.Key) + len(queue[i].KV.Value) + len(queue[i].Prev.Value)
	}
	return queue, queue[len(queue):]
}

// send starts one events call carrying batch and upTo.
func send(w *watcher, batch []kv.Event, upTo uint64, bytes int64) *inFlight {
	f, release := w.cap.Events(w.ctx, func(p schema.Watcher_events_Params) error {
		p.SetUpTo(upTo)
		list, err := p.NewEvents(int32(len(batch)))
		if err != nil {
			return err
		}
		for i := range batch {
			if err := encodeEvent(list.At(i), &batch[i]); err != nil {
				return err
			}
		}
		return nil
	})
	return &inFlight{
		done:    f.Done(),
		wait:    func() error { _, err := f.Struct(); return err },
		release: release,
		bytes:   bytes,
		upTo:    upTo,
	}
}

func encodeEvent(dst schema.WatchEvent, e *kv.Event) error {
	if e.Type == kv.EventDelete {
		dst.SetType(schema.EventType_delete)
	} else {
		dst.SetType(schema.EventType_put)
	}
	kvs, err := dst.NewKv()
	if err != nil {
		return err
	}
	if err := encodeKV(kvs, &e.KV); err != nil {
		return err
	}
	if e.HasPrev {
		dst.SetHadPrev(true)
		prev, err := dst.NewPrev()
		if err != nil {
			return err
		}
		return encodeKV(prev, &e.Prev)
	}
	return nil
}

func encodeKV(dst schema.KeyValue, kv *kv.KeyValue) error {
	if err := dst.SetKey(kv.Key); err != nil {
		return err
	}
	if len(kv.Value) > 0 {
		if err := dst.SetValue(kv.Value); err != nil {
			return err
		}
	}
	dst.SetCreateRevision(kv.CreateRevision)
	dst.SetModRevision(kv.ModRevision)
	dst.SetVersion(kv.Version)
	return nil
}
