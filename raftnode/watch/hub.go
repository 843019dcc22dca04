// Package watch serves KV watches: it delivers the changes the kv store's
// event history records to the Watcher capabilities clients pass in.
//
// Delivery design. The apply loop does nothing per watcher: it records
// each change once in the store's history (kv.Store.ReadEvents) and wakes
// the hub's dispatcher, O(events) per entry. The dispatcher reads the
// history once for every watch, finds each event's streams through an
// index (index.go: watches asking for the same keys the same way share a
// stream) and encodes it once per stream into a frame, in Cap'n Proto's
// wire layout (encode.go). Each watch has its own goroutine that follows
// its stream's frames from its own position and delivers them in batched
// events calls, one call in flight at a time, copying the frames' bytes
// into the call; a watch starting in the past first reads the history
// apart, up to where it joined its stream. Calls are paced
// (Config.CallsPerSecond) so that many busy watchers make fewer, larger
// calls. A slow watcher only falls behind itself: it never holds back
// the history (which is trimmed by its own bounds), the dispatcher or
// another watcher.
//
// A watcher whose undelivered events (frames not yet sent, read apart,
// or in the call in flight) pass QueueBytes, plus the largest revision
// the hub has seen (so that one revision larger than the bound, a big
// transaction or a lease's many keys, reaches a watcher that keeps up
// rather than cancel it at every resume), is cancelled and told why
// through Watcher.closed, as is one whose next revision the history no
// longer holds (code compacted), one whose credential fails its check,
// and every watcher when the hub closes. A batch holds whole revisions,
// at most about MaxBatchBytes of them (one larger revision travels
// alone), and states the revision it brings the watcher up to.
package watch

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
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
	// DefaultCallsPerSecond paces the watchers' calls (Config.CallsPerSecond).
	DefaultCallsPerSecond = 5000
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
	// CallsPerSecond paces delivery under load: the hub's calls of
	// frames and progress notifications start at least 1/CallsPerSecond
	// apart (each reserves the next free time; a call that carries
	// MaxBatchBytes does not wait, nor does a watch reading the history
	// apart to catch up), so however many watchers are busy the hub
	// makes about that many calls a second, each carrying what gathered
	// meanwhile: with 1,000 busy watchers, a call per watcher every
	// 200 ms at the default; one alone is not held. Negative: no pacing.
	CallsPerSecond int
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
	if c.CallsPerSecond == 0 {
		c.CallsPerSecond = DefaultCallsPerSecond
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
	idx      index
	// round is closed after each dispatch round (under mu).
	round chan struct{}

	// dispatched is the revision up to which every stream's frames are
	// published: a frame with events at or below it is linked before it
	// is stored.
	dispatched atomic.Uint64

	// paceNext is the earliest time the next call may start (see
	// Config.CallsPerSecond).
	paceMu   sync.Mutex
	paceNext time.Time

	wg   sync.WaitGroup
	stop chan struct{}
	// work holds a token per watch reading or sending (Config.Workers).
	work chan struct{}
	// maxRevision is the largest cost (see cost) of one revision's events
	// the hub has read: a watcher's bound is QueueBytes plus it (limit).
	maxRevision atomic.Int64
}

// limit is a watcher's bound on its undelivered events: QueueBytes past
// the largest revision seen, which travels whole.
func (h *Hub) limit() int64 { return h.cfg.QueueBytes + h.maxRevision.Load() }

// noteRevisions records the cost of the largest revision among events
// (in revision order) for limit.
func (h *Hub) noteRevisions(events []kv.Event) {
	var rev uint64
	var sum, largest int64
	for i := range events {
		if r := events[i].Revision(); r != rev {
			rev, sum = r, 0
		}
		sum += cost(&events[i])
		largest = max(largest, sum)
	}
	for cur := h.maxRevision.Load(); largest > cur && !h.maxRevision.CompareAndSwap(cur, largest); cur = h.maxRevision.Load() {
	}
}

// NewHub returns a hub serving watches from store's history.
func NewHub(store *kv.Store, cfg Config) *Hub {
	cfg = cfg.withDefaults()
	h := &Hub{cfg: cfg, log: cfg.Logger, store: store, watchers: make(map[*watcher]struct{}),
		idx: newIndex(), round: make(chan struct{}), stop: make(chan struct{}), work: make(chan struct{}, cfg.Workers)}
	_, head := store.HistoryBounds()
	h.dispatched.Store(head)
	h.wg.Add(1)
	go h.dispatch()
	return h
}

// dispatch is the hub's reader: it reads the history once for every
// watch, finds each event's streams through the index and encodes it
// once into each (a frame per stream and round), then publishes the
// round. It runs off the apply loop, which only wakes it.
func (h *Hub) dispatch() {
	defer h.wg.Done()
	var buf []kv.Event
	for {
		changed := h.store.HistoryChanged() // before the read: a change after it wakes us
		from := h.dispatched.Load() + 1
		page, err := h.store.ReadEvents(kv.EventQuery{From: from, WithPrev: true, MaxScan: h.cfg.MaxScan}, buf[:0])
		var ce *kv.CompactedError
		h.mu.Lock()
		switch {
		case errors.As(err, &ce):
			// The history was emptied (a restore) or trimmed past what was
			// dispatched: no watch can go on without a gap.
			for w := range h.watchers {
				h.endLocked(w, closing{
					reason: fmt.Sprintf("watch closed: %v (the node's history moved past it)", err),
					code:   schema.ErrorCode_compacted, oldest: ce.Oldest,
				})
			}
			h.idx = newIndex()
			h.publishLocked(ce.Oldest - 1)
		case page.UpTo >= from:
			h.route(page.Events, page.UpTo)
			h.publishLocked(page.UpTo)
		}
		h.mu.Unlock()
		clear(page.Events) // the events share the store's bytes: do not keep them
		buf = page.Events
		if err != nil || page.UpTo < page.Head {
			// More to read now (after a compaction: from the oldest
			// revision the history holds).
			select {
			case <-h.stop:
				return
			default:
				continue
			}
		}
		select {
		case <-changed:
		case <-h.stop:
			return
		}
	}
}

// route encodes events, the history's up to upTo, into the frames of
// the streams whose keys they change, links the frames and cancels the
// watchers those frames put over their byte bound (with h.mu held).
func (h *Hub) route(events []kv.Event, upTo uint64) {
	h.noteRevisions(events)
	limit := h.limit()
	touched := h.idx.touched[:0]
	add := func(ss []*stream, e *kv.Event) {
		for _, s := range ss {
			if s.building == nil {
				s.building = newFrame(0, s.tail.cum)
				touched = append(touched, s)
			}
			s.building.add(e, s.key.withPrev)
		}
	}
	for i := range events {
		e := &events[i]
		key := e.KV.Key
		for _, n := range h.idx.lens {
			if n > len(key) {
				break
			}
			add(h.idx.prefix[string(key[:n])], e)
		}
		add(h.idx.exact[string(key)], e)
	}
	for _, s := range touched {
		f := s.building
		s.building = nil
		f.upTo = upTo
		s.tail.link(f)
		s.tail = f
		s.tailCum.Store(f.cum)
		// Enforce the byte bound here, so that a watcher whose call
		// never returns need not wake for every frame to notice.
		for w := range s.watchers {
			if backlog := f.cum - w.acked.Load(); backlog > limit && !w.catchingUp.Load() {
				h.endLocked(w, tooSlow(backlog, h.cfg.QueueBytes, limit, w.sentUpTo.Load()))
			}
		}
	}
	clear(touched)
	h.idx.touched = touched[:0]
}

// publishLocked stores rev as dispatched and wakes whoever waits for a
// round (with h.mu held).
func (h *Hub) publishLocked(rev uint64) {
	h.dispatched.Store(rev)
	close(h.round)
	h.round = make(chan struct{})
}

func tooSlow(backlog, queueBytes, limit int64, sentUpTo uint64) closing {
	return closing{
		reason: fmt.Sprintf("watcher too slow: it fell %d bytes behind (limit %d bytes, %d with the largest revision); resume from revision %d", backlog, queueBytes, limit, sentUpTo+1),
		code:   schema.ErrorCode_unavailable,
	}
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
	x.sentUpTo.Store(start - 1)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		w.Release()
		return 0, nil, ErrClosed
	}
	// Join the stream at its tail: the frames after it hold only
	// revisions past what is dispatched now.
	x.stream = h.idx.join(x)
	x.join, x.joinRev = x.stream.tail, h.dispatched.Load()
	x.acked.Store(x.join.cum)
	x.catchingUp.Store(true)
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
	for w := range h.watchers {
		h.endLocked(w, closing{reason: ErrClosed.Error(), code: schema.ErrorCode_shuttingDown})
	}
	h.mu.Unlock()
	h.wg.Wait()
}

// end stops w for why (closing{}: its client left, nobody is told).
func (h *Hub) end(w *watcher, why closing) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endLocked(w, why)
}

func (h *Hub) endLocked(w *watcher, why closing) {
	if _, ok := h.watchers[w]; ok {
		delete(h.watchers, w)
		h.idx.leave(w)
	}
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

	// stream is the watch's stream; join its tail when the watch joined,
	// when every revision up to joinRev was dispatched.
	stream  *stream
	join    *frame
	joinRev uint64
	// acked is the cum of the last frame a returned call carried (what
	// the watcher has received, for the byte bound); sentUpTo the upTo
	// of the last call made.
	acked    atomic.Int64
	sentUpTo atomic.Uint64
	// catchingUp: the watch is still reading the history apart (or
	// waiting for its start): the dispatcher leaves its bound to it (it
	// drops the frames that pile up while it consumes, and checks the
	// bound when it wakes, see deliverAll).
	catchingUp atomic.Bool

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
	// frames: the call carries frames, up to one whose cum is cum (else
	// events read from the history apart).
	frames bool
	cum    int64
}

// run is a watch's goroutine: it owns the Watcher capability, delivers
// the watch's events until the watch stops, then says why.
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

// catchUp moves the watch's cursor past start-1: it returns the frame
// after which the stream's frames are to be delivered and the revision
// pos up to which the events are read from the history instead (pos >=
// start-1). ok is false once the watch stopped.
func (h *Hub) catchUp(w *watcher) (cur *frame, pos uint64, ok bool) {
	cur, pos = w.join, w.joinRev
	for pos+1 < w.start {
		// Load the round before looking for a frame: no frame after cur
		// means nothing of the stream's up to that round.
		h.mu.Lock()
		round := h.round
		h.mu.Unlock()
		d := h.dispatched.Load()
		if n := cur.following(); n != nil {
			// Skip it: the history read covers what of it is wanted.
			cur, pos = n, n.upTo
			w.acked.Store(n.cum)
			continue
		}
		if d > pos {
			pos = d
			continue
		}
		select {
		case <-w.done:
			return nil, 0, false
		case <-round:
		case <-cur.ready:
		}
	}
	return cur, pos, true
}

// deliverAll is run's loop. It returns the revision the watcher was last
// told it is up to date with.
func (h *Hub) deliverAll(w *watcher) (sentUpTo uint64) {
	cfg := &h.cfg
	sentUpTo = w.start - 1
	cur, pos, ok := h.catchUp(w)
	if !ok {
		return sentUpTo
	}
	// Revisions start..pos are read from the history into queue (the
	// frames up to cur are not delivered); then cur's successors are.
	caught := pos
	if w.start > caught {
		w.catchingUp.Store(false) // nothing to read apart
	}
	q := kv.EventQuery{Prefix: w.req.Prefix, Exact: w.req.Exact, WithPrev: w.req.WithPrev, MaxScan: cfg.MaxScan, To: caught}
	scanned := w.start - 1 // every revision up to it is read into queue
	var queue []kv.Event
	var queued int64
	var dropped int64 // frames skipped by a replay since its last call returned
	var call *inFlight
	lastCall := time.Now()
	// The ticker checks the credential and progress; without progress
	// notifications, only the credential (it once ticked every
	// millisecond for every such watcher: a million wake-ups a second
	// with 1,000 watchers).
	tick := cfg.CheckInterval
	if w.req.Progress > 0 {
		tick = min(tick, max(w.req.Progress, time.Millisecond))
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	pace := time.NewTimer(time.Hour)
	pace.Stop()
	defer pace.Stop()
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
	working, paced := false, false
	var reserved time.Time // the start reserved for the next call, if any
	fail := func(why closing) uint64 {
		if working {
			<-h.work
		}
		h.end(w, why)
		return sentUpTo
	}
	// Work (read, encode, send) only in one of the hub's worker slots:
	// the fan-out then takes at most Workers cores from the writes, and
	// a watcher waiting for a slot gathers more events into its next
	// call.
	acquire := func() bool {
		select {
		case h.work <- struct{}{}:
			working = true
			return true
		case <-w.done:
			return false
		}
	}
	release := func() {
		if working {
			<-h.work
			working = false
		}
	}
	for {
		if scanned < caught && w.stream.tailCum.Load()-cur.cum > cfg.QueueBytes/8 {
			// The live frames gathered while this watch replays the
			// history: drop them and follow the stream from its tail
			// instead, reading that much more of the history, so that
			// a long replay under writes holds little and is not
			// cancelled for what it has not reached yet. What it drops
			// counts against its bound until its next call returns:
			// a replay whose call stalls is cancelled as any watcher.
			old := cur.cum
			h.mu.Lock()
			cur, caught = w.stream.tail, h.dispatched.Load()
			h.mu.Unlock()
			pos, q.To = caught, caught
			dropped += cur.cum - old
			w.acked.Store(cur.cum)
		}
		// Read ahead at most a quarter of the bound: a replay waits for
		// its calls rather than piling up the history (which holds it
		// anyway).
		readAhead := scanned < caught && queued < cfg.QueueBytes/4
		if readAhead {
			if !acquire() {
				return sentUpTo
			}
			// Catching up: read the history past scanned.
			q.From = scanned + 1
			// An event's cost is its bytes plus eventOverhead: bound both.
			room := cfg.QueueBytes/4 - queued
			q.MaxBytes = int(max(1, room/2))
			q.MaxScan = int(max(1, min(int64(cfg.MaxScan), room/(2*eventOverhead))))
			n := len(queue)
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
			h.noteRevisions(queue[n:])
			release()
			if scanned >= caught {
				w.catchingUp.Store(false) // the frames count from now on
			}
		}
		backlog := queued + inflightBytes(call) + w.stream.tailCum.Load() - cur.cum + dropped
		if limit := h.limit(); backlog > limit {
			return fail(tooSlow(backlog, cfg.QueueBytes, limit, sentUpTo))
		}

		// Start the next call when none is in flight.
		if call == nil {
			d := h.dispatched.Load()
			progress := w.req.Progress > 0 && time.Since(lastCall) >= w.req.Progress &&
				(scanned > sentUpTo || scanned == caught && max(d, pos) > sentUpTo)
			var frames []*frame
			if more := cur.following() != nil; len(queue) == 0 && scanned == caught && (more || progress) {
				// A call of frames, or a progress notification, waits its
				// turn (Config.CallsPerSecond).
				if reserved.IsZero() {
					reserved = h.reserve(cur)
				}
				if wait := time.Until(reserved); wait > 0 {
					// Not our turn yet: let more gather (the timer wakes us).
					pace.Reset(wait)
					paced, progress = true, false
				} else {
					reserved = time.Time{}
					if more {
						frames = take(cur, cfg.MaxBatchBytes)
					}
				}
			}
			if len(queue) > 0 || len(frames) > 0 || progress {
				if !acquire() {
					return sentUpTo
				}
				if w.check != nil {
					if err := w.check(); err != nil {
						return fail(closing{reason: "watch closed: " + err.Error(), code: schema.ErrorCode_permissionDenied})
					}
				}
				if len(queue) > 0 || scanned < caught {
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
					clear(batch) // the call holds its own copy
				} else {
					up, from := max(d, pos), cur.cum
					if len(frames) > 0 {
						last := frames[len(frames)-1]
						if last.following() != nil {
							up = last.upTo // cut at MaxBatchBytes
						} else {
							up = max(up, last.upTo)
						}
						cur = last
					}
					pos = up
					call = sendFrames(w, frames, up, from)
				}
				sentUpTo = call.upTo
				w.sentUpTo.Store(sentUpTo)
				lastCall = time.Now()
				release()
			}
		}

		// Wait for something to do: more history, the call's return, a
		// tick, or the end. With more history to read, only look.
		var returned, more <-chan struct{}
		var paceC <-chan time.Time
		switch {
		case call != nil:
			returned = call.done
		case paced:
			paceC = pace.C
			paced = false
		default:
			more = cur.ready
		}
		if scanned < caught && queued < cfg.QueueBytes/4 {
			select {
			case <-w.done:
				return sentUpTo
			case <-returned:
				if why, ok := h.returned(w, &call); !ok {
					return fail(why)
				}
				dropped = 0
			default:
			}
			continue
		}
		select {
		case <-w.done:
			return sentUpTo
		case <-more:
		case <-paceC:
		case <-returned:
			if why, ok := h.returned(w, &call); !ok {
				return fail(why)
			}
			dropped = 0
		case <-ticker.C:
			if w.check != nil && call == nil {
				if err := w.check(); err != nil {
					return fail(closing{reason: "watch closed: " + err.Error(), code: schema.ErrorCode_permissionDenied})
				}
			}
		}
	}
}

// reserve returns when a call carrying the frames after cur may start,
// and reserves that time (see Config.CallsPerSecond).
func (h *Hub) reserve(cur *frame) time.Time {
	now := time.Now()
	if h.cfg.CallsPerSecond < 0 {
		return now
	}
	size := 0
	for f := cur.following(); f != nil && size < h.cfg.MaxBatchBytes; f = f.following() {
		size += f.bytes
	}
	if size >= h.cfg.MaxBatchBytes {
		return now
	}
	h.paceMu.Lock()
	defer h.paceMu.Unlock()
	t := h.paceNext
	if t.Before(now) {
		t = now
	}
	h.paceNext = t.Add(time.Second / time.Duration(h.cfg.CallsPerSecond))
	return t
}

// take returns the frames after cur, up to the one that brings their
// events' bytes to at least maxBytes (at least one frame, if any).
func take(cur *frame, maxBytes int) []*frame {
	var out []*frame
	size := 0
	for f := cur.following(); f != nil && (len(out) == 0 || size < maxBytes); f = f.following() {
		out = append(out, f)
		size += f.bytes
	}
	return out
}

// returned ends the call in flight, which returned; ok is false when the
// watch must end (why: how; closing{} when the watcher went away or the
// watch was already stopped).
func (h *Hub) returned(w *watcher, call **inFlight) (why closing, ok bool) {
	err := (*call).wait()
	(*call).release()
	c := *call
	*call = nil
	if err == nil {
		if c.frames {
			w.acked.Store(c.cum)
		}
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

// sendFrames starts one events call carrying frames, the ones after a
// frame whose cum is from, and upTo.
func sendFrames(w *watcher, frames []*frame, upTo uint64, from int64) *inFlight {
	n, cum := 0, from
	for _, f := range frames {
		n += len(f.events)
		cum = f.cum
	}
	f, release := w.cap.Events(w.ctx, func(p schema.Watcher_events_Params) error {
		p.SetUpTo(upTo)
		return placeFrames(p, frames, n)
	})
	return &inFlight{
		done:    f.Done(),
		wait:    func() error { _, err := f.Struct(); return err },
		release: release,
		bytes:   cum - from,
		upTo:    upTo,
		frames:  true,
		cum:     cum,
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
