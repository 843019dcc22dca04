package raft

import (
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

// simConfigs are the simulated configurations; seeds is the default
// seed count for each (-seeds overrides it).
var simConfigs = []struct {
	name  string
	seeds int
	opts  func() simOptions
}{
	{"n=3", 500, func() simOptions { return defaultSimOptions(3) }},
	{"n=5", 500, func() simOptions { return defaultSimOptions(5) }},
	{"n=7", 500, func() simOptions { return defaultSimOptions(7) }},
	{"n=3,no-prevote,no-checkquorum", 200, func() simOptions {
		o := defaultSimOptions(3)
		o.preVote, o.checkQuorum = false, false
		return o
	}},
	{"n=5,very-lossy", 200, func() simOptions {
		o := defaultSimOptions(5)
		o.dropP, o.dupP, o.maxDelay = 0.25, 0.1, 8
		o.livenessTick = 300
		return o
	}},
	{"n=5,crashy,no-prevote", 200, func() simOptions {
		o := defaultSimOptions(5)
		o.preVote, o.checkQuorum = false, false
		o.clientP, o.crashP, o.partitionP = 0.05, 0.08, 0.15
		o.maxEntries, o.chaosTicks = 1, 400
		return o
	}},
	{"n=3,lazy-commit", 300, func() simOptions {
		o := defaultSimOptions(3)
		o.lazyCommit = true
		return o
	}},
	{"n=5,lazy-commit,lossy", 200, func() simOptions {
		o := defaultSimOptions(5)
		o.lazyCommit = true
		o.dropP, o.dupP, o.maxDelay = 0.15, 0.05, 5
		return o
	}},
	{"n=5,one-entry-per-message", 200, func() simOptions {
		o := defaultSimOptions(5)
		o.maxEntries = 1
		return o
	}},
	{"n=3,disk-loss", 300, func() simOptions {
		o := defaultSimOptions(3)
		o.diskLossP = 0.02
		o.livenessTick = 400
		return o
	}},
	{"n=5,disk-loss", 300, func() simOptions {
		o := defaultSimOptions(5)
		o.diskLossP = 0.03
		o.livenessTick = 400
		return o
	}},
	{"n=5,disk-loss,lossy,no-prevote", 200, func() simOptions {
		o := defaultSimOptions(5)
		o.diskLossP = 0.03
		o.preVote, o.checkQuorum = false, false
		o.dropP, o.dupP, o.maxDelay = 0.15, 0.05, 5
		o.livenessTick = 500
		return o
	}},
	{"n=5,stale-peers", 200, func() simOptions { return stalePeerOptions(5) }},
	{"n=3,stale-peers,no-prevote", 200, func() simOptions {
		o := stalePeerOptions(3)
		o.preVote, o.checkQuorum = false, false
		// Without leader stickiness a removed node whose log is as up
		// to date as the members' rightly gets their votes (§4.1) and
		// with them a new term: the disruption of §4.2.3, which only
		// check-quorum prevents. Liveness and safety still must hold.
		o.quietTicks = 0
		return o
	}},
	{"n=5,stale-peers,disk-loss", 100, func() simOptions {
		o := stalePeerOptions(5)
		o.diskLossP = 0.03
		o.livenessTick = 400
		return o
	}},
}

// stalePeerOptions adds stale and buggy peers (sim_stale_test.go) to the
// default simulation, with membership changes twice as frequent, so more
// removed nodes live on.
func stalePeerOptions(n int) simOptions {
	o := defaultSimOptions(n)
	o.confChangeP = 0.03
	o.zombieP, o.forgeP, o.damageSnapP = 0.7, 0.05, 0.2
	o.quietTicks = 100
	return o
}

// simConfig returns the options of the configuration called name.
func simConfig(name string) simOptions {
	for _, sc := range simConfigs {
		if sc.name == name {
			return sc.opts()
		}
	}
	panic("no simulation configuration " + name)
}

// TestSimulation is the core's main test: whole clusters under faults,
// checked for election safety, log matching, leader completeness, state
// machine safety, linearizability and liveness after healing.
//
// Run more seeds: go test ./raftnode/raft -run TestSimulation -seeds=100000
// Replay one:     go test ./raftnode/raft -run 'TestSimulation/n=5$' -seed=N -v
func TestSimulation(t *testing.T) {
	for _, sc := range simConfigs {
		t.Run(sc.name, func(t *testing.T) {
			opts := sc.opts()
			for _, seed := range simSeeds(sc.seeds) {
				if err := runSim(seed, opts); err != nil {
					t.Fatalf("seed %d: %v\nreplay: go test ./raftnode/raft -run 'TestSimulation/%s$' -seed=%d -v", seed, err, sc.name, seed)
				}
			}
		})
	}
}
