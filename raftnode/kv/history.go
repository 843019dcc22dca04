package kv

import (
	"bytes"
	"fmt"
	"sync"
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

// history is the store's event history (see above).
type history struct {
	maxRevs  uint64
	maxBytes int64

	mu sync.Mutex
	// chunks hold the events with sequence numbers base.. (seq counts
	// every event ever published); those from first to next-1 are live.
	chunks            []*eventChunk
	base, first, next uint64
	bytes             int64
	// oldest is the oldest revision retained: every event from it on is
	// in the history; rev is the store's revision as of the last publish.
	oldest, rev uint64
	// changed is closed and replaced when rev moves (or the history is
	// reset), if a reader took it (handed): without readers, publishing
	// allocates nothing.
	changed chan struct{}
	handed  bool
}

func newHistory(cfg Config, rev uint64) *history {
	h := &history{maxRevs: uint64(cfg.HistoryRevisions), maxBytes: cfg.HistoryBytes, changed: make(chan struct{})}
	h.resetLocked(rev)
	return h
}

// at returns the slot of sequence number seq in chunks starting at base.
func at(chunks []*eventChunk, base, seq uint64) *histEvent {
	i := seq - base
	return &chunks[i/chunkLen][i%chunkLen]
}

// publish appends the events of one entry, which brought the store to
// rev, and trims the history to its bounds.
func (h *history) publish(evs []histEvent, rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range evs {
		if (h.next-h.base)%chunkLen == 0 && int(h.next-h.base)/chunkLen == len(h.chunks) {
			h.chunks = append(h.chunks, new(eventChunk))
		}
		*at(h.chunks, h.base, h.next) = evs[i]
		h.next++
		h.bytes += evs[i].cost()
	}
	h.rev = rev
	h.trimLocked()
	h.wake()
}

// wake closes the channel readers wait on, if any reader took it.
func (h *history) wake() {
	if h.handed {
		close(h.changed)
		h.changed, h.handed = make(chan struct{}), false
	}
}

// trimLocked drops the oldest revisions, whole, while the history is
// over a bound; the newest revision always stays.
func (h *history) trimLocked() {
	for h.first < h.next {
		first := at(h.chunks, h.base, h.first)
		if first.rev == h.rev || (h.rev-first.rev < h.maxRevs && h.bytes <= h.maxBytes) {
			break
		}
		rev := first.rev
		for h.first < h.next {
			e := at(h.chunks, h.base, h.first)
			if e.rev != rev {
				break
			}
			// The slot is not cleared: a reader may be scanning it. Its
			// chunk, and the entries it holds, go with the chunk.
			h.bytes -= e.cost()
			h.first++
		}
		h.oldest = rev + 1
	}
	// Drop the chunks wholly before first.
	if n := (h.first - h.base) / chunkLen; n > 0 {
		h.chunks = h.chunks[n:]
		h.base += n * chunkLen
		if cap(h.chunks) > 4*len(h.chunks)+16 {
			h.chunks = append([]*eventChunk(nil), h.chunks...)
		}
	}
}

// reset empties the history at revision rev (a restore): the oldest
// revision it can serve is rev+1.
func (h *history) reset(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resetLocked(rev)
	h.wake()
}

func (h *history) resetLocked(rev uint64) {
	// Readers holding the old chunks keep them; new ones start afresh.
	h.chunks, h.base, h.first, h.next, h.bytes = nil, 0, 0, 0, 0
	h.oldest, h.rev = rev+1, rev
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
	h := s.hist
	h.mu.Lock()
	chunks, base, first, next := h.chunks, h.base, h.first, h.next
	oldest, head, changed := h.oldest, h.rev, h.changed
	h.handed = true
	h.mu.Unlock()

	from := q.From
	if from == 0 {
		from = head + 1
	}
	page := EventPage{Events: dst, UpTo: from - 1, Head: head, Changed: changed}
	if from < oldest {
		return page, &CompactedError{Requested: from, Oldest: oldest}
	}
	if from > head {
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
	page.UpTo = head
	return page, nil
}

// HistoryBounds returns the oldest revision the history retains and the
// store's revision as of its last publish.
func (s *Store) HistoryBounds() (oldest, head uint64) {
	h := s.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.oldest, h.rev
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
