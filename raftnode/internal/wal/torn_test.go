package wal

import (
	"path"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

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
