package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/crashfs"
)

// fillOpts is what fill opens the log with.
var fillOpts = Options{Dir: dir, SegmentSize: 1 << 10, Prealloc: PreallocSync}

func openWith(fs *crashfs.FS, repair func(*DamageError) error) (*WAL, error) {
	o := fillOpts
	o.FS, o.Repair = fs, repair
	return Open(o)
}

// recordOffsets returns the offsets of the records of segment p.
func recordOffsets(t *testing.T, fs *crashfs.FS, p string) []int64 {
	t.Helper()
	b, _ := fs.ReadFile(p)
	var offs []int64
	for off := 0; off < len(b); {
		_, n, err := DecodeRecord(b[off:], DefaultMaxRecordSize)
		if err != nil {
			break
		}
		offs = append(offs, int64(off))
		off += n
	}
	return offs
}

func wantDamage(t *testing.T, err error, file string, off int64) *DamageError {
	t.Helper()
	var d *DamageError
	if !errors.As(err, &d) {
		t.Fatalf("open: %v, want a DamageError", err)
	}
	if d.File != file || (off >= 0 && d.Offset != off) {
		t.Fatalf("damage at %s offset %d, want %s offset %d (%v)", d.File, d.Offset, file, off, d)
	}
	if !strings.Contains(d.Error(), file) {
		t.Fatalf("error %q does not name %s", d, file)
	}
	return d
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

// TestRepairCutsTheLogToItsValidPrefix: with Repair, a record damaged in
// the middle of the log is reported to the callback before anything
// changes on disk; the log is then cut back to the records before it,
// later segments removed, and it accepts appends and reopens cleanly. A
// callback error leaves everything as it was.
func TestRepairCutsTheLogToItsValidPrefix(t *testing.T) {
	fs := newFS(t)
	names := fill(t, fs, nil)
	p := path.Join(dir, names[2])
	offs := recordOffsets(t, fs, p)
	if err := fs.FlipBits(p, offs[3]+headerSize+2, 0x80); err != nil {
		t.Fatal(err)
	}
	before := fs.Ops()
	if _, err := openWith(fs, func(*DamageError) error { return errors.New("no incarnation for you") }); err == nil || !strings.Contains(err.Error(), "no incarnation") {
		t.Fatalf("open with a failing repair callback: %v", err)
	}
	if got := segments(fs); len(got) != len(names) || fs.Ops() != before {
		t.Fatalf("a refused repair changed the disk: segments %v, %d file-system calls", got, fs.Ops()-before)
	}
	var seen *DamageError
	w, err := openWith(fs, func(d *DamageError) error {
		if got := segments(fs); len(got) != len(names) {
			t.Errorf("the callback ran after the cut: segments %v", got)
		}
		seen = d
		return nil
	})
	if err != nil {
		t.Fatalf("repair: %v", err)
	}
	if seen == nil || seen.File != p || seen.Offset != offs[3] || !seen.CleanStop {
		t.Fatalf("callback got %+v, want damage at %s offset %d", seen, p, offs[3])
	}
	// The log is cut back to the damage, then to the commit index of the
	// last hard state before it: what it keeps is known to be committed.
	last := w.LastIndex()
	if last != seen.LastIndex || last < 2 || last >= 100 || w.HardState().Commit != last {
		t.Fatalf("last index %d after repair, damage says %d, hard state %+v", last, seen.LastIndex, w.HardState())
	}
	if got := segments(fs); len(got) != 3 || len(seen.Discard) != len(names)-1 || !strings.Contains(seen.Discard[len(seen.Discard)-1], "after the commit index") {
		t.Fatalf("segments after repair %v, discarded %v", got, seen.Discard)
	}
	es, err := w.Entries(1, last+1, 1<<30)
	if err != nil || uint64(len(es)) != last || !bytes.Equal(es[last-1].Data, entries(last, last, 1)[0].Data) {
		t.Fatalf("entries after repair: %d, %v", len(es), err)
	}
	if err := w.Save(Batch{Entries: entries(last+1, last+5, 2)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, err = openWith(fs, nil)
	if err != nil || w.LastIndex() != last+5 {
		t.Fatalf("reopen after repair: %v", err)
	}
	w.Close()
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

// TestUnusableLogIsNotCut: when the first segment's header is damaged or
// no segment is left of a log that existed, nothing before the damage is
// usable: Open reports it (Repairable false) even with Repair, without
// calling it, so the caller can set the whole log aside.
func TestUnusableLogIsNotCut(t *testing.T) {
	fs := newFS(t)
	names := fill(t, fs, nil)
	if err := fs.FlipBits(path.Join(dir, names[0]), 2, 1); err != nil {
		t.Fatal(err)
	}
	repair := func(d *DamageError) error { return fmt.Errorf("repair called for %v", d) }
	_, err := openWith(fs, repair)
	if d := wantDamage(t, err, path.Join(dir, names[0]), 0); d.Repairable {
		t.Fatalf("damaged first header reported repairable: %+v", d)
	}
	fs2 := newFS(t)
	_, err = Open(Options{FS: fs2, Dir: dir, Existing: true, Repair: repair})
	if d := wantDamage(t, err, dir, 0); d.Repairable {
		t.Fatalf("missing log reported repairable: %+v", d)
	}
}

// TestRandomDamageIsReportedOrHarmless damages a stopped log at random
// (bytes flipped, a segment cut short or removed) and opens it with
// Repair. Whatever happens, the log that opens holds only what was
// written; and if no damage was reported (so the storage keeps its
// incarnation), it lost nothing: all of it after a clean stop, all but a
// torn-looking final record (the hard state) after a crash. After a
// crash, the last segment is only ever flipped, not cut or removed: a lost
// suffix is indistinguishable from a log that was never longer.
func TestRandomDamageIsReportedOrHarmless(t *testing.T) {
	reported, silent := 0, 0
	for seed := int64(0); seed < 400; seed++ {
		rng := rand.New(rand.NewSource(seed))
		fs := newFS(t)
		fs.SetDirectIO(rng.Intn(2) == 0)
		clean := rng.Intn(2) == 0
		crash := fs
		if clean {
			crash = nil
		}
		names := fill(t, fs, crash)
		var what string
		for k := 0; k < 1+rng.Intn(2); k++ {
			i := rng.Intn(len(names))
			p := path.Join(dir, names[i])
			b, ok := fs.ReadFile(p)
			if !ok || len(b) == 0 {
				continue
			}
			kind := rng.Intn(4)
			if !clean && i == len(names)-1 {
				kind = 0
			}
			switch kind {
			case 0, 1:
				off := rng.Int63n(int64(len(b)))
				fs.FlipBits(p, off, byte(1+rng.Intn(255)))
				what += fmt.Sprintf(" flip %s@%d", p, off)
			case 2:
				size := rng.Int63n(int64(len(b)))
				fs.TruncateFile(p, size)
				what += fmt.Sprintf(" cut %s@%d", p, size)
			case 3:
				fs.RemoveFile(p)
				what += " remove " + p
			}
		}
		var d *DamageError
		w, err := openWith(fs, func(dd *DamageError) error { d = dd; return nil })
		if err != nil {
			var dd *DamageError
			if errors.As(err, &dd) && !dd.Repairable {
				reported++
				continue // the caller sets the whole log aside
			}
			t.Fatalf("seed %d (%s): %v", seed, what, err)
		}
		first, last := w.Start().Index+1, w.LastIndex()
		if last >= first {
			es, err := w.Entries(first, last+1, 1<<30)
			if err != nil {
				t.Fatalf("seed %d (%s): reading the repaired log: %v", seed, what, err)
			}
			for _, e := range es {
				if want := entries(e.Index, e.Index, 1)[0]; e.Term != 1 || !bytes.Equal(e.Data, want.Data) {
					t.Fatalf("seed %d (%s): entry %d is not what was written", seed, what, e.Index)
				}
			}
		}
		if d != nil {
			reported++
		} else {
			silent++
			hs := w.HardState()
			if last != 100 || (hs.Commit != 91 && (clean || hs.Commit != 81)) {
				t.Fatalf("seed %d (%s, clean %v): no damage reported, but the log ends at %d with %+v", seed, what, clean, last, hs)
			}
		}
		w.Close()
	}
	t.Logf("damage reported %d times, harmless %d times", reported, silent)
	if reported < 100 || silent < 10 {
		t.Fatalf("damage too rarely reported (%d) or harmless (%d)", reported, silent)
	}
}

// TestRepairDropsEntriesThatMayHaveBeenOverwritten: the valid prefix of a
// damaged log is the log as it was at some moment; entries it holds after
// its commit index may have been overwritten later, in what was lost (here
// a follower's uncommitted entries 6..10 of term 1, replaced by a new
// leader's 6..8 of term 2). A repair keeps only what is committed, durably.
func TestRepairDropsEntriesThatMayHaveBeenOverwritten(t *testing.T) {
	fs := newFS(t)
	w := open(t, fs, nil)
	hs := raft.HardState{Term: 1, Commit: 5}
	if err := w.Save(Batch{Entries: entries(1, 10, 1), HardState: &hs}); err != nil {
		t.Fatal(err)
	}
	end := w.woff
	hs = raft.HardState{Term: 2, Commit: 8}
	if err := w.Save(Batch{Entries: entries(6, 8, 2), HardState: &hs}); err != nil {
		t.Fatal(err)
	}
	seg := w.active.name
	w.Close()
	if err := fs.FlipBits(path.Join(dir, seg), end+headerSize+3, 0x01); err != nil { // entry 6 of term 2
		t.Fatal(err)
	}
	var d *DamageError
	w, err := openWith(fs, func(dd *DamageError) error { d = dd; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if w.LastIndex() != 5 || d.LastIndex != 5 {
		t.Fatalf("repaired log ends at %d (damage says %d), want 5: entries 6..10 of term 1 were overwritten", w.LastIndex(), d.LastIndex)
	}
	w.Close()
	if w, err = openWith(fs, nil); err != nil || w.LastIndex() != 5 {
		t.Fatalf("reopen after repair: %v", err)
	}
	if err := w.Save(Batch{Entries: entries(6, 6, 3)}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if w, err = openWith(fs, nil); err != nil || w.LastIndex() != 6 {
		t.Fatalf("reopen after an append: %v", err)
	}
	if tm, _ := w.Term(6); tm != 3 {
		t.Fatalf("entry 6 has term %d after reopen, want 3", tm)
	}
	w.Close()
}
