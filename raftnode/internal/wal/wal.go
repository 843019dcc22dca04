package wal

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// DefaultSegmentSize is the size after which the log rolls to a new segment.
const DefaultSegmentSize = 64 << 20

// ErrClosed is returned by calls on a closed WAL.
var ErrClosed = errors.New("wal: closed")

// Options configure Open.
type Options struct {
	// FS is the file system; default vfs.OS.
	FS vfs.FS
	// Dir holds the segment files; it must exist.
	Dir string
	// SegmentSize: a segment is closed for writing once it reaches this many
	// bytes (a batch never spans segments, so one may run over). Default 64 MiB.
	SegmentSize int64
	// MaxRecordSize caps a record's payload, on write and on recovery.
	// Default DefaultMaxRecordSize.
	MaxRecordSize uint32
	// Logger receives warnings (torn tail truncated) and recovery stats.
	// Default: a null logger.
	Logger hclog.Logger
	// Prealloc says how new segments are zero-filled ahead of use; see
	// PreallocMode. Default PreallocAsync.
	Prealloc PreallocMode
	// EntryCacheBytes bounds the cache of the newest entries' data, from
	// which Entries serves recent ranges without reading the segments.
	// 0 means DefaultEntryCacheBytes; a negative value disables the cache.
	EntryCacheBytes int64
	// Repair, if set, lets Open repair damage (see DamageError) instead
	// of failing: it is called with the damage before anything on disk
	// changes, and if it returns nil the log is cut back to the valid
	// prefix before the damage (later segments removed, the damaged one
	// truncated) and opened. If it returns an error, Open fails with it.
	// Damage that leaves nothing usable (Repairable false) is returned
	// as the error either way. The storage makes a new incarnation
	// durable here, since the log may have lost entries it acknowledged.
	Repair func(*DamageError) error
	// Existing says the log was created before (its data directory is
	// initialised): finding no segment at all is then damage (the log is
	// lost), not a new log.
	Existing bool
	// NoDirectIO turns direct I/O off: appends are then written through
	// the page cache and made durable with fdatasync. By default, if FS
	// implements vfs.DirectFS and the file system accepts O_DIRECT, the
	// active segment is written with O_DIRECT|O_DSYNC in whole aligned
	// blocks (see Save), which costs less time and CPU per durable append.
	NoDirectIO bool
	// OnFsync, if set, sees how long each commit round took to become
	// durable (the fdatasync, or the whole direct write), for metrics.
	// It runs on the committing goroutine and must not block.
	OnFsync func(took time.Duration)
}

// WAL is a segmented write-ahead log of Raft entries and hard state.
// Reads (Term, Entries, ...) are safe concurrently with Save and with each
// other. Save calls from many goroutines are grouped: one write and one fsync
// for everything queued (group commit).
type WAL struct {
	fs        vfs.FS
	dir       string
	segSize   int64
	maxRec    uint32
	log       hclog.Logger
	repair    func(*DamageError) error
	mustExist bool
	onFsync   func(time.Duration) // Options.OnFsync, or nil

	// Commit queue (commit.go). leading is true while some caller is
	// running commit rounds.
	qmu     sync.Mutex
	queue   []*request
	leading bool

	// Writer state, owned by whoever holds wmu (the round leader;
	// commit.go, segment.go).
	wmu      sync.Mutex
	active   *segment
	woff     int64 // end of valid data in the active segment
	buf      []byte
	wclosed  bool
	err      error // sticky: after a failed write or fsync nothing more is written
	prealloc PreallocMode

	// Direct mode (direct.go): dio writes the active segment with
	// O_DIRECT|O_DSYNC; nil in buffered mode. buf then always starts with
	// the bytes of the active segment's partial last block, [tailOff, woff).
	direct  bool // try direct I/O for new active segments
	dio     vfs.DirectWriter
	tailOff int64
	dioOn   bool // dio != nil, for Stats; guarded by mu
	// Buffer sizes: directBufSize and maxKeptBuf, lowered by tests so that
	// small random batches exercise regrowing and shrinking the buffer.
	bufSize, bufKeep int64

	// Spare segment, filled with zeros ahead of the next rollover
	// (prealloc.go).
	spareMu   sync.Mutex
	spare     vfs.File // ready, or nil
	spareBusy bool     // a fill is in progress
	spareWG   sync.WaitGroup

	// Read state: what is durable (index.go, read.go; cache.go).
	mu     sync.RWMutex
	stats  Stats      // updated by the round leader with mu held
	segs   []*segment // ascending seq, contiguous; last is active
	marker SnapRef    // the entry before the first live one (index, term)
	ents   []entLoc   // ents[k] is index marker.Index+1+k
	hs     raft.HardState
	cache  entryCache // data of the newest entries; see entryCache
}

// Open recovers the log in opts.Dir (creating the first segment if there is
// none and opts.Existing is false) and returns it ready for appends. Every
// record of every segment is checksummed. After a crash (no clean-stop
// marker), a torn record at the end of the last segment is truncated away
// with a warning. Any other damage is a *DamageError naming the file and
// offset, or, with opts.Repair, is cut away (see Options.Repair).
func Open(opts Options) (*WAL, error) {
	if opts.FS == nil {
		opts.FS = vfs.OS
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.MaxRecordSize == 0 {
		opts.MaxRecordSize = DefaultMaxRecordSize
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.EntryCacheBytes == 0 {
		opts.EntryCacheBytes = DefaultEntryCacheBytes
	}
	w := &WAL{fs: opts.FS, dir: opts.Dir, segSize: opts.SegmentSize, maxRec: opts.MaxRecordSize, log: opts.Logger, prealloc: opts.Prealloc,
		repair: opts.Repair, mustExist: opts.Existing, onFsync: opts.OnFsync}
	w.cache.max = opts.EntryCacheBytes
	w.bufSize, w.bufKeep = directBufSize, maxKeptBuf
	w.direct = !opts.NoDirectIO
	if _, ok := w.fs.(vfs.DirectFS); !ok && w.direct {
		w.direct = false
		w.log.Debug("file system has no direct I/O; wal writes are buffered")
	}
	start := time.Now()
	if err := w.recover(); err != nil {
		w.closeFiles()
		return nil, err
	}
	if w.active != nil {
		if err := w.startDirect(); err != nil {
			w.closeFiles()
			return nil, err
		}
	} else {
		w.fillFirstSpare()
		if err := w.rollover(); err != nil {
			w.closeFiles()
			return nil, err
		}
	}
	w.log.Info("wal recovered", "dir", w.dir, "segments", len(w.segs), "first_index", w.marker.Index+1,
		"last_index", w.lastIndex(), "term", w.hs.Term, "commit", w.hs.Commit, "elapsed", time.Since(start),
		"write_mode", w.writeMode())
	return w, nil
}

// closeFiles closes the direct handle and every segment file, and returns
// the first error: for Close, and for Open giving up.
func (w *WAL) closeFiles() error {
	var first error
	if w.dio != nil {
		if err := w.dio.Close(); err != nil {
			first = fmt.Errorf("close direct handle of wal segment %s: %w", w.active.name, err)
		}
		w.dio = nil
	}
	for _, s := range w.segs {
		if s.f == nil {
			continue
		}
		if err := s.f.Close(); err != nil && first == nil {
			first = fmt.Errorf("close wal segment %s: %w", s.name, err)
		}
	}
	return first
}

// Close waits for any commit in progress, records a clean stop (where the
// log ends, so that the next Open treats any damage, even to the final
// record, as corruption rather than a torn write) and closes the files.
// Saves after Close fail with ErrClosed. After a failed write the state on
// disk is unknown and no clean stop is recorded.
func (w *WAL) Close() error { return w.close(true) }

// Abandon closes the files without recording a clean stop, as if the
// process had died: for callers giving up on a log they opened (a failed
// Open of the store around it).
func (w *WAL) Abandon() error { return w.close(false) }

func (w *WAL) close(clean bool) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.wclosed {
		return nil
	}
	w.wclosed = true
	w.dropSpare()
	w.mu.Lock()
	defer w.mu.Unlock()
	var first error
	if clean && w.err == nil && w.active != nil {
		// Every commit is durable when it returns: the log ends here.
		if err := w.writeCleanStop(); err != nil {
			first = fmt.Errorf("record clean stop of wal %s: %w", w.dir, err)
		}
	}
	if err := w.closeFiles(); err != nil && first == nil {
		first = err
	}
	return first
}
