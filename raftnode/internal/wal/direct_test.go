package wal

import (
	"bytes"
	"fmt"
	"math/rand"
	"path"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// TestDirectWritesPadWithZerosAndTearSafely checks the direct write path
// over crashfs (which refuses unaligned direct writes): each commit leaves
// the segment padded with zeros to a block boundary; a restart reads the
// padding as the clean end of the log — also when it is shorter than a
// record header — without a warning and without truncating; and appends
// after the restart rewrite the partial block so that everything reads
// back.
func TestDirectWritesPadWithZerosAndTearSafely(t *testing.T) {
	for _, prealloc := range []PreallocMode{PreallocOff, PreallocSync} {
		// pad is how many zero bytes follow the first entry in its block.
		for _, pad := range []int{0, 1, 5, headerSize - 1, headerSize, 100} {
			fs := newFS(t)
			log, logBuf := logger()
			opts := Options{FS: fs, Dir: dir, SegmentSize: 64 << 10, Prealloc: prealloc, Logger: log}
			w, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			if w.dio == nil {
				t.Fatalf("crashfs offers direct I/O, WAL writes %s", w.writeMode())
			}
			// An entry record is headerSize+entryFixed+len(data) bytes.
			n := vfs.DirectAlign - int(w.woff) - headerSize - entryFixed - pad
			first := raft.Entry{Index: 1, Term: 1, Data: bytes.Repeat([]byte{7}, n)}
			if err := w.Save(Batch{Entries: []raft.Entry{first}}); err != nil {
				t.Fatal(err)
			}
			end := w.woff
			if end != int64(vfs.DirectAlign-pad) {
				t.Fatalf("pad %d: first entry ends at %d", pad, end)
			}
			w.Close()
			p := path.Join(dir, segName(1, 1))
			img, _ := fs.ReadFile(p)
			if prealloc == PreallocOff && len(img) != vfs.DirectAlign {
				t.Fatalf("pad %d: segment is %d bytes, want one padded block", pad, len(img))
			}
			if !bytes.Equal(img[end:], make([]byte, len(img)-int(end))) {
				t.Fatalf("pad %d: bytes after the last record are not zeros", pad)
			}
			w, err = Open(opts)
			if err != nil {
				t.Fatalf("pad %d: reopen: %v", pad, err)
			}
			if w.LastIndex() != 1 || w.woff != end || logBuf.Len() != 0 {
				t.Fatalf("pad %d: reopen: last %d, end %d (want %d), log %q", pad, w.LastIndex(), w.woff, end, logBuf.String())
			}
			// Appends continue in the partial block (or the next one) and
			// everything reads back after another restart.
			for i := uint64(2); i <= 40; i += 3 {
				if err := w.Save(Batch{Entries: entries(i, i+2, 1)}); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
			w, err = Open(opts)
			if err != nil {
				t.Fatalf("pad %d: second reopen: %v", pad, err)
			}
			got, err := w.Entries(1, 41, 1<<30) // 1, then 2..40
			if err != nil || len(got) != 40 || !bytes.Equal(got[0].Data, first.Data) {
				t.Fatalf("pad %d: entries after reopen: %d, %v", pad, len(got), err)
			}
			for _, e := range got[1:] {
				if !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(e.Index)}, 40)) {
					t.Fatalf("pad %d: entry %d reads back wrong", pad, e.Index)
				}
			}
			if logBuf.Len() != 0 {
				t.Fatalf("pad %d: warnings: %q", pad, logBuf.String())
			}
			w.Close()
		}
	}
}

// TestDirectWriteTornByCrash crashes inside a direct write (crashfs keeps
// a random prefix of it, or none) over many seeds, small segments and both
// preallocation modes: recovery must find either the log before the Save or
// a prefix of the Save in flight (never less than was acknowledged, never
// more than was written), and accept appends.
func TestDirectWriteTornByCrash(t *testing.T) {
	for seed := int64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewSource(seed))
		fs := crashfs.New()
		fs.SetDirectIO(true)
		if err := fs.MkdirAll(dir); err != nil {
			t.Fatal(err)
		}
		opts := Options{FS: fs, Dir: dir, SegmentSize: int64(1+rng.Intn(3)) << 12, Prealloc: PreallocMode(rng.Intn(3))}
		if opts.Prealloc == PreallocAsync {
			opts.Prealloc = PreallocSync
		}
		w, err := Open(opts)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if rng.Intn(2) == 0 {
			w.smallBuffers()
		}
		var acked uint64
		for k := 0; k < rng.Intn(30); k++ {
			n := uint64(1 + rng.Intn(6))
			if err := w.Save(Batch{Entries: entries(acked+1, acked+n, 1)}); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			acked += n
		}
		n := uint64(1 + rng.Intn(6))
		fs.SetCrashAfter(rng.Int63n(3), rng) // in this Save's write, or its rollover
		if err := w.Save(Batch{Entries: entries(acked+1, acked+n, 1)}); err == nil {
			acked += n // the crash point came after it
		}
		fs.SetCrashAfter(-1, nil)
		fs.Crash(rng)
		if w, err = Open(opts); err != nil {
			t.Fatalf("seed %d: recovery: %v", seed, err)
		}
		last := w.LastIndex()
		if last < acked || last > acked+n {
			t.Fatalf("seed %d: recovered last index %d, want %d..%d", seed, last, acked, acked+n)
		}
		if err := w.Save(Batch{Entries: entries(last+1, last+2, 1)}); err != nil {
			t.Fatalf("seed %d: append after recovery: %v", seed, err)
		}
		w.Close()
		if w, err = Open(opts); err != nil || w.LastIndex() != last+2 {
			t.Fatalf("seed %d: reopen: %v", seed, err)
		}
		if last > 0 {
			got, err := w.Entries(1, last+3, 1<<30)
			if err != nil || uint64(len(got)) != last+2 {
				t.Fatalf("seed %d: entries: %d, %v", seed, len(got), err)
			}
		}
		w.Close()
	}
}

// TestDirectIORefusedFallsBackToBuffered: when the file system refuses
// O_DIRECT (as tmpfs did before Linux 6.6, with EINVAL) the WAL logs it at
// Info, writes buffered with fdatasync, and works; NoDirectIO turns direct I/O off where it would work.
func TestDirectIORefusedFallsBackToBuffered(t *testing.T) {
	for _, c := range []struct {
		name   string
		fs     func(*crashfs.FS) vfs.FS
		noDIO  bool
		direct bool
		log    string
	}{
		{"refused", func(f *crashfs.FS) vfs.FS { f.SetDirectIO(false); return f }, false, false, "direct I/O refused"},
		{"NoDirectIO", func(f *crashfs.FS) vfs.FS { return f }, true, false, "buffered (pwrite+fdatasync)"},
		{"default", func(f *crashfs.FS) vfs.FS { return f }, false, true, "direct (O_DIRECT|O_DSYNC"},
	} {
		var logBuf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Info})
		cfs := newFS(t)
		opts := Options{FS: c.fs(cfs), Dir: dir, SegmentSize: 4 << 10, Prealloc: PreallocSync, Logger: log, NoDirectIO: c.noDIO}
		w, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		if w.Stats().Direct != c.direct || !strings.Contains(logBuf.String(), c.log) {
			t.Fatalf("%s: direct=%v, log %q; want direct=%v and %q logged", c.name, w.Stats().Direct, logBuf.String(), c.direct, c.log)
		}
		for i := uint64(1); i <= 100; i += 10 {
			if err := w.Save(Batch{Entries: entries(i, i+9, 1)}); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		cfs.Crash(rand.New(rand.NewSource(1))) // everything acknowledged is synced
		if w, err = Open(opts); err != nil || w.LastIndex() != 100 {
			t.Fatalf("%s: after crash: %v", c.name, err)
		}
		w.Close()
	}
}

// refusingWriterFS opens files for direct I/O but refuses the writes, as a
// device needing a larger alignment than vfs.DirectAlign would (EINVAL
// before any I/O).
type refusingWriterFS struct{ *crashfs.FS }

type refusingWriter struct{ vfs.DirectWriter }

func (fs refusingWriterFS) OpenDirect(name string) (vfs.DirectWriter, error) {
	d, err := fs.FS.OpenDirect(name)
	return refusingWriter{d}, err
}

func (refusingWriter) WriteAt(p []byte, off int64) (int, error) {
	return 0, fmt.Errorf("refused: %w", vfs.ErrDirectUnsupported)
}

// TestDirectWriteRefusedFallsBackToBuffered: a direct write refused before
// anything was written is redone buffered with fdatasync (the Save
// succeeds and is durable), with a warning, and the WAL stays buffered.
func TestDirectWriteRefusedFallsBackToBuffered(t *testing.T) {
	cfs := newFS(t)
	log, logBuf := logger()
	opts := Options{FS: refusingWriterFS{cfs}, Dir: dir, SegmentSize: 4 << 10, Prealloc: PreallocSync, Logger: log}
	w, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Stats().Direct {
		t.Fatal("WAL did not open the segment for direct I/O")
	}
	for i := uint64(1); i <= 100; i += 10 { // several segments
		if err := w.Save(Batch{Entries: entries(i, i+9, 1)}); err != nil {
			t.Fatal(err)
		}
		if w.Stats().Direct {
			t.Fatal("still in direct mode after a refused write")
		}
	}
	w.Close()
	if !strings.Contains(logBuf.String(), "direct write refused") {
		t.Fatalf("fallback not logged: %q", logBuf.String())
	}
	cfs.Crash(rand.New(rand.NewSource(1)))
	if w, err = Open(opts); err != nil || w.LastIndex() != 100 {
		t.Fatalf("after crash: %v", err)
	}
	got, err := w.Entries(1, 101, 1<<30)
	if err != nil || len(got) != 100 {
		t.Fatalf("entries: %d, %v", len(got), err)
	}
	w.Close()
}

// TestDirectWriteBufferRegrowsAndShrinks: batches that outgrow the aligned
// write buffer (it is reallocated, aligned again) and one above 4 MiB
// (after which a small buffer is allocated again, carrying the partial
// last block over) must leave every record readable, before and after a
// restart.
func TestDirectWriteBufferRegrowsAndShrinks(t *testing.T) {
	fs := newFS(t)
	opts := Options{FS: fs, Dir: dir, SegmentSize: 64 << 20, Prealloc: PreallocOff, EntryCacheBytes: -1}
	w, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	data := func(i uint64, n int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, n/2) }
	sizes := map[uint64]int{}
	var next uint64 = 1
	save := func(count, size int) {
		t.Helper()
		var ents []raft.Entry
		for k := 0; k < count; k++ {
			ents = append(ents, raft.Entry{Index: next, Term: 1, Data: data(next, size)})
			sizes[next] = size
			next++
		}
		if err := w.Save(Batch{Entries: ents}); err != nil {
			t.Fatal(err)
		}
	}
	save(3, 100)
	save(40, 10<<10) // ~400 KiB: outgrows the 256 KiB buffer
	save(2, 50)
	save(100, 50<<10) // ~5 MiB: above the 4 MiB bound, buffer shrinks after
	save(5, 30)
	save(1, 7)
	check := func(w *WAL) {
		t.Helper()
		got, err := w.Entries(1, next, 1<<40)
		if err != nil || uint64(len(got)) != next-1 {
			t.Fatalf("entries: %d of %d, %v", len(got), next-1, err)
		}
		for _, e := range got {
			if !bytes.Equal(e.Data, data(e.Index, sizes[e.Index])) {
				t.Fatalf("entry %d reads back wrong", e.Index)
			}
		}
	}
	check(w)
	w.Close()
	if w, err = Open(opts); err != nil {
		t.Fatal(err)
	}
	check(w)
	w.Close()
}

// smallBuffers shrinks the write buffer's sizes so that ordinary batches
// outgrow it (reallocated, realigned) and exceed the bound on what is kept
// (replaced by a small one after the write).
func (w *WAL) smallBuffers() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.bufSize, w.bufKeep = vfs.DirectAlign, 2*vfs.DirectAlign
}
