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
)

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
