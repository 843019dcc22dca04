package storage

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/snap"
	"github.com/capraft/capraft/raftnode/storage/vfs"
	"github.com/capraft/capraft/raftnode/storage/wal"
)

// FormatVersion is the data directory format this build writes. Format 1
// (before incarnations) is read, and upgraded on open.
const FormatVersion = 2

const (
	versionFile = "VERSION"
	lockFile    = "LOCK"
	walDir      = "wal"
	snapDir     = "snap"
	// quarantinePrefix names the directories damaged data is moved to.
	quarantinePrefix = "damaged-"
)

var (
	// ErrIncompatibleVersion: the directory was written by a different
	// storage format version. Nothing is changed on disk.
	ErrIncompatibleVersion = errors.New("storage: incompatible data directory version")
	// ErrWrongNode: the directory belongs to a different node id. Opening it
	// would make this node impersonate another, so it is refused.
	ErrWrongNode = errors.New("storage: data directory belongs to a different node")
	// ErrLocked: another process (or another Store in this one) has the
	// directory open.
	ErrLocked = vfs.ErrLocked
	// ErrUnrecoverable: the log cannot be rebuilt from what is on disk (for
	// example the snapshot the log starts after is missing or corrupt).
	// Such errors also wrap ErrDamaged.
	ErrUnrecoverable = errors.New("storage: data directory cannot be recovered")
	// ErrDamaged: the directory is damaged (Open without Options.Repair):
	// a record fails its checksum, the log lost a suffix after a clean
	// stop, a file is missing. The error names file and offset.
	ErrDamaged = errors.New("storage: data directory is damaged")
)

// Options configure Open. The zero value (plus NodeID) is a sensible default.
type Options struct {
	// NodeID is this node's Raft id; it is recorded when the directory is
	// created and checked on every open. Must not be zero.
	NodeID uint64
	// FS is the file system; default vfs.OS. Tests pass a crashfs.FS.
	FS vfs.FS
	// Logger receives recovery warnings and info; default hclog.NewNullLogger().
	Logger hclog.Logger
	// SegmentSize is the WAL segment size; default 64 MiB.
	SegmentSize int64
	// MaxEntrySize caps one entry's encoded size (data + 17 bytes); default
	// 64 MiB. Larger entries are refused by Save; larger records on disk are
	// treated as corruption.
	MaxEntrySize uint32
	// TrailingEntries is how many entries before the compaction index
	// Compact keeps, so slow followers can catch up from the log rather than
	// from a snapshot. Default 0.
	TrailingEntries uint64
	// TrailingBytes bounds the payload of the TrailingEntries kept, so
	// that a log of large entries is not kept whole (default 0: no bound
	// beyond TrailingEntries).
	TrailingBytes uint64
	// KeepSnapshots is how many snapshots to retain (default 2). With 2 or
	// more, a corrupt newest snapshot can be replaced by the previous one
	// and the log replayed forward from it, because Compact never deletes
	// log segments the oldest retained snapshot still needs.
	KeepSnapshots int
	// Prealloc chooses how WAL segments are zero-filled ahead of use
	// (default wal.PreallocAsync). Simulations and crash tests over
	// crashfs should use wal.PreallocSync (deterministic) together with a
	// small SegmentSize, since crashfs keeps every byte in memory.
	Prealloc wal.PreallocMode
	// EntryCacheBytes bounds the WAL's in-memory cache of the newest
	// entries, which serves Entries for recent ranges without a read:
	// 0 means wal.DefaultEntryCacheBytes (4 MiB), negative disables it.
	EntryCacheBytes int64
	// NoDirectIO makes the WAL write through the page cache and fdatasync
	// instead of O_DIRECT|O_DSYNC (see wal.Options.NoDirectIO). Direct I/O
	// is used by default where the file system supports it; crashfs models
	// it too.
	NoDirectIO bool
	// Repair makes Open repair a damaged directory instead of failing with
	// ErrDamaged. It first makes a new incarnation durable (the store may
	// have lost entries or votes it acknowledged, so it must no longer
	// count as the voter that acknowledged them), then cuts the log back
	// to the valid prefix before the damage, keeping the snapshots that
	// verify; if nothing usable is left, it moves the damaged data aside
	// (<dir>/damaged-<UTC time>/, never deleted automatically) and starts
	// empty. Recovery reports what it did. A node sets it when it has
	// peers to be restored from; a single-node cluster must not, since
	// nothing could restore what the repair discards.
	Repair bool
	// Rand is the source of incarnations; default crypto/rand.Reader.
	// Simulations pass a seeded source so that runs replay.
	Rand io.Reader
}

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

// Store is the durable raft.Storage: a write-ahead log plus a snapshot
// store in one data directory. See the package documentation for the
// contract. Its methods are safe for concurrent use.
type Store struct {
	dir   string
	opts  Options
	log   hclog.Logger
	lock  io.Closer
	wal   *wal.WAL
	snaps *snap.Store
	inc   uint64   // incarnation; fixed once Open returns
	rec   Recovery // what Open repaired

	mu       sync.Mutex // guards snapshot state; serialises snapshot-changing calls
	snapMeta raft.SnapshotMeta
	hasSnap  bool
	closed   bool

	// The leader's chunks are read from one verified reader of the
	// newest snapshot, opened at its first chunk and kept until a newer
	// snapshot replaces it or the store closes: each file is read and
	// verified once, not once per chunk. Its own lock, so that no file
	// read happens under mu.
	sendMu     sync.Mutex
	sender     *snap.Reader // nil: none open
	sendClosed bool
}

var (
	_ raft.Storage        = (*Store)(nil)
	_ raft.SnapshotReader = (*Store)(nil)
)

// Open opens (creating if needed) the data directory dir for node
// opts.NodeID, takes its lock, and recovers the log and the newest valid
// snapshot. Anything damaged other than a write torn by a crash makes it
// fail with an error wrapping ErrDamaged that names the file and offset,
// unless opts.Repair is set (see there).
func Open(dir string, opts Options) (*Store, error) {
	if opts.NodeID == 0 {
		return nil, errors.New("storage: Options.NodeID must be set")
	}
	if opts.FS == nil {
		opts.FS = vfs.OS
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.KeepSnapshots <= 0 {
		opts.KeepSnapshots = 2
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	fs := opts.FS
	if err := fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	lock, err := fs.Lock(path.Join(dir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("open data dir %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger, lock: lock}
	if err := s.open(); err != nil {
		if s.wal != nil {
			s.wal.Abandon()
		}
		lock.Close()
		return nil, err
	}
	return s, nil
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
	fs := s.opts.FS
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
		MaxRecordSize: s.opts.MaxEntrySize, Logger: s.log.Named("wal"), Prealloc: s.opts.Prealloc,
		EntryCacheBytes: s.opts.EntryCacheBytes, NoDirectIO: s.opts.NoDirectIO, Existing: existing,
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
	fs := s.opts.FS
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
	names, err := s.opts.FS.List(path.Join(s.dir, snapDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("list %s: %w", path.Join(s.dir, snapDir), err)
	}
	if len(names) > 0 {
		return false, nil
	}
	return wal.Empty(s.opts.FS, path.Join(s.dir, walDir))
}

// newIncarnation draws a random non-zero incarnation.
func (s *Store) newIncarnation() (uint64, error) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(s.opts.Rand, b[:]); err != nil {
			return 0, fmt.Errorf("storage: draw an incarnation: %w", err)
		}
		if inc := binary.LittleEndian.Uint64(b[:]); inc != 0 {
			return inc, nil
		}
	}
}

// renewIncarnation makes a new incarnation durable (in VERSION) before
// anything the old one acknowledged is discarded.
func (s *Store) renewIncarnation() error {
	inc, err := s.newIncarnation()
	if err != nil {
		return err
	}
	if err := s.writeVersion(inc); err != nil {
		return fmt.Errorf("storage: record a new incarnation before repairing %s: %w", s.dir, err)
	}
	s.rec.Repaired, s.rec.OldIncarnation, s.rec.NewIncarnation = true, s.inc, inc
	s.inc = inc
	return nil
}

// assignIncarnation gives a new directory (or one written before
// incarnations existed) its incarnation, recorded in VERSION.
func (s *Store) assignIncarnation(upgrade bool) error {
	inc, err := s.newIncarnation()
	if err != nil {
		return err
	}
	if err := s.writeVersion(inc); err != nil {
		return err
	}
	s.inc = inc
	if upgrade {
		s.log.Info("data directory upgraded to format 2: assigned a storage incarnation", "dir", s.dir, "incarnation", fmt.Sprintf("%016x", inc))
	}
	return nil
}

// readVersion reads the VERSION file into s.inc (0 for format 1, which has
// no incarnation) and checks it; present is false if there is none.
func (s *Store) readVersion() (present bool, err error) {
	fs := s.opts.FS
	p := path.Join(s.dir, versionFile)
	f, err := fs.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", p, err)
	}
	if size > 4096 {
		return false, fmt.Errorf("%w: %s is %d bytes, not a version file", ErrIncompatibleVersion, p, size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	var format, node, inc uint64
	var sawFormat, sawNode, sawInc bool
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "format":
			format, err = strconv.ParseUint(v, 10, 64)
			sawFormat = err == nil
		case "node":
			node, err = strconv.ParseUint(v, 10, 64)
			sawNode = err == nil
		case "incarnation":
			inc, err = strconv.ParseUint(v, 16, 64)
			sawInc = err == nil && inc != 0
		}
	}
	if !bytes.HasPrefix(b, []byte("capraft-storage\n")) || !sawFormat || !sawNode {
		return false, fmt.Errorf("%w: %s is not a capraft storage version file", ErrIncompatibleVersion, p)
	}
	if format != 1 && format != FormatVersion {
		return false, fmt.Errorf("%w: %s has format %d, this build reads formats 1 and %d", ErrIncompatibleVersion, s.dir, format, FormatVersion)
	}
	if format == FormatVersion && !sawInc {
		return false, fmt.Errorf("%w: %s has format %d but no valid incarnation line", ErrIncompatibleVersion, p, format)
	}
	if node != s.opts.NodeID {
		return false, fmt.Errorf("%w: %s belongs to node %d, not %d", ErrWrongNode, s.dir, node, s.opts.NodeID)
	}
	s.inc = inc
	return true, nil
}

// writeVersion atomically (temporary file, fsync, rename, directory fsync)
// writes the VERSION file with incarnation inc.
func (s *Store) writeVersion(inc uint64) error {
	fs := s.opts.FS
	content := fmt.Sprintf("capraft-storage\nformat %d\nnode %d\nincarnation %016x\n", FormatVersion, s.opts.NodeID, inc)
	tmp := path.Join(s.dir, versionFile+".tmp")
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := f.WriteAt([]byte(content), 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	f.Close()
	if err := fs.Rename(tmp, path.Join(s.dir, versionFile)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	if err := fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sync data dir %s: %w", s.dir, err)
	}
	return nil
}

// Incarnation returns the incarnation of this store's storage: a random
// non-zero number chosen when the directory was created (or first opened
// by a build with incarnations), and chosen anew when Open repaired
// damage. It is raft.Config.Incarnation.
func (s *Store) Incarnation() uint64 { return s.inc }

// Recovery reports what Open found damaged and repaired (the zero value
// if nothing). The node logs it and tells operators.
func (s *Store) Recovery() Recovery {
	r := s.rec
	r.Discarded = slices.Clone(r.Discarded)
	return r
}

// Save makes one Raft Ready durable with a single durable write of the log
// (pwrite+fdatasync, or one O_DIRECT|O_DSYNC write in direct mode): the
// snapshot (if any, written to its own file first), the entries, then the
// hard state (skipped if empty). An entry at an index already in the log
// replaces the log from that index on. When Save returns nil all of it
// survives a crash and the read methods reflect it; when it returns an
// error nothing of it has been reported durable (and after an I/O error the
// store refuses further writes: reopen it).
//
// Concurrent Save calls without a snapshot are committed together with one
// fsync (group commit). A snapshot whose entry the log already holds keeps
// the log; otherwise the log is discarded and restarts after the snapshot.
func (s *Store) Save(hs raft.HardState, ents []raft.Entry, sn *raft.Snapshot) error {
	defer s.closeStaleSender()
	var b wal.Batch
	if !hs.IsEmpty() {
		b.HardState = &hs
	}
	b.Entries = ents
	if sn == nil || sn.IsEmpty() {
		if err := s.wal.Save(b); err != nil {
			return fmt.Errorf("storage: save: %w", err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap && sn.Meta.Index < s.snapMeta.Index {
		return fmt.Errorf("storage: save snapshot %d, have %d: %w", sn.Meta.Index, s.snapMeta.Index, raft.ErrSnapOutOfDate)
	}
	ref := snap.Ref{Index: sn.Meta.Index, Term: sn.Meta.Term}
	// A snapshot received through ReceiveSnapshot is already durable.
	if !s.snaps.Has(ref) {
		if err := s.snaps.Save(*sn); err != nil {
			return fmt.Errorf("storage: save snapshot %d: %w", ref.Index, err)
		}
	}
	b.Snapshot = &wal.SnapRef{Index: ref.Index, Term: ref.Term}
	if err := s.wal.Save(b); err != nil {
		return fmt.Errorf("storage: save: %w", err)
	}
	s.snapMeta, s.hasSnap = sn.Meta, true
	return nil
}

// CreateSnapshot durably stores a snapshot of the application state as of
// entry index (which must be committed and still in the log), with the
// membership cs in effect there. The log is not compacted: call Compact.
func (s *Store) CreateSnapshot(index uint64, cs raft.ConfState, data []byte) error {
	defer s.closeStaleSender() // after mu is released
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap && index <= s.snapMeta.Index {
		return fmt.Errorf("storage: create snapshot at %d, have %d: %w", index, s.snapMeta.Index, raft.ErrSnapOutOfDate)
	}
	if c := s.wal.HardState().Commit; index > c {
		return fmt.Errorf("storage: create snapshot at %d beyond commit index %d", index, c)
	}
	t, err := s.wal.Term(index)
	if err != nil {
		return fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	meta := raft.SnapshotMeta{Index: index, Term: t, ConfState: cs}
	if err := s.snaps.Save(raft.Snapshot{Meta: meta, Data: data}); err != nil {
		return fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	s.snapMeta, s.hasSnap = meta, true
	return nil
}

// Compact discards log entries up to index-TrailingEntries and deletes WAL
// segments no longer needed. index must not be above the current snapshot.
// Segments the oldest retained snapshot would need for a replay are kept, so
// falling back from a corrupt newest snapshot stays possible. After a
// restart FirstIndex may be lower than before (whole segments are the unit
// of deletion), never higher.
func (s *Store) Compact(index uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hasSnap || index > s.snapMeta.Index {
		return fmt.Errorf("storage: compact to %d beyond snapshot %d: %w", index, s.snapMeta.Index, raft.ErrUnavailable)
	}
	target := index - min(index, s.opts.TrailingEntries)
	if s.opts.TrailingBytes > 0 {
		target = s.wal.KeepBack(index, s.opts.TrailingEntries, s.opts.TrailingBytes)
	}
	refs, err := s.snaps.List()
	if err != nil {
		return err
	}
	keepFrom := s.snapMeta.Index
	for _, r := range refs {
		keepFrom = min(keepFrom, r.Index)
	}
	if err := s.wal.Compact(target, keepFrom); err != nil {
		return fmt.Errorf("storage: compact to %d: %w", target, err)
	}
	return nil
}

// InitialState implements raft.Storage. The commit index is raised to the
// snapshot index if a crash separated the two (a snapshot is committed
// state), and never exceeds what the log and snapshot hold (a repair may
// have cut the log back).
func (s *Store) InitialState() (raft.HardState, raft.ConfState, error) {
	hs := s.wal.HardState()
	last := s.wal.LastIndex()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap {
		hs.Commit = max(hs.Commit, s.snapMeta.Index)
		last = max(last, s.snapMeta.Index)
	}
	hs.Commit = min(hs.Commit, last)
	return hs, s.snapMeta.ConfState, nil
}

// Entries implements raft.Storage. The newest entries are served from the
// WAL's entry cache, older ones read back from the log files. The returned
// Data may be shared: callers must not modify it.
func (s *Store) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	return s.wal.Entries(lo, hi, maxBytes)
}

// Term implements raft.Storage without touching the disk.
func (s *Store) Term(i uint64) (uint64, error) { return s.wal.Term(i) }

// LastIndex implements raft.Storage.
func (s *Store) LastIndex() (uint64, error) { return s.wal.LastIndex(), nil }

// FirstIndex implements raft.Storage. It can be below the snapshot index + 1
// when TrailingEntries keeps a tail of the log, or after a restart.
func (s *Store) FirstIndex() (uint64, error) { return s.wal.Start().Index + 1, nil }

// Snapshot implements raft.Storage: it reads the newest snapshot, data and
// all, into memory. To stream a large one use OpenSnapshot.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	meta, ok := s.snapMeta, s.hasSnap
	s.mu.Unlock()
	if !ok {
		return raft.Snapshot{}, nil
	}
	return s.snaps.Load(snap.Ref{Index: meta.Index, Term: meta.Term})
}

// SnapshotMeta returns the newest snapshot's metadata without reading its
// data; ok is false if there is none.
func (s *Store) SnapshotMeta() (meta raft.SnapshotMeta, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapMeta, s.hasSnap
}

// OpenSnapshot opens the newest snapshot for chunked reading (for sending
// InstallSnapshot): the checksum is verified by streaming before it returns,
// and the data is then served by Read/ReadAt without loading it whole.
func (s *Store) OpenSnapshot() (*snap.Reader, error) {
	s.mu.Lock()
	meta, ok := s.snapMeta, s.hasSnap
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("storage: no snapshot: %w", snap.ErrNotFound)
	}
	return s.snaps.Open(snap.Ref{Index: meta.Index, Term: meta.Term})
}

// SnapshotChunk implements raft.SnapshotReader: the leader reads each
// chunk it sends to a follower from the newest snapshot file, which is
// opened and verified once (its first chunk) and kept open for every
// transfer of it, instead of loading and verifying the whole file per
// chunk as Snapshot would. The checksum is the one the file carries,
// verified on opening.
func (s *Store) SnapshotChunk(off, max uint64) (raft.SnapshotChunk, error) {
	meta, ok := s.SnapshotMeta()
	if !ok {
		return raft.SnapshotChunk{}, nil
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		return raft.SnapshotChunk{}, fmt.Errorf("storage: read snapshot %d: store closed: %w", meta.Index, raft.ErrSnapshotTemporarilyUnavailable)
	}
	r := s.sender
	if r == nil || r.Meta().Index != meta.Index || r.Meta().Term != meta.Term {
		if r != nil {
			s.sender = nil
			r.Close()
		}
		var err error
		if r, err = s.snaps.Open(snap.Ref{Index: meta.Index, Term: meta.Term}); err != nil {
			return raft.SnapshotChunk{}, fmt.Errorf("storage: open snapshot %d to send: %w", meta.Index, err)
		}
		s.sender = r
	}
	size := uint64(r.Size())
	c := raft.SnapshotChunk{Meta: r.Meta(), Size: size, Checksum: r.Checksum()}
	if off < size {
		c.Data = make([]byte, min(max, size-off))
		if n, err := r.ReadAt(c.Data, int64(off)); n < len(c.Data) {
			return raft.SnapshotChunk{}, fmt.Errorf("storage: read snapshot %d at offset %d: %w", meta.Index, off, err)
		}
	}
	return c, nil
}

// closeStaleSender closes the reader SnapshotChunk keeps open if a newer
// snapshot replaced its own, so the file's space is not held after
// retention deletes it. Call it without mu held.
func (s *Store) closeStaleSender() {
	meta, _ := s.SnapshotMeta()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if r := s.sender; r != nil && (r.Meta().Index != meta.Index || r.Meta().Term != meta.Term) {
		s.sender = nil
		r.Close()
	}
}

// ReceiveSnapshot starts writing a snapshot that arrives in chunks (an
// InstallSnapshot from the leader). After Writer.Commit the file is durable
// but not yet in effect: pass a raft.Snapshot with the same Meta to Save
// (as the core's Ready will) to install it; Save then skips rewriting it.
// If the node restarts in between, Open adopts the newest snapshot on disk
// as if Save had run (a snapshot is committed state, so this is safe).
func (s *Store) ReceiveSnapshot(meta raft.SnapshotMeta) (*snap.Writer, error) {
	return s.snaps.Create(meta)
}

// Stats returns the write-ahead log's counters: saves, fsyncs (their ratio
// is the group-commit factor), bytes, fsync time, segments.
func (s *Store) Stats() wal.Stats { return s.wal.Stats() }

// Close closes the log and releases the directory lock.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.sendMu.Lock()
	s.sendClosed = true
	if s.sender != nil {
		s.sender.Close()
		s.sender = nil
	}
	s.sendMu.Unlock()
	err := s.wal.Close()
	if lerr := s.lock.Close(); lerr != nil && err == nil {
		err = fmt.Errorf("release lock of %s: %w", s.dir, lerr)
	}
	return err
}
