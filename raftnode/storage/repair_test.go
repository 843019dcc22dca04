package storage

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/raft"
)

// fillStore writes entries 1..100 (10 per Save, each Save ending with a
// hard state committing them) over several segments, and
// snapshots at the given indexes (compacting to each). It leaves the store
// open.
func fillStore(t *testing.T, fs *crashfs.FS, opts Options, snaps ...uint64) *Store {
	t.Helper()
	s := mustOpen(t, "/d", opts)
	for i := uint64(1); i <= 100; i += 10 {
		batch := ents(i, i+9, 1)
		for k := range batch {
			batch[k].Data = bytes.Repeat([]byte{byte(batch[k].Index)}, 100)
		}
		if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: i + 9}, batch, nil); err != nil {
			t.Fatal(err)
		}
		for _, at := range snaps {
			if at >= i && at < i+10 {
				if err := s.CreateSnapshot(at, raft.ConfState{Voters: []uint64{7}}, []byte(fmt.Sprint("state@", at))); err != nil {
					t.Fatal(err)
				}
				if err := s.Compact(at); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return s
}

// walSegments lists the paths of the store's WAL segments, oldest first.
func walSegments(fs *crashfs.FS, dir string) []string {
	names, _ := fs.List(dir + "/wal")
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, ".wal") {
			out = append(out, dir+"/wal/"+n)
		}
	}
	return out
}

// lastRecord returns the offset of the final record of WAL segment p.
func lastRecord(t *testing.T, fs *crashfs.FS, p string) int64 {
	t.Helper()
	b, _ := fs.ReadFile(p)
	last := int64(-1)
	for off := 0; off < len(b); {
		_, n, err := wal.DecodeRecord(b[off:], 1<<30)
		if err != nil {
			break
		}
		last = int64(off)
		off += n
	}
	if last < 0 {
		t.Fatalf("%s holds no record", p)
	}
	return last
}

func repairOpts(fs *crashfs.FS) Options {
	o := memOpts(fs)
	o.Repair = true
	return o
}

// wantRefused checks that Open without Repair fails with ErrDamaged,
// naming the file and offset and saying the node can repair itself from
// its peers (off <= 0: no offset is checked).
func wantRefused(t *testing.T, fs *crashfs.FS, file string, off int64) {
	t.Helper()
	_, err := Open("/d", memOpts(fs))
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("open of a damaged directory: %v, want ErrDamaged", err)
	}
	for _, want := range []string{file, fmt.Sprintf("offset %d", off), "repairs this itself", "restored by the leader"} {
		if off <= 0 && strings.HasPrefix(want, "offset") {
			continue // a missing file, or an offset the test does not know
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
}

// TestCorruptionAfterCleanStopIsDetectedAndRepaired: a byte flipped in the
// final record (a hard state) of a cleanly stopped log written with direct
// I/O is not truncated as a torn write: Open refuses, naming file and
// offset; with Repair the record is discarded after a new incarnation was
// made durable, and the store reopens with that incarnation.
func TestCorruptionAfterCleanStopIsDetectedAndRepaired(t *testing.T) {
	fs := crashfs.New()
	fs.SetDirectIO(true)
	s := fillStore(t, fs, memOpts(fs))
	old := s.Incarnation()
	if !s.Stats().Direct {
		t.Fatal("the log is not written with direct I/O")
	}
	s.Close()
	segs := walSegments(fs, "/d")
	p := segs[len(segs)-1]
	off := lastRecord(t, fs, p)
	if err := fs.FlipBits(p, off+13+1, 0x02); err != nil { // the hard state's term
		t.Fatal(err)
	}
	wantRefused(t, fs, p, off)

	s = mustOpen(t, "/d", repairOpts(fs))
	rec := s.Recovery()
	if !rec.Repaired || rec.File != p || rec.Offset != off || !rec.CleanStop || rec.Quarantine != "" {
		t.Fatalf("recovery %+v, want a repair of %s at %d after a clean stop", rec, p, off)
	}
	if rec.OldIncarnation != old || rec.NewIncarnation == old || s.Incarnation() != rec.NewIncarnation || rec.NewIncarnation == 0 {
		t.Fatalf("incarnation %x, recovery %x -> %x, was %x", s.Incarnation(), rec.OldIncarnation, rec.NewIncarnation, old)
	}
	hs, _, _ := s.InitialState()
	// The previous hard state is kept, and the log only through what it
	// commits.
	if last, _ := s.LastIndex(); last != 90 || hs != (raft.HardState{Term: 1, Vote: 1, Commit: 90}) {
		t.Fatalf("after repair: last %d, hard state %+v; want 90 and the previous hard state", last, hs)
	}
	s.Close()
	s = mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	if s.Incarnation() != rec.NewIncarnation || s.Recovery().Repaired {
		t.Fatalf("reopen: incarnation %x, recovery %+v", s.Incarnation(), s.Recovery())
	}
}

// TestTornTailAfterCrashKeepsIncarnation: after a crash, a final write torn
// in half is repaired silently (it was never acknowledged), and the store
// keeps its incarnation, also with Repair on: a crash of a majority must
// leave counted voters.
func TestTornTailAfterCrashKeepsIncarnation(t *testing.T) {
	for _, direct := range []bool{false, true} {
		fs := crashfs.New()
		fs.SetDirectIO(direct)
		s := fillStore(t, fs, memOpts(fs))
		old := s.Incarnation()
		fs.Crash(rand.New(rand.NewSource(1))) // no Close: the process died
		segs := walSegments(fs, "/d")
		p := segs[len(segs)-1]
		off := lastRecord(t, fs, p)
		b, _ := fs.ReadFile(p)
		copy(b[off+20:], make([]byte, 17)) // the end of the final record never reached the disk
		fs.SetFile(p, b)
		s = mustOpen(t, "/d", repairOpts(fs))
		hs, _, _ := s.InitialState()
		if s.Incarnation() != old || s.Recovery().Repaired || hs.Commit != 90 {
			t.Fatalf("direct %v: incarnation %x (was %x), recovery %+v, hard state %+v", direct, s.Incarnation(), old, s.Recovery(), hs)
		}
		s.Close()
	}
}

// TestLostSuffixAfterCleanStopIsDetected: a cleanly stopped node whose
// newest log segment is gone has lost entries although what is left is a
// valid log; Open refuses, and Repair renews the incarnation and keeps the
// rest.
func TestLostSuffixAfterCleanStopIsDetected(t *testing.T) {
	fs := crashfs.New()
	s := fillStore(t, fs, memOpts(fs))
	old := s.Incarnation()
	s.Close()
	segs := walSegments(fs, "/d")
	p := segs[len(segs)-1]
	if err := fs.RemoveFile(p); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, fs, p, 0)
	s = mustOpen(t, "/d", repairOpts(fs))
	defer s.Close()
	rec := s.Recovery()
	last, _ := s.LastIndex()
	if !rec.Repaired || s.Incarnation() == old || rec.KnownLast != 100 || last >= 100 || rec.LastIndex != last {
		t.Fatalf("recovery %+v, last %d", rec, last)
	}
}

// TestMidLogCorruptionIsRepairedToTheValidPrefix: a record damaged in an
// older segment cuts the log back to the entries before it that its hard
// state commits; later segments are removed, the rest reads back and takes
// appends.
func TestMidLogCorruptionIsRepairedToTheValidPrefix(t *testing.T) {
	fs := crashfs.New()
	s := fillStore(t, fs, memOpts(fs))
	s.Close()
	segs := walSegments(fs, "/d")
	p := segs[1]
	if err := fs.FlipBits(p, 200, 0x10); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, fs, p, -1)
	s = mustOpen(t, "/d", repairOpts(fs))
	defer s.Close()
	rec := s.Recovery()
	last, _ := s.LastIndex()
	if !rec.Repaired || rec.File != p || last != rec.LastIndex || last == 0 || last >= 50 {
		t.Fatalf("recovery %+v, last %d", rec, last)
	}
	if got := walSegments(fs, "/d"); len(got) != 2 || len(rec.Discarded) < len(segs)-1 {
		t.Fatalf("segments after repair %v, discarded %v", got, rec.Discarded)
	}
	es, err := s.Entries(1, last+1, 1<<30)
	if err != nil || uint64(len(es)) != last || es[last-1].Data[0] != byte(last) {
		t.Fatalf("entries after repair: %d, %v", len(es), err)
	}
	if hs, _, _ := s.InitialState(); hs.Commit != last || hs.Term != 1 {
		t.Fatalf("hard state %+v after repair to %d", hs, last)
	}
	if err := s.Save(raft.HardState{Term: 2, Commit: last}, ents(last+1, last+3, 2), nil); err != nil {
		t.Fatal(err)
	}
}

// TestRepairKeepsASnapshotAheadOfTheCutLog: when the log is cut back to
// before the newest valid snapshot, the snapshot is kept and the log
// restarts after it.
func TestRepairKeepsASnapshotAheadOfTheCutLog(t *testing.T) {
	fs := crashfs.New()
	o := memOpts(fs)
	o.TrailingEntries = 60
	s := fillStore(t, fs, o, 80)
	s.Close()
	segs := walSegments(fs, "/d")
	if err := fs.FlipBits(segs[len(segs)-3], 150, 0x10); err != nil {
		t.Fatal(err)
	}
	o.Repair = true
	s = mustOpen(t, "/d", o)
	defer s.Close()
	meta, ok := s.SnapshotMeta()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	hs, _, _ := s.InitialState()
	if !s.Recovery().Repaired || !ok || meta.Index != 80 || first != 81 || last != 80 || hs.Commit != 80 {
		t.Fatalf("recovery %+v: snapshot %d (%v), log %d..%d, hard state %+v", s.Recovery(), meta.Index, ok, first, last, hs)
	}
}

// TestUnusableDirectoryIsQuarantinedAndStartsEmpty: when nothing before
// the damage is usable (the first segment's header is damaged; or every
// snapshot is corrupt and the log starts after one), Repair makes a new
// incarnation durable, moves the log and snapshots into damaged-<time>/
// (kept), and starts empty; without Repair, Open refuses.
func TestUnusableDirectoryIsQuarantinedAndStartsEmpty(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, fs *crashfs.FS)
	}{
		{"first segment header", func(t *testing.T, fs *crashfs.FS) {
			fs.FlipBits(walSegments(fs, "/d")[0], 3, 0x01)
		}},
		{"the snapshot the log starts after", func(t *testing.T, fs *crashfs.FS) {
			fs.FlipBits(snapFile(t, fs, "/d", 60), 40, 0x01)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := crashfs.New()
			o := memOpts(fs)
			o.KeepSnapshots = 1 // the log is compacted to start after snapshot 60
			s := fillStore(t, fs, o, 30, 60)
			old := s.Incarnation()
			s.Close()
			if first, _ := s.FirstIndex(); first < 30 {
				t.Fatalf("log not compacted: starts at %d", first)
			}
			c.damage(t, fs)
			if _, err := Open("/d", o); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "repairs this itself") {
				t.Fatalf("open without repair: %v", err)
			}
			walBefore, _ := fs.List("/d/wal")
			o.Repair = true
			s = mustOpen(t, "/d", o)
			rec := s.Recovery()
			if !rec.Repaired || !strings.HasPrefix(rec.Quarantine, "/d/damaged-") || s.Incarnation() == old || rec.NewIncarnation != s.Incarnation() {
				t.Fatalf("recovery %+v, incarnation %x (was %x)", rec, s.Incarnation(), old)
			}
			hs, cs, _ := s.InitialState()
			last, _ := s.LastIndex()
			if _, ok := s.SnapshotMeta(); ok || last != 0 || !hs.IsEmpty() || len(cs.Voters) != 0 {
				t.Fatalf("not empty after quarantine: last %d, hs %+v, cs %+v", last, hs, cs)
			}
			moved, _ := fs.List(rec.Quarantine + "/wal")
			snaps, _ := fs.List(rec.Quarantine + "/snap")
			if len(moved) != len(walBefore) || len(snaps) != 1 {
				t.Fatalf("quarantine holds wal %v (had %v), snap %v", moved, walBefore, snaps)
			}
			if err := s.Save(raft.HardState{Term: 5}, ents(1, 2, 5), nil); err != nil {
				t.Fatal(err)
			}
			s.Close()
			// A second quarantine never reuses the first one's directory.
			fs.FlipBits(walSegments(fs, "/d")[0], 3, 0x01)
			s = mustOpen(t, "/d", o)
			if q := s.Recovery().Quarantine; q == "" || q == rec.Quarantine {
				t.Fatalf("second quarantine %q, first %q", q, rec.Quarantine)
			}
			if again, _ := fs.List(rec.Quarantine + "/wal"); len(again) != len(moved) {
				t.Fatalf("first quarantine changed: %v", again)
			}
			s.Close()
		})
	}
}

// TestVersionWithoutIncarnationGetsOne: a directory written before
// incarnations (VERSION format 1) opens with its data, gets an incarnation
// recorded atomically in VERSION (format 2), and keeps it.
func TestVersionWithoutIncarnationGetsOne(t *testing.T) {
	fs := crashfs.New()
	s := fillStore(t, fs, memOpts(fs))
	s.Close()
	fs.SetFile("/d/VERSION", []byte("capraft-storage\nformat 1\nnode 7\n"))
	s = mustOpen(t, "/d", memOpts(fs))
	inc := s.Incarnation()
	if last, _ := s.LastIndex(); inc == 0 || last != 100 || s.Recovery().Repaired {
		t.Fatalf("format 1 directory: incarnation %x, last %d, recovery %+v", inc, last, s.Recovery())
	}
	s.Close()
	b, _ := fs.ReadFile("/d/VERSION")
	if want := fmt.Sprintf("format 2\nnode 7\nincarnation %016x\n", inc); !strings.HasSuffix(string(b), want) {
		t.Fatalf("VERSION is %q, want it to end with %q", b, want)
	}
	s = mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	if s.Incarnation() != inc {
		t.Fatalf("incarnation %x after reopen, was %x", s.Incarnation(), inc)
	}
	fs.SetFile("/d/VERSION", []byte("capraft-storage\nformat 2\nnode 7\n"))
	if _, err := Open("/d", memOpts(fs)); err == nil {
		t.Fatal("format 2 VERSION without an incarnation opened")
	}
}

// TestIncarnationIsKeptAcrossRestartsAndNewPerDirectory: a store keeps its
// incarnation across clean restarts and crashes; each new directory draws
// its own from Options.Rand (zero is never drawn).
func TestIncarnationIsKeptAcrossRestartsAndNewPerDirectory(t *testing.T) {
	fs := crashfs.New()
	o := memOpts(fs)
	o.Rand = bytes.NewReader(append(make([]byte, 8), 1, 2, 3, 4, 5, 6, 7, 8))
	s := mustOpen(t, "/d", o)
	if s.Incarnation() != 0x0807060504030201 {
		t.Fatalf("incarnation %x from the injected source", s.Incarnation())
	}
	s.Close()
	s = mustOpen(t, "/d", memOpts(fs))
	if s.Incarnation() != 0x0807060504030201 {
		t.Fatalf("incarnation %x after a clean restart", s.Incarnation())
	}
	fs.Crash(rand.New(rand.NewSource(2)))
	s = mustOpen(t, "/d", memOpts(fs))
	if s.Incarnation() != 0x0807060504030201 {
		t.Fatalf("incarnation %x after a crash", s.Incarnation())
	}
	s.Close()
	a, b := mustOpen(t, "/a", memOpts(fs)), mustOpen(t, "/b", memOpts(fs))
	defer a.Close()
	defer b.Close()
	if a.Incarnation() == b.Incarnation() || a.Incarnation() == 0 {
		t.Fatalf("two new directories got incarnations %x and %x", a.Incarnation(), b.Incarnation())
	}
}

// TestSnapshotKeepsIncarnationsAcrossReopen: the configuration's
// incarnations and learners to promote are in the snapshot after a restart.
func TestSnapshotKeepsIncarnationsAcrossReopen(t *testing.T) {
	fs := crashfs.New()
	s := mustOpen(t, "/d", memOpts(fs))
	cs := raft.ConfState{Voters: []uint64{1, 2}, Learners: []uint64{3},
		Incarnations: []raft.MemberIncarnation{{ID: 1, Incarnation: 11}, {ID: 2, Incarnation: 22}, {ID: 3, Incarnation: 33}},
		AutoPromote:  []uint64{3}}
	if err := s.Save(raft.HardState{Term: 1, Commit: 5}, ents(1, 5, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(5, cs, []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	_, got, _ := s.InitialState()
	if fmt.Sprint(got) != fmt.Sprint(cs) {
		t.Fatalf("conf state after reopen %+v, want %+v", got, cs)
	}
}

// TestCrashDuringRepairRepairsAgain: power failing anywhere inside a
// repair leaves a directory that the next Open (with Repair) repairs, and
// the incarnation never goes back to the one that lost data.
func TestCrashDuringRepairRepairsAgain(t *testing.T) {
	for n := int64(0); n < 24; n++ {
		fs := crashfs.New()
		s := fillStore(t, fs, memOpts(fs))
		old := s.Incarnation()
		s.Close()
		segs := walSegments(fs, "/d")
		fs.FlipBits(segs[1], 200, 0x10)
		rng := rand.New(rand.NewSource(n))
		fs.SetCrashAfter(n, rng)
		if s, err := Open("/d", repairOpts(fs)); err == nil {
			s.Close()
		}
		fs.SetCrashAfter(-1, nil)
		fs.Crash(rng)
		s = mustOpen(t, "/d", repairOpts(fs))
		last, _ := s.LastIndex()
		if s.Incarnation() == old || last >= 50 {
			t.Fatalf("crash after %d calls into the repair: incarnation %x (was %x), last %d", n, s.Incarnation(), old, last)
		}
		s.Close()
	}
}
