package wal

import (
	"time"
)

// Stats are cumulative counters since Open.
type Stats struct {
	Saves        uint64        // Save calls committed (with at least one record)
	Fsyncs       uint64        // commit rounds: one write + one fdatasync, or one O_DSYNC write in direct mode
	BytesWritten uint64        // record bytes written by commits (without direct mode's block padding)
	FsyncTotal   time.Duration // time spent making commits durable (the fdatasync, or the whole direct write)
	FsyncMax     time.Duration // longest single commit's FsyncTotal share
	Segments     int           // segment files now
	Direct       bool          // the active segment is written with O_DIRECT|O_DSYNC
}

// Stats returns the counters (Saves/Fsyncs is the group-commit factor).
func (w *WAL) Stats() Stats {
	w.mu.RLock()
	defer w.mu.RUnlock()
	st := w.stats
	st.Segments = len(w.segs)
	st.Direct = w.dioOn
	return st
}

// Segments returns the number of segment files (for tests and metrics).
func (w *WAL) Segments() int {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return len(w.segs)
}

// observeFsync hands a commit round's durable write time to
// Options.OnFsync.
func (w *WAL) observeFsync(written int, took time.Duration) {
	if written > 0 && w.onFsync != nil {
		w.onFsync(took)
	}
}
