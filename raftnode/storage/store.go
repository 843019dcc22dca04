package storage

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/snap"
	"github.com/capraft/capraft/raftnode/storage/vfs"
	"github.com/capraft/capraft/raftnode/storage/wal"
)

// FormatVersion is the data directory format this build reads and writes.
const FormatVersion = 1

const (
	versionFile = "VERSION"
	lockFile    = "LOCK"
	walDir      = "wal"
	snapDir     = "snap"
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
	ErrUnrecoverable = errors.New("storage: data directory cannot be recovered")
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

	mu       sync.Mutex // guards snapshot state; serialises snapshot-changing calls
	snapMeta raft.SnapshotMeta
	inc      uint64 // storage incarnation, from VERSION
	hasSnap  bool
	closed   bool
}

var _ raft.Storage = (*Store)(nil)

// Open opens (creating if needed) the data directory dir for node
// opts.NodeID, takes its lock, and recovers the log and the newest valid
// snapshot. It refuses to open — returning an error that names the file
// and offset — if anything other than a torn final write is damaged.
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
			s.wal.Close()
		}
		lock.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open() error {
	fs := s.opts.FS
	if err := s.checkVersion(); err != nil {
		return err
	}
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
	w, err := wal.Open(wal.Options{
		FS: fs, Dir: path.Join(s.dir, walDir), SegmentSize: s.opts.SegmentSize,
		MaxRecordSize: s.opts.MaxEntrySize, Logger: s.log.Named("wal"), Prealloc: s.opts.Prealloc,
		EntryCacheBytes: s.opts.EntryCacheBytes, NoDirectIO: s.opts.NoDirectIO,
	})
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
		// log recorded it. Record it now, so the log is reset exactly as the
		// interrupted Save would have done (kept if it holds the snapshot's
		// entry, discarded otherwise).
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

// checkVersion reads the VERSION file, or writes it into a new directory.
func (s *Store) checkVersion() error {
	fs := s.opts.FS
	p := path.Join(s.dir, versionFile)
	f, err := fs.Open(p)
	if err != nil {
		names, lerr := fs.List(s.dir)
		if lerr != nil {
			return fmt.Errorf("list data dir %s: %w", s.dir, lerr)
		}
		for _, n := range names {
			if n == walDir || n == snapDir {
				return fmt.Errorf("%w: %s holds %s/ but no %s file; refusing to guess its format", ErrIncompatibleVersion, s.dir, n, versionFile)
			}
		}
		return s.writeVersion()
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("stat %s: %w", p, err)
	}
	if size > 4096 {
		return fmt.Errorf("%w: %s is %d bytes, not a version file", ErrIncompatibleVersion, p, size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", p, err)
	}
	var format, node, inc uint64
	var sawFormat, sawNode bool
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
			inc, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	if !bytes.HasPrefix(b, []byte("capraft-storage\n")) || !sawFormat || !sawNode {
		return fmt.Errorf("%w: %s is not a capraft storage version file", ErrIncompatibleVersion, p)
	}
	if format != FormatVersion {
		return fmt.Errorf("%w: %s has format %d, this build reads format %d", ErrIncompatibleVersion, s.dir, format, FormatVersion)
	}
	if node != s.opts.NodeID {
		return fmt.Errorf("%w: %s belongs to node %d, not %d", ErrWrongNode, s.dir, node, s.opts.NodeID)
	}
	if inc == 0 {
		// Written before incarnations: this storage gets one now.
		return s.writeVersion()
	}
	s.inc = inc
	return nil
}

// newIncarnation returns a random non-zero incarnation.
func newIncarnation() uint64 {
	var b [8]byte
	for {
		if _, err := crand.Read(b[:]); err != nil {
			panic(fmt.Errorf("storage: no randomness for an incarnation: %w", err))
		}
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// Incarnation identifies this storage: a random number chosen when the
// data directory was created (see raft.Config.Incarnation).
func (s *Store) Incarnation() uint64 { return s.inc }

func (s *Store) writeVersion() error {
	fs := s.opts.FS
	inc := newIncarnation()
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
	s.inc = inc
	return nil
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
// snapshot index if a crash separated the two (a snapshot is committed state).
func (s *Store) InitialState() (raft.HardState, raft.ConfState, error) {
	hs := s.wal.HardState()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap && hs.Commit < s.snapMeta.Index {
		hs.Commit = s.snapMeta.Index
	}
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
	err := s.wal.Close()
	if lerr := s.lock.Close(); lerr != nil && err == nil {
		err = fmt.Errorf("release lock of %s: %w", s.dir, lerr)
	}
	return err
}
