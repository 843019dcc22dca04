package wal

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"sort"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// Recovery: Open replays every segment, verifying every record. What a
// damaged record means depends on how the log was stopped. Close records a
// clean-stop marker (where the log ends) once everything is durable, and
// Open removes it, durably, before anything new is written:
//
//   - With the marker, no write was in flight, so nothing may be torn: any
//     record that fails its checksum (the final one included), a log that
//     ends before the marker says (a lost suffix), a segment missing or
//     written after it, is damage.
//   - Without it (a crash), the final record of the last segment may have
//     been cut short by the crash; if it looks torn (see looksTorn) it is
//     truncated with a warning: it was never acknowledged. Anything else is
//     damage.
//
// Damage is reported as a *DamageError naming file and offset. With
// Options.Repair set, Open instead cuts the log back to the valid prefix
// before the damage (after the Repair callback has run) and opens it.

// found is a segment file found at recovery.
type found struct {
	seq  uint64
	name string
}

// recover rebuilds the log's in-memory state from the directory: it
// removes leftovers (a spare, a half-written marker), reads the clean-stop
// marker, replays the segments in order, has any damage repaired or
// returns it, and makes the last segment the active one. The marker is
// removed, durably, before it returns.
func (w *WAL) recover() error {
	names, err := w.fs.List(w.dir)
	if err != nil {
		return fmt.Errorf("list wal dir %s: %w", w.dir, err)
	}
	var segs []found
	hasStop := false
	for _, n := range names {
		switch {
		case n == spareName, n == cleanStopTmp:
			// A spare never holds data (it may be half filled); a marker
			// being written when power failed was never in effect.
			if err := w.fs.Remove(path.Join(w.dir, n)); err != nil {
				return fmt.Errorf("remove stale %s: %w", path.Join(w.dir, n), err)
			}
		case n == cleanStopName:
			hasStop = true
		default:
			if seq, ok := parseSegName(n); ok {
				segs = append(segs, found{seq, n})
			}
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	var stop *cleanStop
	var stopDamage *DamageError
	if hasStop {
		if stop, stopDamage, err = w.readCleanStop(); err != nil {
			return err
		}
	}
	ends, d, err := w.replayAll(segs, stop, hasStop)
	if err != nil {
		return err
	}
	if d == nil {
		d = stopDamage
	}
	if d != nil {
		if ends, err = w.repairDamage(d, stop, hasStop, ends); err != nil {
			return err
		}
	}
	if len(w.segs) > 0 {
		k := len(w.segs) - 1
		if err := w.writable(w.segs[k]); err != nil {
			return err
		}
		w.active, w.woff = w.segs[k], ends[k]
	}
	if hasStop {
		// From here on a crash is a crash again: the marker must be gone
		// before anything is written.
		if err := w.fs.Remove(path.Join(w.dir, cleanStopName)); err != nil {
			return fmt.Errorf("remove wal clean-stop marker: %w", err)
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			return fmt.Errorf("sync wal dir %s: %w", w.dir, err)
		}
	}
	return nil
}

// replayAll replays segs in order into w.segs (and ends, the offset where
// each one's log ends), stopping at the first damage.
func (w *WAL) replayAll(segs []found, stop *cleanStop, hasStop bool) (ends []int64, d *DamageError, err error) {
	names := func(from int) []string {
		var out []string
		for _, s := range segs[from:] {
			out = append(out, s.name)
		}
		return out
	}
	for i, s := range segs {
		if i > 0 && s.seq != segs[i-1].seq+1 {
			d := &DamageError{File: path.Join(w.dir, segName(segs[i-1].seq+1, w.lastIndex()+1)), Repairable: true,
				msg: fmt.Sprintf("wal dir %s: segment %d missing between %s and %s", w.dir, segs[i-1].seq+1, segs[i-1].name, s.name)}
			d.plan.remove = names(i)
			return ends, d, nil
		}
		if stop != nil && s.seq > stop.seq {
			d := &DamageError{File: path.Join(w.dir, s.name), Repairable: true,
				msg: fmt.Sprintf("wal segment %s follows %s, in which the log was stopped cleanly", path.Join(w.dir, s.name), stop.seg)}
			d.plan.remove = names(i)
			return ends, d, nil
		}
		m := replayMode{first: i == 0, last: i == len(segs)-1, tornOK: !hasStop, stopAt: -1}
		if stop != nil && s.seq == stop.seq {
			m.last, m.stopAt = true, stop.off
		}
		seg, end, sd, err := w.replaySegment(s, m)
		if err != nil {
			return ends, nil, err
		}
		if sd != nil {
			sd.plan.remove = names(i + 1)
			if end > 0 {
				sd.plan.keep, sd.plan.off = seg, end
			} else {
				seg.f.Close()
				sd.plan.remove = names(i)
				sd.Repairable = i > 0
			}
			return ends, sd, nil
		}
		if seg == nil {
			continue // torn while being created, and removed
		}
		w.segs = append(w.segs, seg)
		ends = append(ends, end)
	}
	switch {
	case len(w.segs) == 0 && (hasStop || w.mustExist):
		return ends, &DamageError{File: w.dir, msg: fmt.Sprintf("wal dir %s holds no log segment, but the log was created before: it is lost", w.dir)}, nil
	case stop == nil:
		return ends, nil, nil
	case w.segs[len(w.segs)-1].seq < stop.seq:
		p := path.Join(w.dir, stop.seg)
		return ends, &DamageError{File: p, Repairable: true,
			msg: fmt.Sprintf("wal segment %s is missing: the log was stopped cleanly in it at entry %d, but now ends at entry %d", p, stop.last, w.lastIndex())}, nil
	}
	if t, _ := w.term(w.lastIndex()); w.lastIndex() != stop.last || t != stop.term {
		last := w.segs[len(w.segs)-1]
		return ends, &DamageError{File: path.Join(w.dir, last.name), Offset: ends[len(ends)-1], Repairable: true,
			msg: fmt.Sprintf("wal segment %s: the log ends at entry %d (term %d), but it was stopped cleanly at entry %d (term %d)", path.Join(w.dir, last.name), w.lastIndex(), t, stop.last, stop.term)}, nil
	}
	return ends, nil, nil
}

// replayMode says how one segment is replayed.
type replayMode struct {
	first  bool  // the first segment: its header starts the log
	last   bool  // the segment the log ends in (opened read-write)
	tornOK bool  // no clean stop: the final record may be torn by a crash
	stopAt int64 // >= 0: the clean-stop marker says the log ends here
}

// replaySegment reads one segment, applying its records to the in-memory
// state. It streams through a small buffer: memory is bounded by the largest
// record, which is bounded by maxRec. It returns the segment (open) and
// the offset where its log ends; on damage, the DamageError and the offset
// of the first damaged record (the segment stays open if that is not 0).
// A nil segment and no error: the segment was torn while being created
// and has been removed.
func (w *WAL) replaySegment(s found, m replayMode) (*segment, int64, *DamageError, error) {
	p := path.Join(w.dir, s.name)
	var f vfs.File
	var err error
	if m.last {
		f, err = w.fs.OpenRW(p)
	} else {
		f, err = w.fs.Open(p)
	}
	if err != nil {
		return nil, 0, nil, fmt.Errorf("open wal segment %s: %w", p, err)
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("stat wal segment %s: %w", p, err)
	}
	seg := &segment{seq: s.seq, name: s.name, f: f, writable: m.last, low: math.MaxUint64}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 256<<10)
	var (
		off     int64
		hdr     [headerSize]byte
		payload []byte
		clean   bool // stopped at zero-filled (preallocated) space
	)
	damaged := func(at int64, cause error) (*segment, int64, *DamageError, error) {
		return seg, at, &DamageError{File: p, Offset: at, Repairable: true, cause: cause,
			msg:  fmt.Sprintf("read wal segment %s at offset %d: %v", p, at, cause),
			plan: cutPlan{keepSize: size}}, nil
	}
	ioErr := func(at int64, err error) (*segment, int64, *DamageError, error) {
		f.Close()
		return nil, 0, nil, fmt.Errorf("read wal segment %s at offset %d: %w", p, at, err)
	}
	// Zeros may end the log anywhere in the last segment (preallocated
	// space, direct-write padding) unless a clean stop says where it ends;
	// a torn final record only after a crash.
	zeroEndOK := m.last && m.stopAt < 0
	tornOK := m.last && m.tornOK
	for off < size && (m.stopAt < 0 || off < m.stopAt) {
		if size-off < headerSize {
			if zeroEndOK && zerosFrom(f, off, size) {
				clean = true // zero padding shorter than a header
				break
			}
			if tornOK {
				break
			}
			return damaged(off, fmt.Errorf("%w: %d trailing bytes", ErrShortRecord, size-off))
		}
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return ioErr(off, err)
		}
		n, t, err := parseHeader(hdr[:], w.maxRec)
		if err != nil {
			// A header that fails its own checksum is the end of the log if
			// only zeros follow (preallocated space), and a torn tail if
			// only zeros follow the header; a valid header with a bad
			// length or type is corruption wherever it is.
			if errors.Is(err, errHeaderCRC) && zeroEndOK && zerosFrom(f, off, size) {
				clean = true
				break
			}
			if errors.Is(err, errHeaderCRC) && tornOK && zerosFrom(f, off+headerSize, size) {
				break // a partly written header followed only by zeros
			}
			return damaged(off, err)
		}
		end := off + headerSize + int64(n)
		if end > size {
			if tornOK {
				break
			}
			return damaged(off, fmt.Errorf("%w: record of %d bytes, %d left", ErrShortRecord, n, size-off-headerSize))
		}
		if m.stopAt >= 0 && end > m.stopAt {
			return damaged(off, fmt.Errorf("%w: record of %d bytes runs past offset %d, where the log was stopped cleanly", ErrCorruptRecord, n, m.stopAt))
		}
		if cap(payload) < headerSize+int(n) {
			payload = make([]byte, headerSize+int(n))
		}
		frame := payload[:headerSize+int(n)]
		copy(frame, hdr[:])
		if _, err := io.ReadFull(r, frame[headerSize:]); err != nil {
			return ioErr(off, err)
		}
		rec, _, err := DecodeRecord(frame, w.maxRec)
		if err != nil {
			// A sound header with a damaged payload is a torn write only if
			// it is the final record (nothing but zeros after it) and the
			// damage looks like unwritten space, not a flipped bit.
			if errors.Is(err, errPayloadCRC) && tornOK && (end == size || zerosFrom(f, end, size)) && looksTorn(frame, off) {
				break
			}
			return damaged(off, err)
		}
		if off == 0 {
			if t != TypeSegment {
				return damaged(off, fmt.Errorf("segment does not start with a header record (type %d)", t))
			}
			if rec.Seg.Version != formatVersion {
				f.Close()
				return nil, 0, nil, fmt.Errorf("read wal segment %s: segment format version %d, this build reads %d", p, rec.Seg.Version, formatVersion)
			}
			if rec.Seg.Seq != s.seq {
				return damaged(off, fmt.Errorf("header says segment %d, file name says %d", rec.Seg.Seq, s.seq))
			}
			seg.prevIndex = rec.Seg.PrevIndex
			if m.first {
				w.marker = SnapRef{Index: rec.Seg.PrevIndex, Term: rec.Seg.PrevTerm}
				w.ents = w.ents[:0]
				w.hs = rec.Hard
			} else if t, err := w.term(rec.Seg.PrevIndex); err != nil || t != rec.Seg.PrevTerm || rec.Seg.PrevIndex != w.lastIndex() {
				return damaged(off, fmt.Errorf("segment starts after entry %d term %d, but the log so far ends at %d (term %d): index gap", rec.Seg.PrevIndex, rec.Seg.PrevTerm, w.lastIndex(), t))
			}
		} else if err := w.apply(rec, seg, off, n); err != nil {
			return damaged(off, err)
		}
		off = end
	}
	if off == 0 {
		// Not even the header survived. After a crash that is only possible
		// for a segment being created when it hit: nothing in it was ever
		// durable.
		if !tornOK || (m.first && s.seq != 1) {
			return damaged(0, errors.New("segment has no valid header"))
		}
		f.Close()
		w.log.Warn("removing wal segment torn during creation", "file", p, "bytes", size)
		if err := w.fs.Remove(p); err != nil {
			return nil, 0, nil, fmt.Errorf("remove torn wal segment %s: %w", p, err)
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			return nil, 0, nil, fmt.Errorf("sync wal dir %s: %w", w.dir, err)
		}
		return nil, 0, nil, nil
	}
	if m.stopAt >= 0 && off < m.stopAt {
		return damaged(off, fmt.Errorf("%w: the segment ends at offset %d, but the log was stopped cleanly at offset %d: its tail is lost", ErrShortRecord, off, m.stopAt))
	}
	if off < size && !clean {
		msg := "truncating torn write at end of wal"
		if m.stopAt >= 0 {
			// After the end of a cleanly stopped log: preallocated zeros,
			// or damage to space that holds nothing of the log.
			if zerosFrom(f, off, size) {
				return seg, off, nil, nil
			}
			msg = "bytes after the end of the cleanly stopped wal are not zeros; truncating them (no entry is lost)"
		}
		w.log.Warn(msg, "file", p, "offset", off, "dropped_bytes", size-off)
		if err := f.Truncate(off); err != nil {
			f.Close()
			return nil, 0, nil, fmt.Errorf("truncate wal segment %s at offset %d: %w", p, off, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, 0, nil, fmt.Errorf("sync wal segment %s: %w", p, err)
		}
	}
	return seg, off, nil, nil
}

// sectorSize is the unit a disk writes atomically (at least).
const sectorSize = 512

// looksTorn reports whether a record frame that fails its checksum shows the
// mark of an interrupted write rather than of corruption: its tail is zero
// (the write stopped part-way through the record, in zero-filled space) or
// one of the disk sectors it spans reads as all zeros (a sector that was
// never written). A flipped bit in a complete record shows neither, and is
// reported as corruption instead of being truncated away.
func looksTorn(frame []byte, off int64) bool {
	if len(frame) == 0 || frame[len(frame)-1] == 0 {
		return true
	}
	for start := 0; start < len(frame); {
		end := min(len(frame), start+sectorSize-int((off+int64(start))%sectorSize))
		zero := true
		for _, c := range frame[start:end] {
			if c != 0 {
				zero = false
				break
			}
		}
		if zero {
			return true
		}
		start = end
	}
	return false
}

// zerosFrom reports whether f holds only zero bytes in [off, size).
func zerosFrom(f vfs.File, off, size int64) bool {
	buf := make([]byte, 64<<10)
	for off < size {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		m, err := f.ReadAt(buf[:n], off)
		for _, b := range buf[:m] {
			if b != 0 {
				return false
			}
		}
		if err != nil && !(errors.Is(err, io.EOF) && int64(m) == n) {
			return false
		}
		off += n
	}
	return true
}
