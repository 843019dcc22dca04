package storage

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// TestReadersDuringAppendsAndCompaction runs Entries/Term/FirstIndex readers
// (as a replicating leader would) while one goroutine appends, snapshots and
// compacts. Under -race this checks the locking; the readers also check that
// whatever they see is internally consistent.
func TestReadersDuringAppendsAndCompaction(t *testing.T) {
	fs := crashfs.New()
	fs.SetDirectIO(true) // readers share the segments with direct writes
	opts := memOpts(fs)
	opts.TrailingEntries = 20
	s := mustOpen(t, "/r", opts)
	defer s.Close()
	var done atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last < first {
					continue
				}
				es, err := s.Entries(first, last+1, 4096)
				if errors.Is(err, raft.ErrCompacted) {
					continue // compacted between the two calls: allowed
				}
				if err != nil {
					errc <- err
					return
				}
				for k, e := range es {
					if e.Index != first+uint64(k) || len(e.Data) != 2 || e.Data[0] != byte(e.Index) {
						errc <- errors.New("inconsistent entry read")
						return
					}
				}
			}
		}()
	}
	for i := uint64(1); i <= 2000; i += 10 {
		if err := s.Save(raft.HardState{Term: 1, Commit: i + 9}, ents(i, i+9, 1), nil); err != nil {
			t.Fatal(err)
		}
		if i%200 == 1 && i > 1 {
			if err := s.CreateSnapshot(i+9, raft.ConfState{Voters: []uint64{1}}, []byte("s")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(i + 9); err != nil {
				t.Fatal(err)
			}
		}
	}
	done.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}
