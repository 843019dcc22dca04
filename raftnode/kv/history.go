package kv

import (
	"bytes"
	"fmt"
	"sync/atomic"
)

// The event history: what watches read.
//
// Every change the store makes to a key (a put, the delete of an existing
// key, whatever command or transaction made it, and any delete the store
// makes on its own, such as a lease's) is recorded as an Event at the
// revision it took, while the entry is applied, and published to the
// history before the store's lock is released: a reader that saw revision
// r in the store finds every event up to r in the history.
//
// The history is append-only chunks of events. Publishing takes the
// history's lock for the entry's events only (O(events), never per
// watcher); readers take it just long enough to copy a view of the chunks
// and scan the view without it: a published slot is never written again,
// and trimming drops whole chunks from the front. So a reader scanning a
// long history never delays the apply loop.
//
// The history keeps the newest revisions within HistoryRevisions
// revisions and HistoryBytes bytes (trimmed a whole revision at a time;
// the newest revision always stays). It is the node's own: it does not
// travel in snapshots, and a Restore empties it, so a read from a revision
// before the restored one fails with a *CompactedError, never a gap.

// chunkLen is the number of events per history chunk.
const chunkLen = 256

// eventOverhead is what an event costs in the history beyond its key and
// values, for the HistoryBytes bound: empty events are not free.
const eventOverhead = 64

// EventType says what an Event did to its key.
type EventType uint8

// Event types.
const (
	// EventPut: the key was written (created or replaced).
	EventPut EventType = 1 + iota
	// EventDelete: the key was deleted.
	EventDelete
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

// Event is one change to a key at one revision.
type Event struct {
	Type EventType
	// KV is the key's state after the change. For a delete, only Key and
	// ModRevision (the delete's revision) are set.
	KV KeyValue
	// Prev is the key's state before the change, when HasPrev (read with
	// EventQuery.WithPrev, and the key existed).
	Prev    KeyValue
	HasPrev bool
}

// Revision returns the revision the event took.
func (e *Event) Revision() uint64 { return e.KV.ModRevision }

// CompactedError is the error of a read from a revision the history no
// longer holds (trimmed, or before the snapshot the node restored).
type CompactedError struct {
	// Requested is the revision asked for; Oldest the oldest revision the
	// history holds (every event from it on is retained).
	Requested, Oldest uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("revision %d is compacted: the oldest revision this node retains is %d; re-list and watch from the list's revision + 1", e.Requested, e.Oldest)
}

// histEvent is one recorded change: the entries it took the key from and
// to (shared with the store, never modified). A delete has cur nil.
type histEvent struct {
	rev       uint64
	cur, prev *entry
}

func (e *histEvent) key() []byte {
	if e.cur != nil {
		return e.cur.key
	}
	return e.prev.key
}

func (e *histEvent) cost() int64 {
	n := eventOverhead + len(e.key())
	if e.cur != nil {
		n += len(e.cur.value)
	}
	if e.prev != nil {
		n += len(e.prev.value)
	}
	return int64(n)
}

type eventChunk [chunkLen]histEvent

// closedChan is a closed channel.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// history is the store's event history (see above). The apply goroutine
// alone writes it (publish, reset, with the store's lock held); readers
// load its latest view, an immutable value, without a lock, so a crowd
// of readers never makes the apply loop wait.
type history struct {
	maxRevs  uint64
	maxBytes int64

	// w is the writer's state; view the latest published copy of it.
	w     histState
	bytes int64
	view  atomic.Pointer[histView]
}

// histState is the history's bounds. The chunks hold the events with
// sequence numbers base.. (seq counts every event ever published); those
// from first to next-1 are live. oldest is the oldest revision retained
// (every event from it on is in the history), rev the store's revision as
// of the last publish.
type histState struct {
	chunks            []*eventChunk
	base, first, next uint64
	oldest, rev       uint64
}

// histView is one published histState. Its changed channel, made by the
// first reader that waits on it, is closed once a newer view replaces it.
type histView struct {
	histState
	changed atomic.Pointer[chan struct{}]
}

// waitChan returns the channel closed when v is replaced.
func (v *histView) waitChan() <-chan struct{} {
	if c := v.changed.Load(); c != nil {
		return *c
	}
	c := make(chan struct{})
	if v.changed.CompareAndSwap(nil, &c) {
		return c
	}
	return *v.changed.Load()
}

func newHistory(cfg Config, rev uint64) *history {
	h := &history{maxRevs: uint64(cfg.HistoryRevisions), maxBytes: cfg.HistoryBytes}
	h.reset(rev)
	return h
}

// at returns the slot of sequence number seq in chunks starting at base.
func at(chunks []*eventChunk, base, seq uint64) *histEvent {
	i := seq - base
	return &chunks[i/chunkLen][i%chunkLen]
}

// publish appends the events of one entry, which brought the store to
// rev, trims the history to its bounds and publishes the result.
func (h *history) publish(evs []histEvent, rev uint64) {
	w := &h.w
	for i := range evs {
		if (w.next-w.base)%chunkLen == 0 && int(w.next-w.base)/chunkLen == len(w.chunks) {
			w.chunks = append(w.chunks, new(eventChunk))
		}
		*at(w.chunks, w.base, w.next) = evs[i]
		w.next++
		h.bytes += evs[i].cost()
	}
	w.rev = rev
	h.trim()
	h.store()
}

// store publishes the writer's state as the new view and wakes the
// readers waiting on the old one. A reader that took the old view's
// channel before this swap is woken; one that takes it after sees the
// new view when it checks again (ReadEvents).
func (h *history) store() {
	old := h.view.Swap(&histView{histState: h.w})
	if old != nil {
		if c := old.changed.Load(); c != nil {
			close(*c)
		}
	}
}

// trim drops the oldest revisions, whole, while the history is over a
// bound; the newest revision always stays.
func (h *history) trim() {
	w := &h.w
	for w.first < w.next {
		first := at(w.chunks, w.base, w.first)
		if first.rev == w.rev || (w.rev-first.rev < h.maxRevs && h.bytes <= h.maxBytes) {
			break
		}
		rev := first.rev
		for w.first < w.next {
			e := at(w.chunks, w.base, w.first)
			if e.rev != rev {
				break
			}
			// The slot is not cleared: a reader may be scanning it. Its
			// chunk, and the entries it holds, go with the chunk.
			h.bytes -= e.cost()
			w.first++
		}
		w.oldest = rev + 1
	}
	// Drop the chunks wholly before first. Appending to the re-sliced
	// slice writes past every published view's end, never into it.
	if n := (w.first - w.base) / chunkLen; n > 0 {
		w.chunks = w.chunks[n:]
		w.base += n * chunkLen
		if cap(w.chunks) > 4*len(w.chunks)+16 {
			w.chunks = append([]*eventChunk(nil), w.chunks...)
		}
	}
}

// reset empties the history at revision rev (a restore): the oldest
// revision it can serve is rev+1. Readers holding the old chunks keep
// them; new ones start afresh.
func (h *history) reset(rev uint64) {
	h.w = histState{oldest: rev + 1, rev: rev}
	h.bytes = 0
	h.store()
}

// EventQuery asks ReadEvents for events.
type EventQuery struct {
	// From is the first revision to read (0: the revision after the
	// newest, i.e. only what comes next).
	From uint64
	// Prefix selects the keys that start with it; with Exact, only the
	// key equal to it.
	Prefix []byte
	Exact  bool
	// WithPrev fills Event.Prev.
	WithPrev bool
	// MaxBytes stops the page after the revision that brings its events'
	// bytes (keys and values) to at least MaxBytes (0: no bound); a
	// revision's events are never split between pages.
	MaxBytes int
	// MaxScan stops the page after the revision at which about MaxScan
	// events were looked at, matching or not (0: no bound), so that one
	// read of a long history is short.
	MaxScan int
	// To is the last revision to read (0: no bound); a page that reaches
	// it has UpTo = To.
	To uint64
}

// EventPage is one ReadEvents answer.
type EventPage struct {
	// Events are the matching events of revisions From to UpTo, in
	// revision order (and, within a revision, in the order the
	// transaction or batch made them).
	Events []Event
	// UpTo is the last revision the page covers completely: a reader
	// continues from UpTo+1. It is From-1 when nothing new was there.
	UpTo uint64
	// Head is the store's revision as of the read: UpTo < Head means read
	// again now.
	Head uint64
	// Changed is closed once the history moves past Head.
	Changed <-chan struct{}
}

// ReadEvents appends to dst the events the query selects (see
// EventQuery), from q.From on. A From below the oldest revision the
// history retains fails with a *CompactedError. The events' slices are
// shared with the store: read-only. It may be called from any goroutine,
// and never holds the history's lock while it scans.
func (s *Store) ReadEvents(q EventQuery, dst []Event) (EventPage, error) {
	v, changed := s.hist.latest()
	chunks, base, first, next := v.chunks, v.base, v.first, v.next
	oldest, head := v.oldest, v.rev

	from := q.From
	if from == 0 {
		from = head + 1
	}
	page := EventPage{Events: dst, UpTo: from - 1, Head: head, Changed: changed}
	if from < oldest {
		return page, &CompactedError{Requested: from, Oldest: oldest}
	}
	last := head
	if q.To > 0 && q.To < last {
		last = q.To
	}
	if from > last {
		return page, nil
	}
	// The first event at or after from: revisions only grow with seq.
	lo, hi := first, next
	for lo < hi {
		mid := lo + (hi-lo)/2
		if at(chunks, base, mid).rev < from {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	var size, scanned int
	for seq := lo; seq < next; seq++ {
		e := at(chunks, base, seq)
		if e.rev > last {
			break
		}
		if e.rev != page.UpTo && page.UpTo >= from && ((q.MaxBytes > 0 && size >= q.MaxBytes) || (q.MaxScan > 0 && scanned >= q.MaxScan)) {
			// A new revision after a full page: stop before it.
			return page, nil
		}
		page.UpTo = e.rev
		scanned++
		key := e.key()
		if q.Exact && !bytes.Equal(key, q.Prefix) || !q.Exact && !bytes.HasPrefix(key, q.Prefix) {
			continue
		}
		ev := Event{Type: EventPut}
		if e.cur != nil {
			ev.KV = e.cur.kv()
		} else {
			ev.Type = EventDelete
			ev.KV = KeyValue{Key: key, ModRevision: e.rev}
		}
		if q.WithPrev && e.prev != nil {
			ev.Prev, ev.HasPrev = e.prev.kv(), true
		}
		size += len(ev.KV.Key) + len(ev.KV.Value) + len(ev.Prev.Value)
		page.Events = append(page.Events, ev)
	}
	page.UpTo = last
	return page, nil
}

// HistoryChanged returns a channel closed once the history moves past
// what it holds now (a change is published, or the store restored).
func (s *Store) HistoryChanged() <-chan struct{} {
	_, c := s.hist.latest()
	return c
}

// latest returns the latest view and a channel closed once it is
// replaced. It takes the view and, if it is still the latest once its
// channel is taken, that channel: a publish after this point closes it
// (see history.store).
func (h *history) latest() (*histView, <-chan struct{}) {
	v := h.view.Load()
	changed := v.waitChan()
	if h.view.Load() != v {
		changed = closedChan // replaced meanwhile: the caller reads again at once
	}
	return v, changed
}

// HistoryBounds returns the oldest revision the history retains and the
// store's revision as of its last publish.
func (s *Store) HistoryBounds() (oldest, head uint64) {
	v := s.hist.view.Load()
	return v.oldest, v.rev
}

// record notes a change made by the entry being applied: cur is the key's
// new entry (nil: deleted), prev its previous one (nil: it did not
// exist). The events are published when the entry's apply ends.
func (s *Store) record(rev uint64, cur, prev *entry) {
	s.pending = append(s.pending, histEvent{rev: rev, cur: cur, prev: prev})
}

// publishPending publishes the entry's recorded events (with s.mu held,
// so the store never shows a revision its history lacks).
func (s *Store) publishPending() {
	if len(s.pending) == 0 {
		return
	}
	s.hist.publish(s.pending, s.rev)
	clear(s.pending)
	s.pending = s.pending[:0]
}
