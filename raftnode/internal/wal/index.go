package wal

import (
	"errors"
	"fmt"

	"github.com/capraft/capraft/raftnode/raft"
)

// entLoc locates one live entry: the term is kept in memory so Term() never
// touches the disk; the data is read back from the segment when asked for.
type entLoc struct {
	term uint64
	off  int64  // offset of the record frame in its segment
	seq  uint32 // segment sequence number (low 32 bits: 4 billion segments)
	size uint32 // payload length
}

// lastIndex is the index of the last live entry. Called with mu held (or
// by the round leader, the only writer, with wmu held).
func (w *WAL) lastIndex() uint64 { return w.marker.Index + uint64(len(w.ents)) }

// term is Term with mu held (or wmu, as for lastIndex).
func (w *WAL) term(i uint64) (uint64, error) {
	switch {
	case i == w.marker.Index:
		return w.marker.Term, nil
	case i < w.marker.Index:
		return 0, raft.ErrCompacted
	case i > w.lastIndex():
		return 0, raft.ErrUnavailable
	}
	return w.ents[i-w.marker.Index-1].term, nil
}

// apply folds one durable record into the in-memory state. The same code runs
// at recovery and after each fsync, so replay and live state cannot disagree.
func (w *WAL) apply(rec Record, seg *segment, off int64, size uint32) error {
	switch rec.Type {
	case TypeEntry:
		i := rec.Entry.Index
		seg.low = min(seg.low, i-1)
		if i <= w.marker.Index {
			return fmt.Errorf("entry %d is at or below the log start %d", i, w.marker.Index)
		}
		if i > w.lastIndex()+1 {
			return fmt.Errorf("entry %d after last index %d: index gap", i, w.lastIndex())
		}
		w.cache.truncateFrom(i) // an overwrite drops the cached suffix too
		w.ents = appendLoc(w.ents[:i-w.marker.Index-1], entLoc{term: rec.Entry.Term, off: off, seq: uint32(seg.seq), size: size})
	case TypeHardState:
		w.hs = rec.Hard
	case TypeSnapshot:
		seg.low = min(seg.low, rec.Snap.Index)
		if t, err := w.term(rec.Snap.Index); err == nil && t == rec.Snap.Term {
			return nil // the log already holds the snapshot's last entry: keep it
		}
		if rec.Snap.Index < w.marker.Index {
			return fmt.Errorf("snapshot %d older than the log start %d", rec.Snap.Index, w.marker.Index)
		}
		w.marker = rec.Snap
		w.ents = w.ents[:0]
		w.cache.reset()
	case TypeTruncate:
		i := rec.End.Index
		seg.low = min(seg.low, i)
		if t, err := w.term(i); err != nil || t != rec.End.Term {
			return fmt.Errorf("truncation after entry %d term %d, which the log does not hold", i, rec.End.Term)
		}
		w.ents = w.ents[:i-w.marker.Index]
		w.cache.truncateFrom(i + 1)
	case TypeSegment:
		return errors.New("segment header in the middle of a segment")
	}
	return nil
}

// appendLoc appends to the entry index, growing it by doubling: append's
// gentler growth for big slices would copy a multi-million-entry index
// several times over.
func appendLoc(ents []entLoc, l entLoc) []entLoc {
	if len(ents) == cap(ents) {
		grown := make([]entLoc, len(ents), 2*len(ents)+1024)
		copy(grown, ents)
		ents = grown
	}
	return append(ents, l)
}
