package wal

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
)

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

// TestCorruptFinalRecordAfterCleanStopIsDamage is the case of issue 12: a
// byte flipped in the final record of a cleanly stopped log, written with
// direct I/O (so zeros follow it, as after a torn write). The final record
// is a hard state, whose last bytes are zeros: after a crash the same
// bytes are indistinguishable from a torn write, and are truncated as
// one; after a clean stop they are corruption, reported with file and
// offset.
func TestCorruptFinalRecordAfterCleanStopIsDamage(t *testing.T) {
	for _, clean := range []bool{true, false} {
		fs := newFS(t)
		names := fill(t, fs, map[bool]*crashfs.FS{true: nil, false: fs}[clean])
		p := path.Join(dir, names[len(names)-1])
		offs := recordOffsets(t, fs, p)
		final := offs[len(offs)-1]
		if err := fs.FlipBits(p, final+headerSize+1, 0x04); err != nil { // the hard state's term
			t.Fatal(err)
		}
		log, buf := logger()
		o := fillOpts
		o.FS, o.Logger = fs, log
		w, err := Open(o)
		if !clean {
			if err != nil || !strings.Contains(buf.String(), "truncating torn write") || w.LastIndex() != 100 || w.HardState().Commit != 81 {
				t.Fatalf("after a crash: %v, last %d, log %q: want the final hard state truncated as a torn write", err, w.LastIndex(), buf.String())
			}
			w.Close()
			continue
		}
		d := wantDamage(t, err, p, final)
		// A repair keeps what the hard state before the damaged one
		// commits: 81.
		if !d.CleanStop || d.LastIndex != 81 || d.KnownLast != 100 || !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("damage %+v", d)
		}
		if buf.Len() != 0 {
			t.Fatalf("damage reported as a warning too: %q", buf.String())
		}
	}
}

// TestLostSuffixAfterCleanStopIsDamage: a cleanly stopped log that ends
// before its clean-stop marker says (cut at a record boundary, cut inside
// a record, or missing its newest segment) has lost entries, although
// what is left reads as a valid log (a cut inside a record: as a torn
// write).
func TestLostSuffixAfterCleanStopIsDamage(t *testing.T) {
	cases := []struct {
		name   string
		damage func(fs *crashfs.FS, last string, offs []int64) (file string, off int64)
	}{
		{"cut at a record boundary", func(fs *crashfs.FS, last string, offs []int64) (string, int64) {
			fs.TruncateFile(last, offs[len(offs)-2])
			return last, offs[len(offs)-2]
		}},
		{"cut inside the last entry", func(fs *crashfs.FS, last string, offs []int64) (string, int64) {
			fs.TruncateFile(last, offs[len(offs)-2]+3)
			return last, offs[len(offs)-2]
		}},
		{"newest segment missing", func(fs *crashfs.FS, last string, offs []int64) (string, int64) {
			fs.RemoveFile(last)
			return last, 0
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := newFS(t)
			names := fill(t, noDirect{fs}, nil) // buffered: segments end at their last record
			last := path.Join(dir, names[len(names)-1])
			file, off := c.damage(fs, last, recordOffsets(t, fs, last))
			_, err := openWith(fs, nil)
			d := wantDamage(t, err, file, off)
			if d.KnownLast != 100 || d.LastIndex >= 100 || !d.Repairable {
				t.Fatalf("damage %+v: want a repairable lost suffix below 100", d)
			}
		})
	}
}

// TestGarbageAfterCleanEndIsCutWithoutDamage: damage to the preallocated
// zeros after the end of a cleanly stopped log holds nothing of the log:
// it is truncated with a warning and nothing is reported lost.
func TestGarbageAfterCleanEndIsCutWithoutDamage(t *testing.T) {
	fs := newFS(t)
	w, opts, end := preallocLog(t, fs, 20)
	w.Close()
	p := path.Join(dir, segName(1, 1))
	if err := fs.FlipBits(p, end+100, 1); err != nil {
		t.Fatal(err)
	}
	log, buf := logger()
	opts.Logger = log
	opts.Repair = func(d *DamageError) error { return fmt.Errorf("repair called for %v", d) }
	w, err := Open(opts)
	if err != nil || w.LastIndex() != 20 {
		t.Fatalf("open: %v", err)
	}
	if !strings.Contains(buf.String(), "not zeros") {
		t.Fatalf("no warning: %q", buf.String())
	}
	w.Close()
}

// TestCleanStopMarkerIsGoneBeforeTheFirstWrite: once reopened, a log is
// no longer cleanly stopped: a crash after that tears the tail as any
// crash does, and recovery truncates it as a torn write.
func TestCleanStopMarkerIsGoneBeforeTheFirstWrite(t *testing.T) {
	fs := newFS(t)
	fill(t, noDirect{fs}, nil)
	w, err := Open(Options{FS: noDirect{fs}, Dir: dir, SegmentSize: 1 << 10, Prealloc: PreallocSync})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fs.ReadFile(path.Join(dir, cleanStopName)); ok {
		t.Fatal("clean-stop marker still there after open")
	}
	if err := w.Save(Batch{Entries: entries(101, 103, 1)}); err != nil {
		t.Fatal(err)
	}
	powerFail(fs)
	names := segments(fs)
	last := path.Join(dir, names[len(names)-1])
	b, _ := fs.ReadFile(last)
	fs.TruncateFile(last, int64(len(b)-4))
	w, err = openWith(fs, nil)
	if err != nil || w.LastIndex() != 102 {
		t.Fatalf("torn tail after a crash that followed a clean stop: %v", err)
	}
	w.Close()
}

// TestDamagedCleanStopMarkerIsDamage: a clean-stop marker that does not
// verify says the log was stopped cleanly but not where it ended, so a
// lost suffix cannot be ruled out; a repair keeps the log through its
// commit index.
func TestDamagedCleanStopMarkerIsDamage(t *testing.T) {
	fs := newFS(t)
	fill(t, fs, nil)
	p := path.Join(dir, cleanStopName)
	if err := fs.FlipBits(p, 30, 1); err != nil {
		t.Fatal(err)
	}
	_, err := openWith(fs, nil)
	wantDamage(t, err, p, 0)
	called := false
	w, err := openWith(fs, func(*DamageError) error { called = true; return nil })
	if err != nil || !called || w.LastIndex() != 91 {
		t.Fatalf("repair of a damaged marker: %v, called %v", err, called)
	}
	w.Close()
}
