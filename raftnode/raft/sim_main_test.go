package raft

import (
	"fmt"
	"testing"
)

// simSeeds returns the seeds to run: one with -seed, else -seeds of them.
func simSeeds(def int) []int64 {
	if *flagSeed >= 0 {
		return []int64{*flagSeed}
	}
	n := def
	if *flagSeeds > 0 {
		n = *flagSeeds
	}
	if testing.Short() {
		n = min(n, 20)
	}
	seeds := make([]int64, n)
	for i := range seeds {
		seeds[i] = int64(i)
	}
	return seeds
}

// TestSimulation is the core's main test: whole clusters under faults,
// checked for election safety, log matching, leader completeness, state
// machine safety, linearizability and liveness after healing.
//
// Run more seeds: go test ./raftnode/raft -run TestSimulation -seeds=100000
// Replay one:     go test ./raftnode/raft -run TestSimulation/n=5 -seed=N -v
func TestSimulation(t *testing.T) {
	for _, n := range []int{3, 5, 7} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			opts := defaultSimOptions(n)
			for _, seed := range simSeeds(500) {
				if err := runSim(seed, opts); err != nil {
					t.Fatalf("seed %d: %v\nreplay: go test ./raftnode/raft -run 'TestSimulation/n=%d$' -seed=%d -v", seed, err, n, seed)
				}
			}
		})
	}
}
