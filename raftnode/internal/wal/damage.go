package wal

import (
	"errors"
	"fmt"
	"os"
	"path"
)

// DamageError reports damage that recovery found in the log, other than a
// write torn by a crash: a record that fails its checksum or does not fit
// the log, a segment missing from the sequence, a suffix lost after a clean
// stop. The log may have lost entries it had acknowledged.
type DamageError struct {
	// File is the damaged or missing file; Offset where in it the damage
	// starts (0 for a missing or unreadable file).
	File   string
	Offset int64
	// CleanStop says the log had been stopped cleanly (Close), so even
	// damage to its final record is corruption, not a torn write.
	CleanStop bool
	// LastIndex is the log's last index after a repair: the valid prefix
	// before the damage, cut back to the commit index its hard state holds
	// (the prefix is the log as it was at some earlier moment, so entries
	// after that index may have been overwritten in what was lost), or to
	// the log's start if that is higher.
	LastIndex uint64
	// KnownLast is the last index the log had reached, when the clean-stop
	// marker says so; 0 if unknown.
	KnownLast uint64
	// Discard lists what a repair removes: whole segment files, and the
	// damaged segment's tail ("<file> from offset N").
	Discard []string
	// Repairable is false when nothing before the damage is usable (the
	// first segment has no valid header, or no segment is left): the log
	// must be set aside whole.
	Repairable bool

	msg   string
	cause error
	plan  cutPlan
}

// cutPlan is how a repair cuts the log back to its valid prefix.
type cutPlan struct {
	remove   []string // segment files to remove, oldest first
	keep     *segment // the damaged segment, kept up to off (nil: none)
	off      int64
	keepSize int64
}

func (e *DamageError) Error() string { return e.msg }

// Unwrap returns the record error behind the damage, if any
// (ErrCorruptRecord, ErrShortRecord).
func (e *DamageError) Unwrap() error { return e.cause }

// repairDamage handles damage d that replay found: it completes the report
// (what a repair keeps and discards), then returns d as the error unless
// the log can be repaired and Options.Repair agrees, in which case it cuts
// the log back to its valid prefix (see cut). It returns the updated ends
// (the end of the log in each of w.segs).
func (w *WAL) repairDamage(d *DamageError, stop *cleanStop, hasStop bool, ends []int64) ([]int64, error) {
	d.CleanStop = hasStop
	d.LastIndex = min(w.lastIndex(), max(w.hs.Commit, w.marker.Index))
	if stop != nil {
		d.KnownLast = stop.last
	}
	for _, n := range d.plan.remove {
		d.Discard = append(d.Discard, path.Join(w.dir, n))
	}
	if k := d.plan.keep; k != nil {
		d.Discard = append(d.Discard, fmt.Sprintf("%s from offset %d (%d bytes)", path.Join(w.dir, k.name), d.plan.off, d.plan.keepSize-d.plan.off))
	}
	if d.LastIndex < w.lastIndex() {
		d.Discard = append(d.Discard, fmt.Sprintf("entries %d to %d, after the commit index", d.LastIndex+1, w.lastIndex()))
	}
	var err error = d
	if w.repair != nil && d.Repairable {
		err = w.repair(d)
	}
	if err != nil {
		if k := d.plan.keep; k != nil {
			k.f.Close()
		}
		return ends, err
	}
	w.log.Error("wal damaged: cutting the log back to the valid prefix before the damage",
		"file", d.File, "offset", d.Offset, "damage", d.msg, "clean_stop", d.CleanStop,
		"last_index", d.LastIndex, "known_last_index", d.KnownLast, "discard", d.Discard)
	return w.cut(d, ends)
}

// cut carries out d's plan: later segments are removed newest first, each
// removal made durable before the next (so a crash leaves a contiguous
// sequence), and the damaged segment is truncated where its valid records
// end. Then, if the log goes beyond d.LastIndex, a truncation record ends
// it there: the valid prefix is the log as it was at some moment, and its
// entries after the commit index may since have been overwritten by a
// leader in what was lost; resurrected, a leader's commit index (which
// counted this node's old acknowledgements) could make it apply one. It
// returns the updated ends.
func (w *WAL) cut(d *DamageError, ends []int64) ([]int64, error) {
	p := &d.plan
	for i := len(p.remove) - 1; i >= 0; i-- {
		name := path.Join(w.dir, p.remove[i])
		if err := w.fs.Remove(name); err != nil && !isNotExist(err) {
			return ends, fmt.Errorf("remove damaged wal segment %s: %w", name, err)
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			return ends, fmt.Errorf("sync wal dir %s: %w", w.dir, err)
		}
	}
	if k := p.keep; k != nil {
		w.segs = append(w.segs, k)
		ends = append(ends, p.off)
		name := path.Join(w.dir, k.name)
		if err := w.writable(k); err != nil {
			return ends, err
		}
		if err := k.f.Truncate(p.off); err != nil {
			return ends, fmt.Errorf("truncate damaged wal segment %s at offset %d: %w", name, p.off, err)
		}
		if err := k.f.Sync(); err != nil {
			return ends, fmt.Errorf("sync wal segment %s: %w", name, err)
		}
	}
	if d.LastIndex < w.lastIndex() {
		t, err := w.term(d.LastIndex)
		if err != nil {
			return ends, fmt.Errorf("wal: truncate after %d: %w", d.LastIndex, err)
		}
		k := len(w.segs) - 1
		s, off := w.segs[k], ends[k]
		rec := AppendTruncate(nil, SnapRef{Index: d.LastIndex, Term: t})
		name := path.Join(w.dir, s.name)
		if err := w.writable(s); err != nil {
			return ends, err
		}
		if _, err := s.f.WriteAt(rec, off); err != nil {
			return ends, fmt.Errorf("write wal segment %s at offset %d: %w", name, off, err)
		}
		if err := s.f.Sync(); err != nil {
			return ends, fmt.Errorf("sync wal segment %s: %w", name, err)
		}
		if err := w.apply(Record{Type: TypeTruncate, End: SnapRef{Index: d.LastIndex, Term: t}}, s, off, snapSize); err != nil {
			return ends, fmt.Errorf("wal: %w", err)
		}
		ends[k] += int64(len(rec))
	}
	return ends, nil
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
