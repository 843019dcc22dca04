package wal

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/raft"
)

// HardState returns the durable hard state.
func (w *WAL) HardState() raft.HardState {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.hs
}

// Start returns the index and term of the entry just before the first live
// entry (the compaction point).
func (w *WAL) Start() SnapRef {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.marker
}

// LastIndex returns the index of the last durable entry (Start().Index if none).
func (w *WAL) LastIndex() uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.lastIndex()
}

// KeepBack returns the lowest index lo, at most index, such that the
// entries in (lo, index] hold at most n entries and maxBytes of payload
// (each record's size, as written): where a compaction that keeps that
// much of the log before index starts. Entries before the log's start
// count as kept.
func (w *WAL) KeepBack(index, n, maxBytes uint64) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	lo := index - min(index, n)
	var total uint64
	for i := min(index, w.lastIndex()); i > lo && i > w.marker.Index; i-- {
		total += uint64(w.ents[i-w.marker.Index-1].size)
		if total > maxBytes {
			return i
		}
	}
	return lo
}

// Term returns the term of entry i for i in [Start().Index, LastIndex()],
// raft.ErrCompacted below and raft.ErrUnavailable above. No disk access.
func (w *WAL) Term(i uint64) (uint64, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.term(i)
}

// Entries returns the entries in [lo, hi), at most maxBytes of Data in total
// but at least one. Entries still in the entry cache (the newest, see
// Options.EntryCacheBytes) are served from memory; older ones are read back
// from the segment files (usually from the page cache), consecutive records
// with one read, and every record's checksum is verified again. The
// returned Data may be shared with the cache and other callers: do not
// modify it.
func (w *WAL) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if lo <= w.marker.Index {
		return nil, raft.ErrCompacted
	}
	if hi > w.lastIndex()+1 {
		return nil, raft.ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	locs := w.ents[lo-w.marker.Index-1 : hi-w.marker.Index-1]
	var total uint64
	for k, l := range locs {
		total += uint64(l.size - entryFixed)
		if k > 0 && total > maxBytes {
			locs = locs[:k]
			break
		}
	}
	out := make([]raft.Entry, 0, len(locs))
	// The tail of the range that is in the cache is copied from it; only
	// what lies before the cache is read from disk.
	var cached []raft.Entry
	if first, last, ok := w.cache.bounds(); ok && last == w.lastIndex() {
		end := lo + uint64(len(locs))
		if from := max(lo, first); from < end {
			cached = w.cache.ents[from-first : end-first]
			locs = locs[:from-lo]
		}
	}
	for len(locs) > 0 {
		// Extend a run of records that sit back to back in one segment.
		n, end := 1, locs[0].off+headerSize+int64(locs[0].size)
		for n < len(locs) && locs[n].seq == locs[0].seq && locs[n].off == end {
			end += headerSize + int64(locs[n].size)
			n++
		}
		seg := w.segs[locs[0].seq-uint32(w.segs[0].seq)]
		buf := make([]byte, end-locs[0].off)
		if _, err := seg.f.ReadAt(buf, locs[0].off); err != nil {
			return nil, fmt.Errorf("read wal segment %s at offset %d: %w", seg.name, locs[0].off, err)
		}
		for k := 0; k < n; k++ {
			rec, m, err := DecodeRecord(buf, w.maxRec)
			want := lo + uint64(len(out))
			if err == nil && (rec.Type != TypeEntry || rec.Entry.Index != want) {
				err = fmt.Errorf("%w: expected entry %d", ErrCorruptRecord, want)
			}
			if err != nil {
				return nil, fmt.Errorf("read wal segment %s at offset %d: %w", seg.name, locs[k].off, err)
			}
			out = append(out, rec.Entry)
			buf = buf[m:]
		}
		locs = locs[n:]
	}
	return append(out, cached...), nil
}
