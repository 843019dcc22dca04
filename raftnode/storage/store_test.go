package storage

import (
	"errors"
	"math/rand"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/raft"
)

func memOpts(fs vfs.FS) Options {
	return Options{NodeID: 7, SegmentSize: 4 << 10, TrailingEntries: 3, Knobs: &storeknobs.Knobs{FS: fs, Prealloc: wal.PreallocSync}}
}

func mustOpen(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	return s
}

func ents(lo, hi, term uint64) []raft.Entry {
	var out []raft.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, raft.Entry{Index: i, Term: term, Data: []byte{byte(i), byte(term)}})
	}
	return out
}

func TestSaveAppendOverwriteAndReopen(t *testing.T) {
	for _, name := range []string{"os", "crashfs"} {
		t.Run(name, func(t *testing.T) {
			var fs vfs.FS = crashfs.New()
			dir := "/data"
			if name == "os" {
				fs, dir = vfs.OS, t.TempDir()
			}
			s := mustOpen(t, dir, memOpts(fs))
			if err := s.Save(raft.HardState{Term: 1, Vote: 1}, ents(1, 10, 1), nil); err != nil {
				t.Fatal(err)
			}
			// A follower overwrites the uncommitted suffix from 6 on.
			if err := s.Save(raft.HardState{Term: 2, Vote: 2, Commit: 5}, ents(6, 8, 2), nil); err != nil {
				t.Fatal(err)
			}
			check := func(s *Store) {
				t.Helper()
				if li, _ := s.LastIndex(); li != 8 {
					t.Fatalf("last index %d, want 8", li)
				}
				if tm, _ := s.Term(5); tm != 1 {
					t.Fatalf("term(5) = %d", tm)
				}
				if tm, _ := s.Term(6); tm != 2 {
					t.Fatalf("term(6) = %d", tm)
				}
				es, err := s.Entries(1, 9, 1<<20)
				if err != nil || len(es) != 8 || es[7].Term != 2 || es[7].Data[0] != 8 {
					t.Fatalf("entries: %v %+v", err, es)
				}
				if es, _ := s.Entries(1, 9, 0); len(es) != 1 {
					t.Fatalf("maxBytes 0 returned %d entries, want 1", len(es))
				}
				if _, err := s.Entries(0, 2, 100); !errors.Is(err, raft.ErrCompacted) {
					t.Fatalf("entries from 0: %v", err)
				}
				if _, err := s.Entries(1, 10, 100); !errors.Is(err, raft.ErrUnavailable) {
					t.Fatalf("entries past last: %v", err)
				}
				hs, _, _ := s.InitialState()
				if hs != (raft.HardState{Term: 2, Vote: 2, Commit: 5}) {
					t.Fatalf("hard state %+v", hs)
				}
			}
			check(s)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, memOpts(fs))
			check(s)
			// Gaps and compacted indexes are refused without writing anything.
			if err := s.Save(raft.HardState{}, ents(10, 10, 2), nil); !errors.Is(err, raft.ErrUnavailable) {
				t.Fatalf("gap append: %v", err)
			}
			s.Close()
		})
	}
}

func TestDirectoryGuards(t *testing.T) {
	fs := crashfs.New()
	s := mustOpen(t, "/d", memOpts(fs))
	if _, err := Open("/d", memOpts(fs)); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	s.Close()
	o := memOpts(fs)
	o.NodeID = 8
	if _, err := Open("/d", o); !errors.Is(err, ErrWrongNode) {
		t.Fatalf("open as node 8: %v, want ErrWrongNode", err)
	}
	fs.SetFile("/d/VERSION", []byte("capraft-storage\nformat 99\nnode 7\n"))
	if _, err := Open("/d", memOpts(fs)); !errors.Is(err, ErrIncompatibleVersion) {
		t.Fatalf("open format 99: %v, want ErrIncompatibleVersion", err)
	}
	fs2 := crashfs.New()
	s = mustOpen(t, "/e", memOpts(fs2))
	if err := s.Save(raft.HardState{Term: 1}, ents(1, 3, 1), nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	fs2.RemoveFile("/e/VERSION")
	if _, err := Open("/e", memOpts(fs2)); !errors.Is(err, ErrIncompatibleVersion) {
		t.Fatalf("open dir with data but no VERSION: %v", err)
	}
	// An empty log and no VERSION is what an Open cut short while creating
	// the directory leaves: it opens as new.
	fs3 := crashfs.New()
	fs3.MkdirAll("/f/wal")
	s = mustOpen(t, "/f", memOpts(fs3))
	if s.Incarnation() == 0 {
		t.Fatal("new directory has no incarnation")
	}
	s.Close()
}

func TestOSLockAcrossOpen(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{NodeID: 1})
	defer s.Close()
	if _, err := Open(dir, Options{NodeID: 1}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// TestModelRandomOps runs random appends, overwrites, snapshots, installs
// and compactions against the in-memory model, reopening at random points.
func TestModelRandomOps(t *testing.T) {
	seeds := 60
	if testing.Short() || raceEnabled {
		seeds = 10
	}
	for seed := int64(0); seed < int64(seeds); seed++ {
		rng := rand.New(rand.NewSource(seed))
		fs := crashfs.New()
		fs.SetDirectIO(seed%2 == 0) // odd seeds: the buffered fallback
		opts := memOpts(fs)
		s := mustOpen(t, "/m", opts)
		m := &model{}
		g := &gen{rng: rng, bigData: true}
		restarted := false
		for i := 0; i < 300; i++ {
			o := g.next(m)
			if err := o.apply(s); err != nil {
				t.Fatalf("seed %d op %d %v: %v", seed, i, o, err)
			}
			states := o.states(m, opts.TrailingEntries)
			m = states[len(states)-1]
			if err := diff(s, m, restarted); err != nil {
				t.Fatalf("seed %d after op %d %v: %v", seed, i, o, err)
			}
			if rng.Intn(25) == 0 {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				var err error
				s, err = Open("/m", opts)
				if err != nil {
					t.Fatalf("seed %d reopen at op %d: %v\nwal:%s", seed, i, err, dumpWAL(fs, "/m/wal"))
				}
				restarted = true
				if err := diff(s, m, restarted); err != nil {
					t.Fatalf("seed %d after reopen at op %d: %v", seed, i, err)
				}
			}
		}
		s.Close()
	}
}
