package wal

import (
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// Batch is what one Save makes durable, in this order: the snapshot
// reference, the entries, the hard state. Any part may be empty.
type Batch struct {
	// Snapshot, if set, records a durable snapshot (see TypeSnapshot).
	Snapshot *SnapRef
	// Entries must have consecutive indexes; the first may be at most
	// LastIndex()+1 and must be above the log's start. An entry at an index
	// already in the log replaces the log from that index on.
	Entries []raft.Entry
	// HardState, if set, replaces the stored hard state.
	HardState *raft.HardState
}

func (b *Batch) empty() bool { return b.Snapshot == nil && len(b.Entries) == 0 && b.HardState == nil }

type request struct {
	b    Batch
	done chan error
}

// errLead tells a waiting Save that it must run the next commit round.
var errLead = errors.New("wal: lead the next commit round")

// Save makes b durable: when it returns nil, everything in b survives a
// crash and is visible to readers. Concurrent Saves are committed together
// with one write and one fsync, in the order they were queued. After a write
// or fsync error the WAL refuses all further Saves (the state of the page
// cache is unknown after a failed fsync); reopen to recover.
func (w *WAL) Save(b Batch) error {
	if b.empty() {
		return nil
	}
	r := &request{b: b, done: make(chan error, 1)}
	w.qmu.Lock()
	w.queue = append(w.queue, r)
	lead := !w.leading
	w.leading = true
	w.qmu.Unlock()
	if !lead {
		if err := <-r.done; err != errLead {
			return err
		}
	}
	w.runRound()
	return <-r.done
}

// runRound commits the head of the queue, then hands leadership to the next
// waiter, so no caller is kept serving others forever.
func (w *WAL) runRound() {
	w.qmu.Lock()
	n := 1
	// A snapshot reference can reset the log, so it is committed in a round
	// of its own: validation of later batches then sees a simple state.
	if w.queue[0].b.Snapshot == nil {
		for n < len(w.queue) && w.queue[n].b.Snapshot == nil {
			n++
		}
	}
	reqs := append([]*request(nil), w.queue[:n]...)
	w.queue = w.queue[n:]
	w.qmu.Unlock()

	w.commit(reqs)

	w.qmu.Lock()
	if len(w.queue) > 0 {
		w.queue[0].done <- errLead
	} else {
		w.leading = false
	}
	w.qmu.Unlock()
}

// pendingRec is a record written in this round, applied after the fsync.
// Only what apply reads is kept, plus an entry's data for the entry cache
// (a copy: nil when the cache is off or the entry too big for it).
type pendingRec struct {
	typ         RecordType
	index, term uint64 // entry or snapshot reference
	hs          raft.HardState
	off         int64
	size        uint32
	etype       raft.EntryType
	data        []byte
	cached      bool // data holds the entry's data
}

func (p *pendingRec) record() Record {
	r := Record{Type: p.typ, Hard: p.hs}
	switch p.typ {
	case TypeEntry:
		r.Entry = raft.Entry{Index: p.index, Term: p.term}
	case TypeSnapshot:
		r.Snap = SnapRef{Index: p.index, Term: p.term}
	}
	return r
}

// commit runs one commit round for reqs, in three steps: encode the valid
// batches into one buffer, make it durable with one write (and fsync),
// then publish the records to readers (index, entry cache, stats) and
// answer every request. Called by the round leader.
func (w *WAL) commit(reqs []*request) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	fail := func(err error) {
		for _, r := range reqs {
			r.done <- err
		}
	}
	if w.wclosed {
		fail(ErrClosed)
		return
	}
	if w.err != nil {
		fail(w.err)
		return
	}
	if w.woff >= w.segSize {
		if err := w.rollover(); err != nil {
			w.err = fmt.Errorf("wal unusable after failed segment rollover: %w", err)
			fail(w.err)
			return
		}
	}
	// buf holds the bytes to write from file offset base on: the new
	// records, preceded in direct mode by the durable partial last block.
	base, buf := w.woff, w.buf[:0]
	if w.dio != nil {
		base, buf = w.tailOff, w.buf
	}
	prefix := len(buf)
	// Made here, not in encode, so that they can stay on this stack.
	errs := make([]error, len(reqs))
	recs := make([][]pendingRec, len(reqs))
	buf = w.encode(reqs, base, buf, recs, errs)
	var fsyncTook time.Duration
	written := len(buf) - prefix // new record bytes
	if written > 0 {
		var err error
		if buf, fsyncTook, err = w.write(buf, prefix); err != nil {
			w.err = err
			fail(w.err)
			return
		}
		w.woff += int64(written)
		if w.woff >= w.segSize/2 {
			w.prepareSpare()
		}
	}
	w.publish(reqs, recs, errs, written, fsyncTook)
	if w.dio != nil {
		if written == 0 {
			buf = buf[:prefix] // nothing written: keep just the tail
		}
	} else if int64(cap(buf)) > w.bufKeep {
		buf = nil // don't pin a huge batch's buffer
	}
	w.buf = buf
	for k, r := range reqs {
		r.done <- errs[k]
	}
}

// encode checks each request's batch against the log as the batches before
// it in the round leave it, and appends the records of the valid ones to
// buf, whose first byte goes to file offset base. It returns the buffer,
// and sets recs[k] to request k's records (to publish once they are
// durable) or errs[k] to its error (a batch with an error is not written).
// Called with wmu held.
func (w *WAL) encode(reqs []*request, base int64, buf []byte, recs [][]pendingRec, errs []error) []byte {
	w.mu.RLock()
	marker, last := w.marker, w.lastIndex()
	var snapMatches bool
	if s := reqs[0].b.Snapshot; s != nil {
		t, err := w.term(s.Index)
		snapMatches = err == nil && t == s.Term
	}
	w.mu.RUnlock()

	// The cache gets its own copy of the entries' data, in one allocation
	// per round: the caller's slices are not ours to keep, and a copy costs
	// far less than the write it rides along with.
	var arena []byte
	if w.cache.max > 0 {
		n := 0
		for _, r := range reqs {
			for _, e := range r.b.Entries {
				if entryCost(&e) <= w.cache.max {
					n += len(e.Data)
				}
			}
		}
		arena = make([]byte, 0, n)
	}
	for k, r := range reqs {
		b := &r.b
		m, l := marker, last
		if s := b.Snapshot; s != nil && !snapMatches {
			if s.Index < m.Index {
				errs[k] = fmt.Errorf("wal: snapshot %d is older than the log start %d: %w", s.Index, m.Index, raft.ErrSnapOutOfDate)
				continue
			}
			m, l = *s, s.Index
		}
		if err := w.validate(b.Entries, m, l); err != nil {
			errs[k] = err
			continue
		}
		prs := make([]pendingRec, 0, len(b.Entries)+2)
		if s := b.Snapshot; s != nil {
			off := base + int64(len(buf))
			buf = AppendSnapshot(buf, *s)
			prs = append(prs, pendingRec{typ: TypeSnapshot, index: s.Index, term: s.Term, off: off, size: snapSize})
		}
		for _, e := range b.Entries {
			off := base + int64(len(buf))
			buf = AppendEntry(buf, e)
			var data []byte
			cached := w.cache.max > 0 && entryCost(&e) <= w.cache.max
			if cached {
				// Full slice expression: a caller appending to one entry's
				// data must not run into the next one's.
				k := len(arena)
				arena = append(arena, e.Data...)
				data = arena[k:len(arena):len(arena)]
			}
			prs = append(prs, pendingRec{typ: TypeEntry, index: e.Index, term: e.Term, off: off, size: uint32(entryFixed + len(e.Data)), etype: e.Type, data: data, cached: cached})
		}
		if b.HardState != nil {
			off := base + int64(len(buf))
			buf = AppendHardState(buf, *b.HardState)
			prs = append(prs, pendingRec{typ: TypeHardState, hs: *b.HardState, off: off, size: hardSize})
		}
		recs[k] = prs
		marker, last = m, l
		if n := len(b.Entries); n > 0 {
			last = b.Entries[n-1].Index
		}
	}
	return buf
}

// write makes the round's records in buf (from buf[prefix:]) durable at the
// end of the active segment: in direct mode with one O_DIRECT|O_DSYNC write
// of whole blocks (see writeDirect), falling back to buffered writes for
// good if the kernel refuses it; else with a write and an fdatasync. It
// returns the buffer to keep for the next round and how long making it
// durable took. Called with wmu held.
func (w *WAL) write(buf []byte, prefix int) ([]byte, time.Duration, error) {
	written := len(buf) - prefix
	t0 := time.Now()
	if w.dio != nil {
		var err error
		buf, err = w.writeDirect(buf)
		if errors.Is(err, vfs.ErrDirectUnsupported) {
			// Refused before anything was written: write the same
			// bytes the buffered way, now and from now on.
			w.log.Warn("direct write refused; wal writes are buffered with fdatasync from now on", "error", err)
			w.stopDirect()
			buf = buf[prefix:]
		} else if err != nil {
			return buf, 0, err
		}
	}
	if w.dio == nil {
		if _, err := w.active.f.WriteAt(buf, w.woff); err != nil {
			return buf, 0, fmt.Errorf("write wal segment %s at offset %d: %w", w.active.name, w.woff, err)
		}
		t0 = time.Now()
		if err := w.active.f.Sync(); err != nil {
			return buf, 0, fmt.Errorf("sync wal segment %s: %w", w.active.name, err)
		}
	}
	took := time.Since(t0)
	if took > slowFsync {
		// Slow fsyncs are what turn into missed heartbeats and
		// elections; make them visible.
		w.log.Warn("slow wal fsync", "segment", w.active.name, "bytes", written, "took", took)
	}
	return buf, took, nil
}

// publish makes a durable round visible to readers: it counts it in the
// stats and applies its records to the entry index and the entry cache.
// A record that does not apply (which validation rules out) sets its
// request's error and makes the WAL refuse further writes. Called with wmu
// held.
func (w *WAL) publish(reqs []*request, recs [][]pendingRec, errs []error, written int, fsyncTook time.Duration) {
	w.observeFsync(written, fsyncTook)
	w.mu.Lock()
	defer w.mu.Unlock()
	if written > 0 {
		w.stats.Fsyncs++
		w.stats.Saves += uint64(len(reqs))
		w.stats.BytesWritten += uint64(written)
		w.stats.FsyncTotal += fsyncTook
		w.stats.FsyncMax = max(w.stats.FsyncMax, fsyncTook)
	}
	for k := range reqs {
		for i := range recs[k] {
			pr := &recs[k][i]
			if pr.typ == TypeEntry && pr.index == w.lastIndex()+1 && pr.index > w.marker.Index {
				// Fast path for the common plain append; same effect as apply.
				w.active.low = min(w.active.low, pr.index-1)
				w.ents = appendLoc(w.ents, entLoc{term: pr.term, off: pr.off, seq: uint32(w.active.seq), size: pr.size})
				w.cacheEntry(pr)
				continue
			}
			if err := w.apply(pr.record(), w.active, pr.off, pr.size); err != nil {
				if errs[k] == nil {
					// Validation makes this unreachable; if it is reached the
					// log on disk and in memory may differ, so stop writing.
					w.err = fmt.Errorf("wal: applying committed record: %w", err)
					errs[k] = w.err
				}
				w.cache.reset()
				continue
			}
			if pr.typ == TypeEntry {
				w.cacheEntry(pr)
			}
		}
	}
}

// cacheEntry adds a committed entry to the entry cache. Called with mu held.
func (w *WAL) cacheEntry(pr *pendingRec) {
	if !pr.cached {
		// Not copied (cache off, or too big): the cache must still end at
		// the log's last entry, so it starts over.
		w.cache.reset()
		return
	}
	w.cache.add(raft.Entry{Index: pr.index, Term: pr.term, Type: pr.etype, Data: pr.data})
}

func (w *WAL) validate(ents []raft.Entry, marker SnapRef, last uint64) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].Index
	if first <= marker.Index {
		return fmt.Errorf("wal: append at index %d, at or below the log start %d: %w", first, marker.Index, raft.ErrCompacted)
	}
	if first > last+1 {
		return fmt.Errorf("wal: append at index %d leaves a gap after last index %d: %w", first, last, raft.ErrUnavailable)
	}
	for k, e := range ents {
		if e.Index != first+uint64(k) {
			return fmt.Errorf("wal: batch entries not consecutive: index %d at position %d after %d", e.Index, k, first)
		}
		if k > 0 && e.Term < ents[k-1].Term {
			return fmt.Errorf("wal: entry %d has term %d below the previous entry's %d", e.Index, e.Term, ents[k-1].Term)
		}
		if entryFixed+len(e.Data) > int(w.maxRec) {
			return fmt.Errorf("wal: entry %d is %d bytes, above the record limit %d", e.Index, len(e.Data), w.maxRec)
		}
	}
	return nil
}

// slowFsync is the fsync duration above which a warning is logged.
const slowFsync = time.Second
