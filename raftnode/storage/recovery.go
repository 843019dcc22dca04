package storage

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/internal/snap"
	"github.com/capraft/capraft/raftnode/internal/wal"
)

// Recovery says what Open found wrong with the data directory and what it
// did about it (see Options.Repair). The zero value: nothing was wrong.
type Recovery struct {
	// Repaired is true when Open found damage and repaired it; the store
	// then has a new incarnation.
	Repaired bool
	// Reason is the damage found, as an error message naming file and
	// offset.
	Reason string
	// File and Offset locate the damage.
	File   string
	Offset int64
	// CleanStop says the node had stopped cleanly before the damage, so
	// it cannot be a write torn by a crash.
	CleanStop bool
	// LastIndex is the log's last index after the repair; KnownLast the
	// last index it had reached, if known (0 if not).
	LastIndex, KnownLast uint64
	// Discarded lists what the repair removed from the log: segment
	// files, and the damaged segment's tail.
	Discarded []string
	// Quarantine is the directory the damaged data was moved to when
	// nothing of it was usable ("" if none); it is never deleted
	// automatically.
	Quarantine string
	// OldIncarnation and NewIncarnation: the store's incarnation before
	// and after the repair.
	OldIncarnation, NewIncarnation uint64
}

// Recovery reports what Open found damaged and repaired (the zero value
// if nothing). The node logs it and tells operators.
func (s *Store) Recovery() Recovery {
	r := s.rec
	r.Discarded = slices.Clone(r.Discarded)
	return r
}

// open recovers the directory. The VERSION file is written last when the
// directory is new, so that a VERSION file means a log was created: a
// directory with one and no log lost its log.
func (s *Store) open() error {
	present, err := s.readVersion()
	if err != nil {
		return err
	}
	var damage error
	if !present {
		empty, err := s.empty()
		if err != nil {
			return err
		}
		if !empty {
			damage = fmt.Errorf("%w: %s holds a log or snapshots but no %s file", ErrIncompatibleVersion, s.dir, versionFile)
			if !s.opts.Repair {
				return fmt.Errorf("%w; refusing to guess its format (with repair enabled it is moved aside and the node starts empty)", damage)
			}
		}
	}
	if damage == nil {
		// An incarnation is in VERSION since format 2, which is written
		// after the log: with one, the log must exist.
		damage = s.recover(present && s.inc != 0)
		if damage == nil {
			if s.rec.Repaired {
				s.rec.LastIndex = s.wal.LastIndex() // after any restart behind a snapshot
			}
			if s.inc == 0 {
				return s.assignIncarnation(present)
			}
			return nil
		}
		var d *wal.DamageError
		if errors.As(damage, &d) && d.Repairable || !s.opts.Repair {
			return s.damaged(damage) // not repairable: an I/O error, or Repair off
		}
		if !errors.As(damage, &d) && !errors.Is(damage, ErrUnrecoverable) {
			return damage
		}
	}
	return s.startOver(damage)
}

// damaged wraps a damage error found without Options.Repair (or one that
// is not damage at all) with what the operator can do.
func (s *Store) damaged(err error) error {
	var d *wal.DamageError
	if !errors.As(err, &d) && !errors.Is(err, ErrUnrecoverable) {
		return err
	}
	advice := "A node of a cluster with other members repairs this itself (storage Options.Repair; " +
		"raftnode enables it when it has peers): it discards what is damaged, takes a new storage incarnation and is " +
		"restored by the leader. A single-node cluster cannot, since nothing could restore what it would discard: restore " +
		s.dir + " from a backup"
	if errors.Is(err, ErrUnrecoverable) {
		return &damagedError{fmt.Sprintf("%v. %s", err, advice), err}
	}
	how := ""
	if d.CleanStop {
		how = " (it was stopped cleanly, so this is not a write torn by a crash)"
	}
	return &damagedError{fmt.Sprintf("storage: data directory %s is damaged%s: %v. %s", s.dir, how, err, advice), err}
}

// damagedError is what Open returns for damage without Options.Repair:
// it is ErrDamaged and the damage found.
type damagedError struct {
	msg string
	err error
}

func (e *damagedError) Error() string   { return e.msg }
func (e *damagedError) Unwrap() []error { return []error{ErrDamaged, e.err} }

// recover opens the snapshot store and the log and checks that they fit
// together. With Repair, damage in the log is repaired through the WAL's
// Repair hook (new incarnation first); what cannot be repaired that way is
// returned.
func (s *Store) recover(existing bool) error {
	fs := s.opts.fs
	for _, d := range []string{walDir, snapDir} {
		if err := fs.MkdirAll(path.Join(s.dir, d)); err != nil {
			return fmt.Errorf("create %s: %w", path.Join(s.dir, d), err)
		}
	}
	snaps, err := snap.Open(fs, path.Join(s.dir, snapDir), s.opts.KeepSnapshots, s.log.Named("snap"))
	if err != nil {
		return err
	}
	s.snaps = snaps
	meta, ok, err := snaps.Newest()
	if err != nil {
		return err
	}
	wo := wal.Options{
		FS: fs, Dir: path.Join(s.dir, walDir), SegmentSize: s.opts.SegmentSize,
		MaxRecordSize: s.opts.MaxEntrySize, Logger: s.log.Named("wal"), Prealloc: s.opts.prealloc,
		EntryCacheBytes: s.opts.EntryCacheBytes, NoDirectIO: s.opts.NoDirectIO, Existing: existing,
		OnFsync: s.opts.OnFsync,
	}
	if s.opts.Repair {
		wo.Repair = s.repairLog
	}
	w, err := wal.Open(wo)
	if err != nil {
		return err
	}
	s.wal = w
	start := w.Start()
	switch {
	case start.Index > 0 && !ok:
		return fmt.Errorf("%w: %s: the log starts after entry %d but no valid snapshot exists", ErrUnrecoverable, s.dir, start.Index)
	case ok && meta.Index < start.Index:
		return fmt.Errorf("%w: %s: the log starts after entry %d but the newest valid snapshot is at %d", ErrUnrecoverable, s.dir, start.Index, meta.Index)
	case ok && meta.Index == start.Index && meta.Term != start.Term:
		return fmt.Errorf("%w: %s: snapshot %d has term %d but the log says %d", ErrUnrecoverable, s.dir, meta.Index, meta.Term, start.Term)
	case ok && meta.Index > start.Index:
		// The snapshot became durable but a crash may have come before the
		// log recorded it (or a repair cut the log back before it). Record
		// it now, so the log is reset exactly as the interrupted Save would
		// have done (kept if it holds the snapshot's entry, discarded
		// otherwise).
		if t, err := w.Term(meta.Index); err != nil || t != meta.Term {
			s.log.Info("log does not contain the newest snapshot's entry; restarting the log after it",
				"snapshot_index", meta.Index, "snapshot_term", meta.Term)
			if err := w.Save(wal.Batch{Snapshot: &wal.SnapRef{Index: meta.Index, Term: meta.Term}}); err != nil {
				return fmt.Errorf("record snapshot %d in wal: %w", meta.Index, err)
			}
		}
	}
	s.snapMeta, s.hasSnap = meta, ok
	return nil
}

// repairLog is the WAL's Repair hook: before the log is cut back, the
// store takes a new incarnation, durably.
func (s *Store) repairLog(d *wal.DamageError) error {
	s.rec.Reason, s.rec.File, s.rec.Offset = d.Error(), d.File, d.Offset
	s.rec.CleanStop, s.rec.LastIndex, s.rec.KnownLast, s.rec.Discarded = d.CleanStop, d.LastIndex, d.KnownLast, d.Discard
	if err := s.renewIncarnation(); err != nil {
		return err
	}
	s.log.Error("data directory damaged: repairing it by discarding what is damaged; this node no longer counts as the voter it was until the leader restores it",
		"damage", d.Error(), "file", d.File, "offset", d.Offset, "clean_stop", d.CleanStop,
		"keeps_through_index", d.LastIndex, "known_last_index", d.KnownLast, "discard", d.Discard,
		"old_incarnation", fmt.Sprintf("%016x", s.rec.OldIncarnation), "new_incarnation", fmt.Sprintf("%016x", s.inc))
	return nil
}

// startOver handles damage that leaves nothing usable: a new incarnation
// is made durable, the log and snapshots are moved aside into a quarantine
// directory, and the store starts empty.
func (s *Store) startOver(damage error) error {
	if s.rec.Reason == "" {
		s.rec.Reason = damage.Error()
		var d *wal.DamageError
		if errors.As(damage, &d) {
			s.rec.File, s.rec.Offset, s.rec.CleanStop, s.rec.KnownLast = d.File, d.Offset, d.CleanStop, d.KnownLast
		}
	}
	if !s.rec.Repaired {
		if err := s.renewIncarnation(); err != nil {
			return err
		}
	}
	if s.wal != nil {
		s.wal.Abandon()
		s.wal = nil
	}
	q, err := s.quarantine()
	if err != nil {
		return err
	}
	s.rec.Quarantine, s.rec.LastIndex, s.rec.Discarded = q, 0, []string{q}
	s.log.Error("data directory damaged beyond repair: moved its log and snapshots aside and starting empty; the leader will restore this node",
		"damage", damage, "moved_to", q,
		"old_incarnation", fmt.Sprintf("%016x", s.rec.OldIncarnation), "new_incarnation", fmt.Sprintf("%016x", s.inc))
	if err := s.recover(false); err != nil {
		return fmt.Errorf("start empty after moving damaged data to %s: %w", q, err)
	}
	return nil
}

// quarantine moves the files of wal/ and snap/ into a new directory
// damaged-<UTC time>[-N]/ and returns its path.
func (s *Store) quarantine() (string, error) {
	fs := s.opts.fs
	names, err := fs.List(s.dir)
	if err != nil {
		return "", fmt.Errorf("list data dir %s: %w", s.dir, err)
	}
	base := quarantinePrefix + time.Now().UTC().Format("20060102T150405Z")
	name := base
	for k := 1; slices.Contains(names, name); k++ {
		name = fmt.Sprintf("%s-%d", base, k)
	}
	q := path.Join(s.dir, name)
	for _, sub := range []string{walDir, snapDir} {
		src, dst := path.Join(s.dir, sub), path.Join(q, sub)
		files, err := fs.List(src)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("list %s: %w", src, err)
		}
		if err := fs.MkdirAll(dst); err != nil {
			return "", fmt.Errorf("create %s: %w", dst, err)
		}
		for _, f := range files {
			if err := fs.Rename(path.Join(src, f), path.Join(dst, f)); err != nil {
				return "", fmt.Errorf("move %s to %s: %w", path.Join(src, f), dst, err)
			}
		}
		if err := fs.SyncDir(dst); err != nil {
			return "", fmt.Errorf("sync %s: %w", dst, err)
		}
		if err := fs.SyncDir(src); err != nil {
			return "", fmt.Errorf("sync %s: %w", src, err)
		}
	}
	return q, nil
}

// empty reports whether the directory (which has no VERSION file) holds
// at most what an Open cut short while creating it leaves: no snapshot,
// and a log with nothing written to it.
func (s *Store) empty() (bool, error) {
	names, err := s.opts.fs.List(path.Join(s.dir, snapDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("list %s: %w", path.Join(s.dir, snapDir), err)
	}
	if len(names) > 0 {
		return false, nil
	}
	return wal.Empty(s.opts.fs, path.Join(s.dir, walDir))
}
