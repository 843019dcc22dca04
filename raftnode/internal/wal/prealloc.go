package wal

import (
	"fmt"
	"path"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// PreallocMode chooses how segment files are preallocated.
//
// Appending into blocks that were already written (zeros) and synced lets
// fdatasync skip the journal commit a file-size change needs: on the
// reference machine that cut the latency of a 73 KB append+fdatasync from
// ~210 µs to ~120 µs (docs/BENCHMARKS.md). fallocate(2) alone does not help
// on ext4 (unwritten extents still need a metadata update when written), so
// the spare segment is really written with zeros and fsynced, by a
// background goroutine during the second half of the current segment.
type PreallocMode uint8

const (
	// PreallocAsync fills the next segment in a background goroutine; the
	// very first segment is filled synchronously when the log is created.
	// If a rollover comes before the spare is ready, the new segment is
	// created unfilled rather than waiting.
	PreallocAsync PreallocMode = iota
	// PreallocSync fills the spare inline, right after the fsync of the
	// commit that crosses half the segment. Deterministic: for
	// simulations and crash tests over crashfs.
	PreallocSync
	// PreallocOff never preallocates (segments grow by appends).
	PreallocOff
)

// makeSpare writes a zero-filled, fsynced segment-sized temporary file.
func (w *WAL) makeSpare() (vfs.File, error) {
	p := path.Join(w.dir, spareName)
	f, err := w.fs.Create(p)
	if err != nil {
		return nil, fmt.Errorf("create wal spare %s: %w", p, err)
	}
	zeros := make([]byte, min(w.segSize, 1<<20))
	for off := int64(0); off < w.segSize; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), w.segSize-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			f.Close()
			return nil, fmt.Errorf("fill wal spare %s: %w", p, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync wal spare %s: %w", p, err)
	}
	return f, nil
}

// prepareSpare starts filling the next segment unless one is ready or being
// filled. Called with wmu held.
func (w *WAL) prepareSpare() {
	if w.prealloc == PreallocOff {
		return
	}
	w.spareMu.Lock()
	if w.spare != nil || w.spareBusy {
		w.spareMu.Unlock()
		return
	}
	w.spareBusy = true
	w.spareMu.Unlock()
	fill := func() {
		f, err := w.makeSpare()
		if err != nil {
			// Not fatal: the next segment is then created unfilled.
			w.log.Warn("wal segment preallocation failed", "error", err)
		}
		w.spareMu.Lock()
		w.spare, w.spareBusy = f, false
		w.spareMu.Unlock()
	}
	if w.prealloc == PreallocSync {
		fill()
		return
	}
	w.spareWG.Add(1)
	go func() {
		defer w.spareWG.Done()
		fill()
	}()
}

// fillFirstSpare fills the spare for the first segment of a new log,
// inline: the log is being created, nothing waits on it yet.
func (w *WAL) fillFirstSpare() {
	if w.prealloc == PreallocOff {
		return
	}
	f, err := w.makeSpare()
	if err != nil {
		w.log.Warn("could not preallocate the first wal segment", "error", err)
		return
	}
	w.spare = f
}

// takeSpare hands the ready spare to a rollover, or nil if there is none
// (a fill still in progress is not waited for).
func (w *WAL) takeSpare() vfs.File {
	w.spareMu.Lock()
	defer w.spareMu.Unlock()
	f := w.spare
	w.spare = nil
	return f
}

// dropSpare waits for a fill in progress, then closes and deletes the
// spare. Called by Close.
func (w *WAL) dropSpare() {
	w.spareWG.Wait()
	w.spareMu.Lock()
	defer w.spareMu.Unlock()
	if w.spare != nil {
		w.spare.Close()
		w.fs.Remove(path.Join(w.dir, spareName)) // best effort: Open removes it too
		w.spare = nil
	}
}
