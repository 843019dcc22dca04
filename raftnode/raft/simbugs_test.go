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

// Who is heard (admit) and snapshot verification: each rule, broken on
// purpose, must be caught by the simulation's ordinary checkers.

// TestSimCatchesTimeoutNowFromAnyone: a TimeoutNow obeyed from a member
// that does not lead makes buggy peers depose the leader again and again
// after healing; the stability check must notice.
func TestSimCatchesTimeoutNowFromAnyone(t *testing.T) {
	opts := stalePeerOptions(3)
	opts.bugs.timeoutNowFromAnyone = true
	expectSimCatches(t, "TimeoutNow from anyone", opts, 50)
}

// TestSimCatchesReadIndexFromAnyone: a read index taken from a member
// that does not lead serves reads stale; linearizability must fail.
func TestSimCatchesReadIndexFromAnyone(t *testing.T) {
	opts := stalePeerOptions(5)
	opts.bugs.readIndexFromAnyone = true
	expectSimCatches(t, "read index from anyone", opts, 200)
}

// TestSimCatchesHearingNonMembers: without the membership filter, the
// responses and transfer votes of nodes outside the configuration depose
// the leader after healing.
func TestSimCatchesHearingNonMembers(t *testing.T) {
	opts := stalePeerOptions(5)
	opts.bugs.admitNonMembers = true
	expectSimCatches(t, "hearing non-members", opts, 50)
}

// TestSimCatchesIgnoringLeadersOutsideTheConfiguration: without the
// exception of thesis §4.1, a node added to the cluster never hears the
// leader, which its own (empty) configuration does not name.
func TestSimCatchesIgnoringLeadersOutsideTheConfiguration(t *testing.T) {
	opts := defaultSimOptions(5)
	opts.bugs.dropUnknownLeaders = true
	expectSimCatches(t, "ignoring leaders outside the configuration", opts, 50)
}

// TestSimCatchesSnapshotsInstalledWithoutChecksum: a snapshot chunk
// damaged on the way, installed unchecked, makes replicas disagree.
func TestSimCatchesSnapshotsInstalledWithoutChecksum(t *testing.T) {
	opts := defaultSimOptions(5)
	opts.damageSnapP = 0.5
	opts.bugs.skipSnapshotChecksum = true
	expectSimCatches(t, "snapshots installed without checksum", opts, 100)
}

// TestSimCatchesCountingWithAStaleConfiguration: a node two committed
// membership changes behind, counting votes with the configuration in
// effect alone, can win with a removed node's vote and lose committed
// entries. This is the rare schedule the stale-peer simulation found
// (seed 7); it stands as a regression seed, and
// stale_configuration_test.go checks the rule directly.
func TestSimCatchesCountingWithAStaleConfiguration(t *testing.T) {
	opts := simConfig("n=5,stale-peers,disk-loss")
	opts.bugs.staleConfigCounts = true
	expectSimCatches(t, "counting with a stale configuration", opts, 10)
}
