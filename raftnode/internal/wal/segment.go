package wal

import (
	"fmt"
	"math"
	"path"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// segment is one segment file of the log, open for as long as it is part
// of the log (reads of old entries go through f).
type segment struct {
	seq       uint64
	prevIndex uint64 // last index when the segment was started
	// low is the lowest index below which this segment's records reach
	// back: min over its entries of index-1 and its snapshot resets. An
	// overwrite can reach below prevIndex; replaying from this segment as
	// the first then needs the previous one, so Compact keeps it.
	low  uint64
	name string
	f    vfs.File
	// writable: f was opened read-write (the active segment, or one that
	// may become active at recovery).
	writable bool
}

// rollover starts a new segment. Called with wmu held (or during Open).
func (w *WAL) rollover() error {
	var seq uint64 = 1
	if w.active != nil {
		seq = w.active.seq + 1
	}
	w.mu.RLock()
	last := w.lastIndex()
	lastTerm, _ := w.term(last)
	hs := w.hs
	w.mu.RUnlock()
	name := segName(seq, last+1)
	p := path.Join(w.dir, name)
	if w.active != nil {
		// A segment is only ever left with slack (zeros past its data) if
		// it was preallocated larger than it was filled (SegmentSize
		// lowered between runs). Trim it, so that every segment but the
		// last ends exactly at its last record.
		if size, err := w.active.f.Size(); err == nil && size > w.woff {
			if err := w.active.f.Truncate(w.woff); err != nil {
				return fmt.Errorf("trim wal segment %s: %w", w.active.name, err)
			}
			if err := w.active.f.Sync(); err != nil {
				return fmt.Errorf("sync wal segment %s: %w", w.active.name, err)
			}
		}
	}
	f := w.takeSpare()
	fromSpare := f != nil
	if !fromSpare {
		var err error
		if f, err = w.fs.Create(p); err != nil {
			return fmt.Errorf("create wal segment %s: %w", p, err)
		}
	}
	buf := AppendSegmentHeader(nil, SegmentHeader{Version: formatVersion, Seq: seq, PrevIndex: last, PrevTerm: lastTerm}, hs)
	if _, err := f.WriteAt(buf, 0); err != nil {
		f.Close()
		return fmt.Errorf("write wal segment header %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync wal segment %s: %w", p, err)
	}
	if fromSpare {
		// The header is durable before the name appears, so a renamed
		// spare is never mistaken for a torn segment.
		if err := w.fs.Rename(path.Join(w.dir, spareName), p); err != nil {
			f.Close()
			return fmt.Errorf("rename wal spare to %s: %w", p, err)
		}
	}
	// The new name must be durable before anything in it is acknowledged.
	if err := w.fs.SyncDir(w.dir); err != nil {
		f.Close()
		return fmt.Errorf("sync wal dir %s: %w", w.dir, err)
	}
	seg := &segment{seq: seq, prevIndex: last, name: name, f: f, writable: true, low: math.MaxUint64}
	w.mu.Lock()
	w.segs = append(w.segs, seg)
	w.mu.Unlock()
	w.active, w.woff = seg, int64(len(buf))
	return w.startDirect()
}

// writable reopens s read-write if it was opened read-only.
func (w *WAL) writable(s *segment) error {
	if s.writable {
		return nil
	}
	p := path.Join(w.dir, s.name)
	f, err := w.fs.OpenRW(p)
	if err != nil {
		return fmt.Errorf("reopen wal segment %s: %w", p, err)
	}
	s.f.Close()
	s.f, s.writable = f, true
	return nil
}
