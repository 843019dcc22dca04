package storage

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/snap"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/raft"
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
	// EntryCacheBytes bounds the WAL's in-memory cache of the newest
	// entries, which serves Entries for recent ranges without a read:
	// 0 means 4 MiB, negative disables it.
	EntryCacheBytes int64
	// NoDirectIO makes the WAL write through the page cache and fdatasync
	// instead of O_DIRECT|O_DSYNC. Direct I/O is used by default where
	// the file system supports it.
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
	// Knobs are settings only tests and simulations inside this module
	// turn (a file system that injects faults or simulates crashes, and
	// how segments are preallocated); nil leaves production's.
	Knobs Knobs

	// fs and prealloc are the knobs in effect (Open).
	fs       vfs.FS
	prealloc wal.PreallocMode
	// OnFsync, if set, sees how long each write-ahead log commit took to
	// become durable (metrics). It must not block.
	OnFsync func(took time.Duration)
}

// Knobs carries a store's test-only settings (Options.Knobs). Only this
// module's tests and simulations can build knobs a store reads; a store
// ignores any other value.
type Knobs interface {
	// StorageKnobs marks the knobs.
	StorageKnobs()
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

	// mu guards the snapshot state. It is held for no file I/O but the
	// log write that installs a snapshot (Save), so a node's loop, which
	// reads the snapshot state through the core, never waits for a
	// snapshot being written or a compaction.
	mu       sync.Mutex
	snapMeta raft.SnapshotMeta
	hasSnap  bool
	closed   bool

	compactMu sync.Mutex // serialises Compact calls
}

var _ raft.Storage = (*Store)(nil)

// Open opens (creating if needed) the data directory dir for node
// opts.NodeID, takes its lock, and recovers the log and the newest valid
// snapshot. Anything damaged other than a write torn by a crash makes it
// fail with an error wrapping ErrDamaged that names the file and offset,
// unless opts.Repair is set (see there).
func Open(dir string, opts Options) (*Store, error) {
	if opts.NodeID == 0 {
		return nil, errors.New("storage: Options.NodeID must be set")
	}
	if k, ok := opts.Knobs.(*storeknobs.Knobs); ok && k != nil {
		opts.fs, opts.prealloc = k.FS, k.Prealloc
	}
	if opts.fs == nil {
		opts.fs = vfs.OS
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
	fs := opts.fs
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

// Save makes one Raft Ready durable with a single durable write of the log
// (pwrite+fdatasync, or one O_DIRECT|O_DSYNC write in direct mode): the
// snapshot (if any: received already through ReceiveSnapshot, or written
// from its Data to its own file first), the entries, then the
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
		if sn.Data == nil && sn.Meta.Index > raft.BootstrapSnapshot(raft.ConfState{}).Meta.Index {
			// Metadata alone (a leader's snapshot, as the core hands it
			// out) would store an empty state: its data must have been
			// received first.
			return fmt.Errorf("storage: save snapshot %d: no data, and it was not received: %w", ref.Index, snap.ErrNotFound)
		}
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

// Compact discards log entries up to index-TrailingEntries and deletes WAL
// segments no longer needed. index must not be above the current snapshot.
// Segments the oldest retained snapshot would need for a replay are kept, so
// falling back from a corrupt newest snapshot stays possible. After a
// restart FirstIndex may be lower than before (whole segments are the unit
// of deletion), never higher.
func (s *Store) Compact(index uint64) error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	// Only reading the snapshot state needs mu: the compaction itself
	// (segment files removed, the directory synced) runs without it.
	snapIndex, ok := s.SnapshotMeta()
	if !ok || index > snapIndex.Index {
		return fmt.Errorf("storage: compact to %d beyond snapshot %d: %w", index, snapIndex.Index, raft.ErrUnavailable)
	}
	target := index - min(index, s.opts.TrailingEntries)
	if s.opts.TrailingBytes > 0 {
		target = s.wal.KeepBack(index, s.opts.TrailingEntries, s.opts.TrailingBytes)
	}
	refs, err := s.snaps.List()
	if err != nil {
		return err
	}
	keepFrom := snapIndex.Index
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

// Stats returns the write-ahead log's counters: saves, fsyncs (their ratio
// is the group-commit factor), bytes, fsync time, segments.
func (s *Store) Stats() Stats { return Stats(s.wal.Stats()) }

// Stats are the write-ahead log's counters (Store.Stats).
type Stats struct {
	// Saves counts the Save calls committed (with at least one record),
	// Fsyncs the commit rounds (one write and one fdatasync, or one
	// O_DSYNC write in direct mode): Saves/Fsyncs is the group-commit
	// factor.
	Saves, Fsyncs uint64
	// BytesWritten counts the record bytes commits wrote (without direct
	// mode's block padding).
	BytesWritten uint64
	// FsyncTotal is the time spent making commits durable (the
	// fdatasync, or the whole direct write), FsyncMax the longest single
	// commit's share of it.
	FsyncTotal, FsyncMax time.Duration
	// Segments is the number of segment files now.
	Segments int
	// Direct reports whether the active segment is written with
	// O_DIRECT|O_DSYNC.
	Direct bool
}

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
