package raft

import (
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The checkers must be able to fail. Each test breaks the core on purpose
// and expects the simulator to notice within a bounded number of seeds.

func expectSimCatches(t *testing.T, name string, opts simOptions, maxSeeds int) {
	t.Helper()
	for seed := int64(0); seed < int64(maxSeeds); seed++ {
		if err := runSim(seed, opts); err != nil {
			t.Logf("%s caught at seed %d: %v", name, seed, err)
			return
		}
	}
	t.Fatalf("%s went unnoticed for %d seeds", name, maxSeeds)
}

// TestSimCatchesDoubleVote: granting two votes in one term breaks
// election safety (§5.2), which the simulator must report.
func TestSimCatchesDoubleVote(t *testing.T) {
	opts := defaultSimOptions(3)
	opts.preVote, opts.checkQuorum = false, false
	opts.bugs.doubleVote = true
	expectSimCatches(t, "double vote", opts, 300)
}

// TestSimCatchesCommitByCountingOldTerms: committing an entry of an
// earlier term by counting replicas (the Figure 8 mistake, §5.4.2) can
// lose committed entries; random schedules must expose it. The harmful
// interleaving needs three leaders in a row with crashes in between, so
// this configuration is crash- and partition-heavy with few proposals and
// one entry per message. (TestFigure8CommitRuleOnlyCountsCurrentTerm
// shows the same bug deterministically.)
func TestSimCatchesCommitByCountingOldTerms(t *testing.T) {
	opts := defaultSimOptions(5)
	opts.preVote, opts.checkQuorum = false, false
	opts.clientP, opts.crashP, opts.partitionP = 0.05, 0.08, 0.15
	opts.maxEntries, opts.chaosTicks = 1, 400
	opts.bugs.commitOldTerm = true
	expectSimCatches(t, "commit of old-term entries", opts, 1500)
}

// TestSimCatchesReadsWithoutLeadershipCheck: a leader that answers reads
// without a heartbeat round serves stale data once it has been deposed;
// the linearizability check must notice.
func TestSimCatchesReadsWithoutLeadershipCheck(t *testing.T) {
	opts := defaultSimOptions(3)
	// Without check-quorum a deposed leader keeps its role while cut off,
	// which is when the bug bites.
	opts.preVote, opts.checkQuorum = false, false
	opts.bugs.readWithoutQuorum = true
	expectSimCatches(t, "reads without leadership check", opts, 1000)
}

// TestLinearizabilityCheckerRejectsStaleRead feeds the KV model a history
// with a stale read; porcupine must reject it.
func TestLinearizabilityCheckerRejectsStaleRead(t *testing.T) {
	h := []porcupine.Operation{
		{ClientId: 0, Input: kvInput{Key: "k", Value: "a"}, Call: 1, Return: 2},
		{ClientId: 1, Input: kvInput{Key: "k", Value: "b"}, Call: 3, Return: 4},
		{ClientId: 2, Input: kvInput{Get: true, Key: "k"}, Output: "a", Call: 5, Return: 6},
	}
	if porcupine.CheckOperations(kvModel, h) {
		t.Fatal("a read of an overwritten value after the overwrite returned must not linearize")
	}
	h[2].Output = "b"
	if !porcupine.CheckOperations(kvModel, h) {
		t.Fatal("the fresh read must linearize")
	}
}

// TestSimCatchesCountingAWipedVotersVote: a voter that lost its disk
// forgot its vote and its log; counting its vote as if it remembered them
// lets a candidate that lacks committed entries win, which loses them. The
// simulator must notice a safety violation (not merely a stall) when the
// incarnation check is switched off.
func TestSimCatchesCountingAWipedVotersVote(t *testing.T) {
	opts := defaultSimOptions(3)
	opts.diskLossP = 0.05
	opts.bugs.ignoreIncarnation = true
	for seed := int64(0); seed < 500; seed++ {
		err := runSim(seed, opts)
		if err == nil {
			continue
		}
		if strings.HasPrefix(err.Error(), "liveness") {
			t.Logf("seed %d: %v", seed, err)
			continue
		}
		t.Logf("counting a wiped voter's vote caught at seed %d: %v", seed, err)
		return
	}
	t.Fatal("counting a wiped voter's vote went unnoticed for 500 seeds")
}
