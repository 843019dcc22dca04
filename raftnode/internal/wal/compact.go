package wal

import (
	"fmt"
	"math"
	"path"
)

// Compact forgets entries up to and including index (which must be in the
// log) and deletes every segment whose entries are all at or below
// min(index, keepFrom): keepFrom lets the caller keep the log reachable from
// an older snapshot. Segments are removed oldest first, each removal made
// durable before the next, so a crash never leaves a hole in the sequence.
func (w *WAL) Compact(index, keepFrom uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if index > w.marker.Index {
		t, err := w.term(index)
		if err != nil {
			return fmt.Errorf("wal: compact to %d: %w", index, err)
		}
		k := index - w.marker.Index
		w.ents = append([]entLoc(nil), w.ents[k:]...)
		w.marker = SnapRef{Index: index, Term: t}
		w.cache.dropTo(index)
	}
	bound := min(keepFrom, w.marker.Index)
	// Segment 0 can go once segment 1 can start a replay: everything in
	// segment 0 is at or below segment 1's prevIndex (which must be
	// covered by bound), and no later segment reaches back below it.
	low := uint64(math.MaxUint64)
	lows := make([]uint64, len(w.segs)) // lows[k]: min low over segs[k:]
	for k := len(w.segs) - 1; k >= 0; k-- {
		low = min(low, w.segs[k].low)
		lows[k] = low
	}
	// Delete one at a time while the next segment can start a replay, so
	// that a crash between two removals still leaves a valid first segment.
	n := 0
	for n+1 < len(w.segs) && w.segs[n+1].prevIndex <= bound && lows[n+1] >= w.segs[n+1].prevIndex {
		s := w.segs[n]
		p := path.Join(w.dir, s.name)
		if err := w.fs.Remove(p); err != nil {
			w.segs = w.segs[n:]
			return fmt.Errorf("remove wal segment %s: %w", p, err)
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			w.segs = w.segs[n+1:]
			return fmt.Errorf("sync wal dir %s: %w", w.dir, err)
		}
		s.f.Close()
		n++
	}
	w.segs = w.segs[n:]
	return nil
}
