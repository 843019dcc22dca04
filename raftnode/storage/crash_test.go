package storage

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/wal"
)

var crashSeeds = flag.Int("crash.seeds", 1500, "number of seeds for TestCrashConsistency (each runs 3 crash/recover rounds)")
var crashSeed = flag.Int64("crash.seed", -1, "run TestCrashConsistency for this one seed only")

// TestCrashConsistency drives the store with random Raft-like operations on
// crashfs, crashes at a random file-system call (dropping or tearing
// unsynced writes and directory changes), recovers, and checks that the
// recovered state is exactly the state after the last acknowledged call or
// one of the prefixes of the call in flight: nothing acknowledged is lost,
// nothing is invented, the hard state never goes backwards.
func TestCrashConsistency(t *testing.T) {
	lo, hi := int64(0), int64(*crashSeeds)
	if testing.Short() {
		hi = 200
	} else if raceEnabled && !flagSet("crash.seeds") {
		hi = 300
	}
	if *crashSeed >= 0 {
		lo, hi = *crashSeed, *crashSeed+1
	}
	crashes, direct := 0, 0
	for seed := lo; seed < hi; seed++ {
		n, d, err := crashSeedRun(seed)
		if err != nil {
			t.Fatalf("seed %d (rerun with -run TestCrashConsistency -crash.seed=%d): %v", seed, seed, err)
		}
		crashes += n
		direct += d
	}
	t.Logf("%d seeds, %d simulated crashes mid-operation, %d of %d rounds writing with direct I/O", hi-lo, crashes, direct, 3*(hi-lo))
	if hi-lo >= 100 && (direct == 0 || direct == int(3*(hi-lo))) {
		t.Fatalf("%d of %d rounds used direct I/O: one write path went untested", direct, 3*(hi-lo))
	}
}

func crashSeedRun(seed int64) (midOp, directRounds int, err error) {
	rng := rand.New(rand.NewSource(seed))
	fs := crashfs.New()
	fs.SetDirectIO(true)
	opts := memOpts(fs)
	opts.SegmentSize = 1 << 10 * int64(1+rng.Intn(4))
	opts.TrailingEntries = uint64(rng.Intn(5))
	opts.KeepSnapshots = 1 + rng.Intn(3)
	if rng.Intn(3) == 0 {
		opts.Knobs.(*storeknobs.Knobs).Prealloc = wal.PreallocOff // segments created directly, grown by appends
	}
	acked := &model{}
	candidates := []*model{acked}
	g := &gen{rng: rng, bigData: true}
	var history []string
	var inc uint64
	for round := 0; round < 3; round++ {
		// Both write paths, switching between restarts: O_DIRECT|O_DSYNC
		// blocks (crashfs: durable when the write returns) and buffered
		// writes with fdatasync.
		opts.NoDirectIO = rng.Intn(2) == 0
		// Sometimes the crash lands inside Open itself (it may write: the
		// version file, the first segment, a snapshot reference).
		if round > 0 && rng.Intn(4) == 0 {
			fs.SetCrashAfter(rng.Int63n(6), rng)
			if s, err := Open("/c", opts); err == nil {
				s.Close()
			} else if !fs.Crashed() {
				return midOp, directRounds, fmt.Errorf("round %d: open: %v", round, err)
			}
			fs.SetCrashAfter(-1, nil)
			fs.Crash(rng)
			history = append(history, "crash during open")
		}
		s, err := Open("/c", opts)
		if err != nil {
			return midOp, directRounds, fmt.Errorf("round %d: recovery failed: %v\nhistory: %s\nwal:%s", round, err, strings.Join(history, "; "), dumpWAL(fs, "/c/wal"))
		}
		// The recovered state must be one the crash could have left.
		var matched *model
		var diffs []string
		for k, c := range candidates {
			if err := diff(s, c, true); err != nil {
				diffs = append(diffs, fmt.Sprintf("candidate %d: %v", k, err))
				continue
			}
			matched = c
			break
		}
		if matched == nil {
			s.Close()
			return midOp, directRounds, fmt.Errorf("round %d: recovered state matches no allowed state:\n  %s\nhistory: %s\nwal:%s",
				round, strings.Join(diffs, "\n  "), strings.Join(history, "; "), dumpWAL(fs, "/c/wal"))
		}
		hs, _, _ := s.InitialState()
		if hs.Term < acked.hs.Term || hs.Commit < acked.hs.Commit {
			s.Close()
			return midOp, directRounds, fmt.Errorf("round %d: hard state went backwards: %+v after acknowledged %+v", round, hs, acked.hs)
		}
		// A crash loses nothing acknowledged, so the store keeps its
		// incarnation (a new one would demote a voter for nothing).
		if round == 0 {
			inc = s.Incarnation()
		} else if s.Incarnation() != inc {
			s.Close()
			return midOp, directRounds, fmt.Errorf("round %d: incarnation %x after a crash, was %x", round, s.Incarnation(), inc)
		}
		acked = matched
		candidates = []*model{acked}
		if s.Stats().Direct {
			directRounds++
		}
		if s.Stats().Direct == opts.NoDirectIO {
			s.Close()
			return midOp, directRounds, fmt.Errorf("round %d: NoDirectIO=%v but the WAL writes with direct I/O=%v", round, opts.NoDirectIO, s.Stats().Direct)
		}

		fs.SetCrashAfter(rng.Int63n(250), rng)
		for i := 0; i < 80; i++ {
			o := g.next(acked)
			states := o.states(acked, opts.TrailingEntries)
			history = append(history, o.String())
			if err := o.apply(s); err != nil {
				if !fs.Crashed() || !errors.Is(err, crashfs.ErrCrashed) {
					return midOp, directRounds, fmt.Errorf("round %d op %d %v: unexpected error: %v", round, i, o, err)
				}
				candidates = states
				midOp++
				break
			}
			acked = states[len(states)-1]
			candidates = []*model{acked}
		}
		fs.SetCrashAfter(-1, nil)
		fs.Crash(rng)
		history = append(history, "crash")
	}
	return midOp, directRounds, nil
}

// flagSet reports whether the named flag was given on the command line.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
