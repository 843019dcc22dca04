package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/crashfs"
	"github.com/capraft/capraft/raftnode/storage/vfs"
)

const dir = "/w"

// newFS returns a crashfs with direct I/O enabled: the WAL's default path.
func newFS(t *testing.T) *crashfs.FS {
	fs := crashfs.New()
	fs.SetDirectIO(true)
	if err := fs.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	return fs
}

func open(t *testing.T, fs vfs.FS, log hclog.Logger) *WAL {
	t.Helper()
	w, err := Open(Options{FS: fs, Dir: dir, SegmentSize: 1 << 10, Logger: log, Prealloc: PreallocSync})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return w
}

func entries(lo, hi, term uint64) []raft.Entry {
	var out []raft.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, raft.Entry{Index: i, Term: term, Data: bytes.Repeat([]byte{byte(i)}, 40)})
	}
	return out
}

// noDirect hides crashfs's OpenDirect: the WAL writes buffered, with fsync.
type noDirect struct{ vfs.FS }

// fill writes 100 entries (several segments), then stops the log: with
// Close (a clean stop) if crash is nil, else by a power failure of crash
// (which loses nothing: every Save was durable). It returns the segment
// names.
func fill(t *testing.T, fs vfs.FS, crash *crashfs.FS) []string {
	t.Helper()
	w := open(t, fs, nil)
	for i := uint64(1); i <= 100; i += 10 {
		hs := raft.HardState{Term: 1, Commit: i}
		if err := w.Save(Batch{Entries: entries(i, i+9, 1), HardState: &hs}); err != nil {
			t.Fatal(err)
		}
	}
	if crash != nil {
		powerFail(crash)
	} else if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names := segments(fs)
	if len(names) < 3 {
		t.Fatalf("want several segments, got %v", names)
	}
	return names
}

// segments lists the segment files in dir.
func segments(fs vfs.FS) []string {
	all, _ := fs.List(dir)
	var names []string
	for _, n := range all {
		if strings.HasSuffix(n, ".wal") {
			names = append(names, n)
		}
	}
	return names
}

// powerFail crashes fs (what is durable survives; the rest is dropped or
// torn, with a fixed seed).
func powerFail(fs *crashfs.FS) { fs.Crash(rand.New(rand.NewSource(1))) }

func logger() (hclog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Warn}), &buf
}

func flip(t *testing.T, fs *crashfs.FS, name string, off int) {
	b, _ := fs.ReadFile(path.Join(dir, name))
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x40
	fs.SetFile(path.Join(dir, name), b)
}

// TestTornTailAfterCrashIsTruncatedWithWarning cuts the end off the last
// segment of a crashed log, as a buffered write torn at EOF leaves it.
// (Direct writes pad with zeros to a block boundary:
// TestDirectWritesPadWithZerosAndTearSafely covers them.)
func TestTornTailAfterCrashIsTruncatedWithWarning(t *testing.T) {
	for _, cut := range []int{1, 5, headerSize, headerSize + 3, 20} {
		fs := newFS(t)
		names := fill(t, noDirect{fs}, fs)
		lastSeg := path.Join(dir, names[len(names)-1])
		b, _ := fs.ReadFile(lastSeg)
		fs.SetFile(lastSeg, b[:len(b)-cut])
		log, buf := logger()
		w := open(t, fs, log)
		if !strings.Contains(buf.String(), "truncating torn write") {
			t.Fatalf("cut %d: no warning logged: %q", cut, buf.String())
		}
		// The damaged batch was the last one (entries 91..100 + hard state).
		if li := w.LastIndex(); li < 90 || li > 100 {
			t.Fatalf("cut %d: last index %d", cut, li)
		}
		// The truncated log accepts appends and survives another reopen.
		next := w.LastIndex() + 1
		if err := w.Save(Batch{Entries: entries(next, next, 1)}); err != nil {
			t.Fatal(err)
		}
		w.Close()
		w = open(t, fs, nil)
		if w.LastIndex() != next {
			t.Fatalf("cut %d: last index %d after reopen, want %d", cut, w.LastIndex(), next)
		}
		w.Close()
	}
}

func TestZeroFilledTailIsTruncated(t *testing.T) {
	fs := newFS(t)
	names := fill(t, fs, fs)
	lastSeg := path.Join(dir, names[len(names)-1])
	b, _ := fs.ReadFile(lastSeg)
	fs.SetFile(lastSeg, append(b, make([]byte, 4096)...))
	w := open(t, fs, nil)
	if w.LastIndex() != 100 {
		t.Fatalf("last index %d, want 100", w.LastIndex())
	}
	w.Close()
}

func TestCorruptionRefusesToOpen(t *testing.T) {
	cases := []struct {
		name   string
		damage func(fs *crashfs.FS, names []string)
		want   string
	}{
		{"payload bit flip in an old segment", func(fs *crashfs.FS, n []string) { flip(t, fs, n[0], 120) }, n0 + " at offset"},
		{"header bit flip in an old segment", func(fs *crashfs.FS, n []string) { flip(t, fs, n[1], 70) }, "at offset"},
		{"payload bit flip mid last segment", func(fs *crashfs.FS, n []string) { flip(t, fs, n[len(n)-1], 75) }, "checksum mismatch"},
		{"old segment truncated", func(fs *crashfs.FS, n []string) {
			b, _ := fs.ReadFile(path.Join(dir, n[0]))
			fs.SetFile(path.Join(dir, n[0]), b[:len(b)-3])
		}, "extends past end"},
		{"missing middle segment", func(fs *crashfs.FS, n []string) { fs.Remove(path.Join(dir, n[1])) }, "missing"},
		{"zeros then data in last segment", func(fs *crashfs.FS, n []string) {
			p := path.Join(dir, n[len(n)-1])
			b, _ := fs.ReadFile(p)
			copy(b[60:], make([]byte, 30))
			fs.SetFile(p, b)
		}, "at offset"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := newFS(t)
			names := fill(t, fs, fs)
			c.damage(fs, names)
			_, err := Open(Options{FS: fs, Dir: dir, SegmentSize: 1 << 10, Prealloc: PreallocSync})
			if err == nil {
				t.Fatal("opened a corrupt log")
			}
			if want := strings.ReplaceAll(c.want, n0, names[0]); !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not mention %q", err, want)
			}
		})
	}
}

const n0 = "{first}"

func TestSegmentGapIsRefused(t *testing.T) {
	// A segment whose header does not continue the previous one (an index
	// gap, e.g. a segment from another log copied in) is refused.
	fs := newFS(t)
	names := fill(t, fs, nil)
	p := path.Join(dir, names[1])
	b, _ := fs.ReadFile(p)
	rec, n, err := DecodeRecord(b, DefaultMaxRecordSize)
	if err != nil {
		t.Fatal(err)
	}
	rec.Seg.PrevIndex += 5
	nb := AppendSegmentHeader(nil, rec.Seg, rec.Hard)
	fs.SetFile(p, append(nb, b[n:]...))
	_, err = Open(Options{FS: fs, Dir: dir, Prealloc: PreallocOff})
	if err == nil || !strings.Contains(err.Error(), "index gap") || !strings.Contains(err.Error(), names[1]) {
		t.Fatalf("want index gap error naming %s, got %v", names[1], err)
	}
}

func TestOversizedEntryRefused(t *testing.T) {
	fs := newFS(t)
	w, err := Open(Options{FS: fs, Dir: dir, MaxRecordSize: 100, Prealloc: PreallocOff})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Save(Batch{Entries: []raft.Entry{{Index: 1, Term: 1, Data: make([]byte, 200)}}})
	if err == nil {
		t.Fatal("saved an entry above the record limit")
	}
	if w.LastIndex() != 0 {
		t.Fatal("refused entry is visible")
	}
}

// syncGate is a file system whose file Syncs, and direct (O_DSYNC) writes,
// can be held, to observe group commit: each is one durable commit.
type syncGate struct {
	*crashfs.FS
	mu    sync.Mutex
	syncs int
	hold  chan struct{} // while non-nil, Sync waits for it to close
	held  chan struct{} // closed when a Sync starts waiting
}

type gateFile struct {
	vfs.File
	g *syncGate
}

func (g *syncGate) Create(name string) (vfs.File, error) {
	f, err := g.FS.Create(name)
	return gateFile{f, g}, err
}

func (f gateFile) Sync() error {
	f.g.gate()
	return f.File.Sync()
}

// gate counts one durable operation and, if armed, holds it.
func (g *syncGate) gate() {
	g.mu.Lock()
	g.syncs++
	hold, held := g.hold, g.held
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
}

type gateDirect struct {
	vfs.DirectWriter
	g *syncGate
}

func (g *syncGate) OpenDirect(name string) (vfs.DirectWriter, error) {
	d, err := g.FS.OpenDirect(name)
	return gateDirect{d, g}, err
}

func (d gateDirect) WriteAt(p []byte, off int64) (int, error) {
	d.g.gate()
	return d.DirectWriter.WriteAt(p, off)
}

func (w *WAL) queued() int {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return len(w.queue)
}

func TestGroupCommitCoalescesConcurrentSaves(t *testing.T) {
	g := &syncGate{FS: newFS(t)}
	w, err := Open(Options{FS: g, Dir: dir, Prealloc: PreallocOff})
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.hold, g.held = make(chan struct{}), make(chan struct{})
	hold, held, base := g.hold, g.held, g.syncs
	g.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	wg.Add(1)
	go func() { defer wg.Done(); errs <- w.Save(Batch{Entries: entries(1, 1, 1)}) }()
	<-held // the first commit is inside its fsync
	const waiters = 16
	for k := 0; k < waiters; k++ {
		hs := raft.HardState{Term: 1, Commit: uint64(k)}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w.Save(Batch{HardState: &hs}) }()
	}
	for w.queued() < waiters {
		runtime.Gosched() // wait until all are queued behind the held fsync
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.syncs - base; n != 2 {
		t.Fatalf("%d fsyncs for 1+%d concurrent saves, want 2 (one per round)", n, waiters)
	}
	if st := w.Stats(); st.Saves != 1+waiters || st.Fsyncs != 2 {
		t.Fatalf("stats %+v, want %d saves in 2 fsyncs", st, 1+waiters)
	}
}

func TestFsyncErrorIsSticky(t *testing.T) {
	for _, direct := range []bool{false, true} {
		cfs := newFS(t)
		var fs vfs.FS = noDirect{cfs}
		// Buffered: the write succeeds, the fsync fails. Direct: the
		// O_DSYNC write itself fails.
		failAfter, msg := int64(1), "sync wal segment"
		if direct {
			fs, failAfter, msg = cfs, 0, "direct write"
		}
		w := open(t, fs, nil)
		if (w.dio != nil) != direct {
			t.Fatalf("direct=%v: WAL write mode is %s", direct, w.writeMode())
		}
		if err := w.Save(Batch{Entries: entries(1, 3, 1)}); err != nil {
			t.Fatal(err)
		}
		cfs.SetCrashAfter(failAfter, nil)
		if err := w.Save(Batch{Entries: entries(4, 4, 1)}); err == nil {
			t.Fatalf("direct=%v: save succeeded though its write or fsync failed", direct)
		}
		cfs.SetCrashAfter(-1, nil)
		if w.LastIndex() != 3 {
			t.Fatalf("direct=%v: unsynced entry visible: last index %d", direct, w.LastIndex())
		}
		if err := w.Save(Batch{Entries: entries(4, 4, 1)}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Fatalf("direct=%v: save after the failure: %v, want the sticky error (%q)", direct, err, msg)
		}
	}
}

func TestEntriesAcrossSegmentsAndOverwrites(t *testing.T) {
	fs := newFS(t)
	w := open(t, fs, nil)
	for i := uint64(1); i <= 60; i += 6 {
		if err := w.Save(Batch{Entries: entries(i, i+5, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Save(Batch{Entries: entries(50, 55, 2)}); err != nil {
		t.Fatal(err)
	}
	check := func(w *WAL) {
		t.Helper()
		es, err := w.Entries(1, 56, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for k, e := range es {
			wantTerm := uint64(1)
			if e.Index >= 50 {
				wantTerm = 2
			}
			if e.Index != uint64(k+1) || e.Term != wantTerm || !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(e.Index)}, 40)) {
				t.Fatalf("entry %d: %+v", k+1, e)
			}
		}
		if w.LastIndex() != 55 {
			t.Fatalf("last %d", w.LastIndex())
		}
	}
	check(w)
	w.Close()
	w = open(t, fs, nil)
	check(w)
	if err := w.Compact(30, 30); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Entries(30, 31, 0); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("entries below compaction: %v", err)
	}
	if tm, err := w.Term(30); err != nil || tm != 1 {
		t.Fatalf("term at compaction point: %d %v", tm, err)
	}
	segs := w.Segments()
	w.Close()
	w = open(t, fs, nil)
	if w.Start().Index > 30 || w.LastIndex() != 55 || w.Segments() != segs {
		t.Fatalf("after compaction and reopen: start %d last %d segments %d (want <=30, 55, %d)", w.Start().Index, w.LastIndex(), w.Segments(), segs)
	}
	w.Close()
}

func ExampleWAL_Save() {
	fs := crashfs.New()
	fs.MkdirAll("/wal")
	w, _ := Open(Options{FS: fs, Dir: "/wal", Prealloc: PreallocOff})
	hs := raft.HardState{Term: 1, Vote: 1, Commit: 0}
	_ = w.Save(Batch{Entries: []raft.Entry{{Index: 1, Term: 1, Data: []byte("x")}}, HardState: &hs})
	fmt.Println(w.LastIndex(), w.HardState().Term)
	// Output: 1 1
}

// preallocLog opens a log in 64 KiB preallocated segments and appends
// entries 1..n; end is where they end.
func preallocLog(t *testing.T, fs vfs.FS, n uint64) (w *WAL, opts Options, end int64) {
	t.Helper()
	opts = Options{FS: fs, Dir: dir, SegmentSize: 64 << 10, Prealloc: PreallocSync}
	w, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Save(Batch{Entries: entries(1, n, 1)}); err != nil {
		t.Fatal(err)
	}
	return w, opts, w.woff
}

func TestPreallocatedSegmentCleanEndAndTornWrite(t *testing.T) {
	fs := newFS(t)
	_, opts, end := preallocLog(t, fs, 20)
	powerFail(fs)
	p := path.Join(dir, segName(1, 1))
	b, _ := fs.ReadFile(p)
	if int64(len(b)) != opts.SegmentSize {
		t.Fatalf("segment is %d bytes, want preallocated %d", len(b), opts.SegmentSize)
	}
	// A restart stops at the zeros: no warning, nothing truncated.
	log, buf := logger()
	opts.Logger = log
	w, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 || w.LastIndex() != 20 {
		t.Fatalf("clean reopen: last %d, log %q", w.LastIndex(), buf.String())
	}
	powerFail(fs)
	// A write torn by a crash inside the header of the next record, zeros
	// after it.
	rec := AppendEntry(nil, entries(21, 21, 1)[0])
	for _, cut := range []int{3, headerSize + 5} {
		img := append([]byte(nil), b...)
		copy(img[end:], rec[:cut])
		fs.SetFile(p, img)
		buf.Reset()
		w, err = Open(opts)
		if err != nil {
			t.Fatalf("cut %d: %v", cut, err)
		}
		if !strings.Contains(buf.String(), "truncating torn write") || w.LastIndex() != 20 {
			t.Fatalf("cut %d: last %d, log %q", cut, w.LastIndex(), buf.String())
		}
		if err := w.Save(Batch{Entries: entries(21, 21, 1)}); err != nil {
			t.Fatal(err)
		}
		powerFail(fs)
		if w, err = Open(opts); err != nil || w.LastIndex() != 21 {
			t.Fatalf("cut %d: reopen after append: %v", cut, err)
		}
		powerFail(fs)
	}
}

// TestBitFlipInFinalRecordIsCorruptionNotTornWrite: even after a crash, a
// flipped bit in a complete final record whose bytes show no mark of an
// interrupted write is corruption.
func TestBitFlipInFinalRecordIsCorruptionNotTornWrite(t *testing.T) {
	fs := newFS(t)
	_, opts, end := preallocLog(t, fs, 5)
	powerFail(fs)
	p := path.Join(dir, segName(1, 1))
	// Flip a bit in the middle of the final, acknowledged record (entry 5,
	// whose data bytes are all 5: no zero tail, no zero sector).
	if err := fs.FlipBits(p, end-20, 0x10); err != nil {
		t.Fatal(err)
	}
	_, err := Open(opts)
	if err == nil || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), p) {
		t.Fatalf("bit flip in the final record: %v, want a checksum error naming %s", err, p)
	}
}
