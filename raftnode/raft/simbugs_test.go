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

// TestSimCatchesBrokenDefences: each rule of who is heard (admit), the
// snapshot receiver's checksum and the count with the configuration the
// log leads to, broken on purpose, must be caught by the simulation's
// ordinary checkers within a few seeds.
func TestSimCatchesBrokenDefences(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     func() simOptions
		maxSeeds int
	}{
		// A TimeoutNow obeyed from a member that does not lead lets
		// buggy peers depose the leader again and again after healing:
		// the stability check notices.
		{"TimeoutNow from anyone", func() simOptions {
			o := stalePeerOptions(3)
			o.bugs.timeoutNowFromAnyone = true
			return o
		}, 50},
		// A read index taken from a member that does not lead serves
		// reads stale: linearizability fails.
		{"read index from anyone", func() simOptions {
			o := stalePeerOptions(5)
			o.bugs.readIndexFromAnyone = true
			return o
		}, 200},
		// Without the membership filter, the responses and transfer
		// votes of nodes outside the configuration depose the leader.
		{"hearing non-members", func() simOptions {
			o := stalePeerOptions(5)
			o.bugs.admitNonMembers = true
			return o
		}, 50},
		// Without the exception of thesis §4.1, a node added to the
		// cluster never hears the leader its empty configuration does
		// not name: liveness fails.
		{"ignoring leaders outside the configuration", func() simOptions {
			o := defaultSimOptions(5)
			o.bugs.dropUnknownLeaders = true
			return o
		}, 50},
		// A snapshot damaged on the way, handed to the core by a
		// receiver that skips the checksum, makes replicas disagree.
		{"snapshots installed without checksum", func() simOptions {
			o := defaultSimOptions(5)
			o.damageSnapP = 0.5
			o.receiverSkipsChecksum = true
			return o
		}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) { expectSimCatches(t, tc.name, tc.opts(), tc.maxSeeds) })
	}
}

// The stale-peer simulation once found a node two committed membership
// changes behind that counted votes with the configuration in effect
// alone and won with a removed node's vote (n=5,stale-peers,disk-loss,
// seed 7). That schedule depended on how snapshot chunks travelled; since
// snapshots stream beside the core no seed of 4,000 reproduces it, so the
// broken count is shown here directly: with it, the candidate of
// stale_configuration_test.go wins with a majority of the old
// configuration alone.
func TestBrokenStaleConfigurationCountWinsWithTheOldMajority(t *testing.T) {
	c, d := behindByAReplacement(t)
	c.cfg.bugs.staleConfigCounts = true
	c.campaign(campaignElection)
	persistAll(c, d)
	for _, from := range []uint64{1, 3} {
		c.Step(Message{Type: MsgVoteResp, From: from, To: 5, Term: c.term, Granted: true})
	}
	if c.state != StateLeader {
		t.Fatalf("the broken count did not elect with the old majority: %s", c.state)
	}
}
