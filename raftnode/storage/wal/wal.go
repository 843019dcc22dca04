package wal

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/vfs"
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
}

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

const spareName = "spare.wal.tmp"

// Batch is what one Save makes durable, in this order: the snapshot
// reference, the entries, the hard state. Any part may be empty.
type Batch struct {
	// Snapshot, if set, records a durable snapshot (see TypeSnapshot).
	Snapshot *SnapRef
	// Entries must have consecutive indexes; the first may be at most
	// LastIndex()+1 and must be above the log's start. An entry at an index
	// already in the log replaces the log from that index on.
	Entries []raft.Entry
	// HardState, if set, replaces the stored hard state.
	HardState *raft.HardState
}

func (b *Batch) empty() bool { return b.Snapshot == nil && len(b.Entries) == 0 && b.HardState == nil }

// entLoc locates one live entry: the term is kept in memory so Term() never
// touches the disk; the data is read back from the segment when asked for.
type entLoc struct {
	term uint64
	off  int64  // offset of the record frame in its segment
	seq  uint32 // segment sequence number (low 32 bits: 4 billion segments)
	size uint32 // payload length
}

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

	// Commit queue. leading is true while some caller is running commit rounds.
	qmu     sync.Mutex
	queue   []*request
	leading bool

	// Writer state, owned by whoever holds wmu (the round leader).
	wmu      sync.Mutex
	active   *segment
	woff     int64 // end of valid data in the active segment
	buf      []byte
	wclosed  bool
	prealloc PreallocMode

	// Direct mode (see writeDirect): dio writes the active segment with
	// O_DIRECT|O_DSYNC; nil in buffered mode. buf then always starts with
	// the bytes of the active segment's partial last block, [tailOff, woff).
	direct  bool // try direct I/O for new active segments
	dio     vfs.DirectWriter
	tailOff int64
	dioOn   bool // dio != nil, for Stats; guarded by mu
	// Buffer sizes: directBufSize and maxKeptBuf, lowered by tests so that
	// small random batches exercise regrowing and shrinking the buffer.
	bufSize, bufKeep int64

	// Spare segment, filled with zeros ahead of the next rollover.
	spareMu   sync.Mutex
	spare     vfs.File // ready, or nil
	spareBusy bool     // a fill is in progress
	spareWG   sync.WaitGroup
	err       error // sticky: after a failed write or fsync nothing more is written

	// Read state: what is durable.
	mu     sync.RWMutex
	stats  Stats      // updated by the round leader with mu held
	segs   []*segment // ascending seq, contiguous; last is active
	marker SnapRef    // the entry before the first live one (index, term)
	ents   []entLoc   // ents[k] is index marker.Index+1+k
	hs     raft.HardState
	cache  entryCache // data of the newest entries; see entryCache
}

type request struct {
	b    Batch
	done chan error
}

// errLead tells a waiting Save that it must run the next commit round.
var errLead = errors.New("wal: lead the next commit round")

func segName(seq, firstIndex uint64) string {
	return fmt.Sprintf("%016x-%016x.wal", seq, firstIndex)
}

func parseSegName(name string) (seq uint64, ok bool) {
	base, found := strings.CutSuffix(name, ".wal")
	if !found || len(base) != 33 || base[16] != '-' {
		return 0, false
	}
	seq, err := strconv.ParseUint(base[:16], 16, 64)
	if err != nil {
		return 0, false
	}
	if _, err := strconv.ParseUint(base[17:], 16, 64); err != nil {
		return 0, false
	}
	return seq, true
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
		repair: opts.Repair, mustExist: opts.Existing}
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
		if w.prealloc != PreallocOff {
			if f, err := w.makeSpare(); err == nil {
				w.spare = f
			} else {
				w.log.Warn("could not preallocate the first wal segment", "error", err)
			}
		}
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

func (w *WAL) writeMode() string {
	if w.dio != nil {
		return "direct (O_DIRECT|O_DSYNC aligned blocks)"
	}
	return "buffered (pwrite+fdatasync)"
}

func (w *WAL) closeFiles() {
	for _, s := range w.segs {
		if s.f != nil {
			s.f.Close()
		}
	}
	if w.dio != nil {
		w.dio.Close()
		w.dio = nil
	}
}

const (
	// directBufSize is the initial capacity of the aligned write buffer.
	directBufSize = 256 << 10
	// maxKeptBuf: a write buffer grown beyond this by a big batch is
	// dropped after it, so one huge batch does not pin its memory.
	maxKeptBuf = 4 << 20
)

func alignDown(n int64) int64 { return n &^ (vfs.DirectAlign - 1) }
func alignUp(n int64) int64   { return alignDown(n + vfs.DirectAlign - 1) }

// startDirect opens the active segment for direct writes (closing the
// previous one's) and loads its partial last block into the aligned write
// buffer. If the file system refuses O_DIRECT, the WAL falls back to
// buffered writes for good, and says so. Called with wmu held, after the
// active segment's buffered writes (header, trim) are synced: a direct
// O_DSYNC write makes only itself durable, not earlier buffered writes.
func (w *WAL) startDirect() error {
	if w.dio != nil {
		if err := w.dio.Close(); err != nil {
			w.dio = nil
			return fmt.Errorf("close direct handle of wal segment: %w", err)
		}
		w.dio = nil
	}
	if !w.direct {
		w.setDioOn()
		return nil
	}
	p := path.Join(w.dir, w.active.name)
	d, err := w.fs.(vfs.DirectFS).OpenDirect(p)
	if err != nil {
		w.direct = false
		w.setDioOn()
		if errors.Is(err, vfs.ErrDirectUnsupported) {
			w.log.Info("direct I/O refused; wal writes are buffered with fdatasync", "file", p, "error", err)
		} else {
			w.log.Warn("opening wal segment for direct I/O failed; wal writes are buffered with fdatasync", "file", p, "error", err)
		}
		return nil
	}
	tailOff := alignDown(w.woff)
	buf := vfs.AlignedBuffer(int(w.bufSize))[:w.woff-tailOff]
	if len(buf) > 0 {
		if _, err := w.active.f.ReadAt(buf, tailOff); err != nil {
			d.Close()
			return fmt.Errorf("read last block of wal segment %s at offset %d: %w", p, tailOff, err)
		}
	}
	w.dio, w.tailOff, w.buf = d, tailOff, buf
	w.setDioOn()
	return nil
}

// stopDirect closes the direct handle and turns direct I/O off for good.
// Called with wmu held.
func (w *WAL) stopDirect() {
	if w.dio != nil {
		if err := w.dio.Close(); err != nil {
			w.log.Warn("closing direct handle of wal segment failed", "segment", w.active.name, "error", err)
		}
	}
	w.dio, w.direct = nil, false
	w.setDioOn()
}

func (w *WAL) setDioOn() {
	w.mu.Lock()
	w.dioOn = w.dio != nil
	w.mu.Unlock()
}

// writeDirect writes buf, which holds the active segment's bytes from
// tailOff on (the partial last block already durable, then the new
// records), as whole aligned blocks: padded with zeros to a DirectAlign
// multiple, at tailOff, through the O_DIRECT|O_DSYNC handle, so it is
// durable when the write returns and needs no fdatasync. Rewriting the
// durable prefix of the first block is harmless even if the write tears:
// those bytes are the same. The zeros after the last record read as the
// clean end of the log at recovery, as in a preallocated segment. It
// returns the buffer to keep, which holds just the new partial last block
// (on error: buf's bytes, unpadded). Called with wmu held.
func (w *WAL) writeDirect(buf []byte) ([]byte, error) {
	end := int64(len(buf))
	padded := alignUp(end)
	if int64(cap(buf)) < padded || !vfs.IsAligned(buf[:padded], w.tailOff) {
		// The records outgrew the aligned buffer and append moved them.
		nb := vfs.AlignedBuffer(int(max(padded, w.bufSize)))
		copy(nb, buf)
		buf = nb[:end]
	}
	buf = buf[:padded]
	clear(buf[end:])
	if _, err := w.dio.WriteAt(buf, w.tailOff); err != nil {
		return buf[:end], fmt.Errorf("direct write to wal segment %s at offset %d: %w", w.active.name, w.tailOff, err)
	}
	next := alignDown(w.tailOff + end)
	tail := buf[next-w.tailOff : end]
	if padded > w.bufKeep {
		buf = vfs.AlignedBuffer(int(w.bufSize)) // don't pin a huge batch's buffer
	}
	n := copy(buf, tail)
	w.tailOff = next
	return buf[:n], nil
}

func (w *WAL) lastIndex() uint64 { return w.marker.Index + uint64(len(w.ents)) }

func (w *WAL) term(i uint64) (uint64, error) {
	switch {
	case i == w.marker.Index:
		return w.marker.Term, nil
	case i < w.marker.Index:
		return 0, raft.ErrCompacted
	case i > w.lastIndex():
		return 0, raft.ErrUnavailable
	}
	return w.ents[i-w.marker.Index-1].term, nil
}

// apply folds one durable record into the in-memory state. The same code runs
// at recovery and after each fsync, so replay and live state cannot disagree.
func (w *WAL) apply(rec Record, seg *segment, off int64, size uint32) error {
	switch rec.Type {
	case TypeEntry:
		i := rec.Entry.Index
		seg.low = min(seg.low, i-1)
		if i <= w.marker.Index {
			return fmt.Errorf("entry %d is at or below the log start %d", i, w.marker.Index)
		}
		if i > w.lastIndex()+1 {
			return fmt.Errorf("entry %d after last index %d: index gap", i, w.lastIndex())
		}
		w.cache.truncateFrom(i) // an overwrite drops the cached suffix too
		w.ents = appendLoc(w.ents[:i-w.marker.Index-1], entLoc{term: rec.Entry.Term, off: off, seq: uint32(seg.seq), size: size})
	case TypeHardState:
		w.hs = rec.Hard
	case TypeSnapshot:
		seg.low = min(seg.low, rec.Snap.Index)
		if t, err := w.term(rec.Snap.Index); err == nil && t == rec.Snap.Term {
			return nil // the log already holds the snapshot's last entry: keep it
		}
		if rec.Snap.Index < w.marker.Index {
			return fmt.Errorf("snapshot %d older than the log start %d", rec.Snap.Index, w.marker.Index)
		}
		w.marker = rec.Snap
		w.ents = w.ents[:0]
		w.cache.reset()
	case TypeTruncate:
		i := rec.End.Index
		seg.low = min(seg.low, i)
		if t, err := w.term(i); err != nil || t != rec.End.Term {
			return fmt.Errorf("truncation after entry %d term %d, which the log does not hold", i, rec.End.Term)
		}
		w.ents = w.ents[:i-w.marker.Index]
		w.cache.truncateFrom(i + 1)
	case TypeSegment:
		return errors.New("segment header in the middle of a segment")
	}
	return nil
}

// appendLoc appends to the entry index, growing it by doubling: append's
// gentler growth for big slices would copy a multi-million-entry index
// several times over.
func appendLoc(ents []entLoc, l entLoc) []entLoc {
	if len(ents) == cap(ents) {
		grown := make([]entLoc, len(ents), 2*len(ents)+1024)
		copy(grown, ents)
		ents = grown
	}
	return append(ents, l)
}

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
	w.spareMu.Lock()
	f := w.spare
	w.spare = nil
	w.spareMu.Unlock()
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

// Save makes b durable: when it returns nil, everything in b survives a
// crash and is visible to readers. Concurrent Saves are committed together
// with one write and one fsync, in the order they were queued. After a write
// or fsync error the WAL refuses all further Saves (the state of the page
// cache is unknown after a failed fsync); reopen to recover.
func (w *WAL) Save(b Batch) error {
	if b.empty() {
		return nil
	}
	r := &request{b: b, done: make(chan error, 1)}
	w.qmu.Lock()
	w.queue = append(w.queue, r)
	lead := !w.leading
	w.leading = true
	w.qmu.Unlock()
	if !lead {
		if err := <-r.done; err != errLead {
			return err
		}
	}
	w.runRound()
	return <-r.done
}

// runRound commits the head of the queue, then hands leadership to the next
// waiter, so no caller is kept serving others forever.
func (w *WAL) runRound() {
	w.qmu.Lock()
	n := 1
	// A snapshot reference can reset the log, so it is committed in a round
	// of its own: validation of later batches then sees a simple state.
	if w.queue[0].b.Snapshot == nil {
		for n < len(w.queue) && w.queue[n].b.Snapshot == nil {
			n++
		}
	}
	reqs := append([]*request(nil), w.queue[:n]...)
	w.queue = w.queue[n:]
	w.qmu.Unlock()

	w.commit(reqs)

	w.qmu.Lock()
	if len(w.queue) > 0 {
		w.queue[0].done <- errLead
	} else {
		w.leading = false
	}
	w.qmu.Unlock()
}

// pendingRec is a record written in this round, applied after the fsync.
// Only what apply reads is kept, plus an entry's data for the entry cache
// (a copy: nil when the cache is off or the entry too big for it).
type pendingRec struct {
	typ         RecordType
	index, term uint64 // entry or snapshot reference
	hs          raft.HardState
	off         int64
	size        uint32
	etype       raft.EntryType
	data        []byte
	cached      bool // data holds the entry's data
}

func (p *pendingRec) record() Record {
	r := Record{Type: p.typ, Hard: p.hs}
	switch p.typ {
	case TypeEntry:
		r.Entry = raft.Entry{Index: p.index, Term: p.term}
	case TypeSnapshot:
		r.Snap = SnapRef{Index: p.index, Term: p.term}
	}
	return r
}

func (w *WAL) commit(reqs []*request) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	fail := func(err error) {
		for _, r := range reqs {
			r.done <- err
		}
	}
	if w.wclosed {
		fail(ErrClosed)
		return
	}
	if w.err != nil {
		fail(w.err)
		return
	}
	if w.woff >= w.segSize {
		if err := w.rollover(); err != nil {
			w.err = fmt.Errorf("wal unusable after failed segment rollover: %w", err)
			fail(w.err)
			return
		}
	}
	w.mu.RLock()
	marker, last := w.marker, w.lastIndex()
	var snapMatches bool
	if s := reqs[0].b.Snapshot; s != nil {
		t, err := w.term(s.Index)
		snapMatches = err == nil && t == s.Term
	}
	w.mu.RUnlock()

	// buf holds the bytes to write from file offset base on: the new
	// records, preceded in direct mode by the durable partial last block.
	base, buf := w.woff, w.buf[:0]
	if w.dio != nil {
		base, buf = w.tailOff, w.buf
	}
	prefix := len(buf)
	// The cache gets its own copy of the entries' data, in one allocation
	// per round: the caller's slices are not ours to keep, and a copy costs
	// far less than the write it rides along with.
	var arena []byte
	if w.cache.max > 0 {
		n := 0
		for _, r := range reqs {
			for _, e := range r.b.Entries {
				if entryCost(&e) <= w.cache.max {
					n += len(e.Data)
				}
			}
		}
		arena = make([]byte, 0, n)
	}
	errs := make([]error, len(reqs))
	recs := make([][]pendingRec, len(reqs))
	for k, r := range reqs {
		b := &r.b
		m, l := marker, last
		if s := b.Snapshot; s != nil && !snapMatches {
			if s.Index < m.Index {
				errs[k] = fmt.Errorf("wal: snapshot %d is older than the log start %d: %w", s.Index, m.Index, raft.ErrSnapOutOfDate)
				continue
			}
			m, l = *s, s.Index
		}
		if err := w.validate(b.Entries, m, l); err != nil {
			errs[k] = err
			continue
		}
		prs := make([]pendingRec, 0, len(b.Entries)+2)
		if s := b.Snapshot; s != nil {
			off := base + int64(len(buf))
			buf = AppendSnapshot(buf, *s)
			prs = append(prs, pendingRec{typ: TypeSnapshot, index: s.Index, term: s.Term, off: off, size: snapSize})
		}
		for _, e := range b.Entries {
			off := base + int64(len(buf))
			buf = AppendEntry(buf, e)
			var data []byte
			cached := w.cache.max > 0 && entryCost(&e) <= w.cache.max
			if cached {
				// Full slice expression: a caller appending to one entry's
				// data must not run into the next one's.
				k := len(arena)
				arena = append(arena, e.Data...)
				data = arena[k:len(arena):len(arena)]
			}
			prs = append(prs, pendingRec{typ: TypeEntry, index: e.Index, term: e.Term, off: off, size: uint32(entryFixed + len(e.Data)), etype: e.Type, data: data, cached: cached})
		}
		if b.HardState != nil {
			off := base + int64(len(buf))
			buf = AppendHardState(buf, *b.HardState)
			prs = append(prs, pendingRec{typ: TypeHardState, hs: *b.HardState, off: off, size: hardSize})
		}
		recs[k] = prs
		marker, last = m, l
		if n := len(b.Entries); n > 0 {
			last = b.Entries[n-1].Index
		}
	}
	var fsyncTook time.Duration
	written := len(buf) - prefix // new record bytes
	if written > 0 {
		t0 := time.Now()
		if w.dio != nil {
			var err error
			buf, err = w.writeDirect(buf)
			if errors.Is(err, vfs.ErrDirectUnsupported) {
				// Refused before anything was written: write the same
				// bytes the buffered way, now and from now on.
				w.log.Warn("direct write refused; wal writes are buffered with fdatasync from now on", "error", err)
				w.stopDirect()
				buf = buf[prefix:]
			} else if err != nil {
				w.err = err
				fail(w.err)
				return
			}
		}
		if w.dio == nil {
			if _, err := w.active.f.WriteAt(buf, w.woff); err != nil {
				w.err = fmt.Errorf("write wal segment %s at offset %d: %w", w.active.name, w.woff, err)
				fail(w.err)
				return
			}
			t0 = time.Now()
			if err := w.active.f.Sync(); err != nil {
				w.err = fmt.Errorf("sync wal segment %s: %w", w.active.name, err)
				fail(w.err)
				return
			}
		}
		took := time.Since(t0)
		if took > slowFsync {
			// Slow fsyncs are what turn into missed heartbeats and
			// elections; make them visible.
			w.log.Warn("slow wal fsync", "segment", w.active.name, "bytes", written, "took", took)
		}
		fsyncTook = took
		w.woff += int64(written)
		if w.woff >= w.segSize/2 {
			w.prepareSpare()
		}
	}
	w.mu.Lock()
	if written > 0 {
		w.stats.Fsyncs++
		w.stats.Saves += uint64(len(reqs))
		w.stats.BytesWritten += uint64(written)
		w.stats.FsyncTotal += fsyncTook
		w.stats.FsyncMax = max(w.stats.FsyncMax, fsyncTook)
	}
	for k := range reqs {
		for i := range recs[k] {
			pr := &recs[k][i]
			if pr.typ == TypeEntry && pr.index == w.lastIndex()+1 && pr.index > w.marker.Index {
				// Fast path for the common plain append; same effect as apply.
				w.active.low = min(w.active.low, pr.index-1)
				w.ents = appendLoc(w.ents, entLoc{term: pr.term, off: pr.off, seq: uint32(w.active.seq), size: pr.size})
				w.cacheEntry(pr)
				continue
			}
			if err := w.apply(pr.record(), w.active, pr.off, pr.size); err != nil {
				if errs[k] == nil {
					// Validation makes this unreachable; if it is reached the
					// log on disk and in memory may differ, so stop writing.
					w.err = fmt.Errorf("wal: applying committed record: %w", err)
					errs[k] = w.err
				}
				w.cache.reset()
				continue
			}
			if pr.typ == TypeEntry {
				w.cacheEntry(pr)
			}
		}
	}
	w.mu.Unlock()
	if w.dio != nil {
		if written == 0 {
			buf = buf[:prefix] // nothing written: keep just the tail
		}
	} else if int64(cap(buf)) > w.bufKeep {
		buf = nil // don't pin a huge batch's buffer
	}
	w.buf = buf
	for k, r := range reqs {
		r.done <- errs[k]
	}
}

// cacheEntry adds a committed entry to the entry cache. Called with mu held.
func (w *WAL) cacheEntry(pr *pendingRec) {
	if !pr.cached {
		// Not copied (cache off, or too big): the cache must still end at
		// the log's last entry, so it starts over.
		w.cache.reset()
		return
	}
	w.cache.add(raft.Entry{Index: pr.index, Term: pr.term, Type: pr.etype, Data: pr.data})
}

func (w *WAL) validate(ents []raft.Entry, marker SnapRef, last uint64) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].Index
	if first <= marker.Index {
		return fmt.Errorf("wal: append at index %d, at or below the log start %d: %w", first, marker.Index, raft.ErrCompacted)
	}
	if first > last+1 {
		return fmt.Errorf("wal: append at index %d leaves a gap after last index %d: %w", first, last, raft.ErrUnavailable)
	}
	for k, e := range ents {
		if e.Index != first+uint64(k) {
			return fmt.Errorf("wal: batch entries not consecutive: index %d at position %d after %d", e.Index, k, first)
		}
		if k > 0 && e.Term < ents[k-1].Term {
			return fmt.Errorf("wal: entry %d has term %d below the previous entry's %d", e.Index, e.Term, ents[k-1].Term)
		}
		if entryFixed+len(e.Data) > int(w.maxRec) {
			return fmt.Errorf("wal: entry %d is %d bytes, above the record limit %d", e.Index, len(e.Data), w.maxRec)
		}
	}
	return nil
}

// HardState returns the durable hard state.
func (w *WAL) HardState() raft.HardState {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.hs
}

// Start returns the index and term of the entry just before the first live
// entry (the compaction point).
func (w *WAL) Start() SnapRef {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.marker
}

// LastIndex returns the index of the last durable entry (Start().Index if none).
func (w *WAL) LastIndex() uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.lastIndex()
}

// KeepBack returns the lowest index lo, at most index, such that the
// entries in (lo, index] hold at most n entries and maxBytes of payload
// (each record's size, as written): where a compaction that keeps that
// much of the log before index starts. Entries before the log's start
// count as kept.
func (w *WAL) KeepBack(index, n, maxBytes uint64) uint64 {
	w.mu.RLock()
	defer w.mu.RUnlock()
	lo := index - min(index, n)
	var total uint64
	for i := min(index, w.lastIndex()); i > lo && i > w.marker.Index; i-- {
		total += uint64(w.ents[i-w.marker.Index-1].size)
		if total > maxBytes {
			return i
		}
	}
	return lo
}

// Term returns the term of entry i for i in [Start().Index, LastIndex()],
// raft.ErrCompacted below and raft.ErrUnavailable above. No disk access.
func (w *WAL) Term(i uint64) (uint64, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.term(i)
}

// Entries returns the entries in [lo, hi), at most maxBytes of Data in total
// but at least one. Entries still in the entry cache (the newest, see
// Options.EntryCacheBytes) are served from memory; older ones are read back
// from the segment files (usually from the page cache), consecutive records
// with one read, and every record's checksum is verified again. The
// returned Data may be shared with the cache and other callers: do not
// modify it.
func (w *WAL) Entries(lo, hi, maxBytes uint64) ([]raft.Entry, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if lo <= w.marker.Index {
		return nil, raft.ErrCompacted
	}
	if hi > w.lastIndex()+1 {
		return nil, raft.ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	locs := w.ents[lo-w.marker.Index-1 : hi-w.marker.Index-1]
	var total uint64
	for k, l := range locs {
		total += uint64(l.size - entryFixed)
		if k > 0 && total > maxBytes {
			locs = locs[:k]
			break
		}
	}
	out := make([]raft.Entry, 0, len(locs))
	// The tail of the range that is in the cache is copied from it; only
	// what lies before the cache is read from disk.
	var cached []raft.Entry
	if first, last, ok := w.cache.bounds(); ok && last == w.lastIndex() {
		end := lo + uint64(len(locs))
		if from := max(lo, first); from < end {
			cached = w.cache.ents[from-first : end-first]
			locs = locs[:from-lo]
		}
	}
	for len(locs) > 0 {
		// Extend a run of records that sit back to back in one segment.
		n, end := 1, locs[0].off+headerSize+int64(locs[0].size)
		for n < len(locs) && locs[n].seq == locs[0].seq && locs[n].off == end {
			end += headerSize + int64(locs[n].size)
			n++
		}
		seg := w.segs[locs[0].seq-uint32(w.segs[0].seq)]
		buf := make([]byte, end-locs[0].off)
		if _, err := seg.f.ReadAt(buf, locs[0].off); err != nil {
			return nil, fmt.Errorf("read wal segment %s at offset %d: %w", seg.name, locs[0].off, err)
		}
		for k := 0; k < n; k++ {
			rec, m, err := DecodeRecord(buf, w.maxRec)
			want := lo + uint64(len(out))
			if err == nil && (rec.Type != TypeEntry || rec.Entry.Index != want) {
				err = fmt.Errorf("%w: expected entry %d", ErrCorruptRecord, want)
			}
			if err != nil {
				return nil, fmt.Errorf("read wal segment %s at offset %d: %w", seg.name, locs[k].off, err)
			}
			out = append(out, rec.Entry)
			buf = buf[m:]
		}
		locs = locs[n:]
	}
	return append(out, cached...), nil
}

// Compact forgets entries up to and including index (which must be in the
// log) and deletes every segment whose entries are all at or below
// min(index, keepFrom): keepFrom lets the caller keep the log reachable from
// an older snapshot. Segments are removed oldest first, each removal made
// durable before the next, so a crash never leaves a hole in the sequence.
func (w *WAL) Compact(index, keepFrom uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if index > w.marker.Index {
		t, err := w.term(index)
		if err != nil {
			return fmt.Errorf("wal: compact to %d: %w", index, err)
		}
		k := index - w.marker.Index
		w.ents = append([]entLoc(nil), w.ents[k:]...)
		w.marker = SnapRef{Index: index, Term: t}
		w.cache.dropTo(index)
	}
	bound := min(keepFrom, w.marker.Index)
	// Segment 0 can go once segment 1 can start a replay: everything in
	// segment 0 is at or below segment 1's prevIndex (which must be
	// covered by bound), and no later segment reaches back below it.
	low := uint64(math.MaxUint64)
	lows := make([]uint64, len(w.segs)) // lows[k]: min low over segs[k:]
	for k := len(w.segs) - 1; k >= 0; k-- {
		low = min(low, w.segs[k].low)
		lows[k] = low
	}
	// Delete one at a time while the next segment can start a replay, so
	// that a crash between two removals still leaves a valid first segment.
	n := 0
	for n+1 < len(w.segs) && w.segs[n+1].prevIndex <= bound && lows[n+1] >= w.segs[n+1].prevIndex {
		s := w.segs[n]
		p := path.Join(w.dir, s.name)
		if err := w.fs.Remove(p); err != nil {
			w.segs = w.segs[n:]
			return fmt.Errorf("remove wal segment %s: %w", p, err)
		}
		if err := w.fs.SyncDir(w.dir); err != nil {
			w.segs = w.segs[n+1:]
			return fmt.Errorf("sync wal dir %s: %w", w.dir, err)
		}
		s.f.Close()
		n++
	}
	w.segs = w.segs[n:]
	return nil
}

// slowFsync is the fsync duration above which a warning is logged.
const slowFsync = time.Second

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
	w.spareWG.Wait()
	w.spareMu.Lock()
	if w.spare != nil {
		w.spare.Close()
		w.fs.Remove(path.Join(w.dir, spareName)) // best effort: Open removes it too
		w.spare = nil
	}
	w.spareMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	var first error
	if clean && w.err == nil && w.active != nil {
		// Every commit is durable when it returns: the log ends here.
		if err := w.writeCleanStop(); err != nil {
			first = fmt.Errorf("record clean stop of wal %s: %w", w.dir, err)
		}
	}
	if w.dio != nil {
		if err := w.dio.Close(); err != nil && first == nil {
			first = fmt.Errorf("close direct handle of wal segment %s: %w", w.active.name, err)
		}
		w.dio = nil
	}
	for _, s := range w.segs {
		if err := s.f.Close(); err != nil && first == nil {
			first = fmt.Errorf("close wal segment %s: %w", s.name, err)
		}
	}
	return first
}
