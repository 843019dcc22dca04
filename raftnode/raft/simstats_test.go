package raft

import "testing"

// TestSimulationExercisesFaults guards against a simulator that silently
// stops doing anything: across a few seeds, elections, client operations,
// snapshots and membership changes must all happen.
func TestSimulationExercisesFaults(t *testing.T) {
	var ops, terms, maxApplied, members int
	var snaps uint64
	var joint, demoted, transfers int
	for seed := int64(0); seed < 80; seed++ {
		c := newSimCluster(seed, defaultSimOptions(5))
		if err := c.run(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		ops += len(c.history)
		joint += c.sawJoint
		demoted += c.demoted
		transfers += c.transferVotes
		terms += len(c.leaders)
		maxApplied = max(maxApplied, len(c.applied))
		members = max(members, len(c.nodes))
		for _, n := range c.nodes {
			s, _ := n.disk.Snapshot()
			snaps = max(snaps, s.Meta.Index)
		}
	}
	t.Logf("ops=%d leader-terms=%d max-applied=%d max-nodes=%d max-snapshot=%d joint=%d demoted=%d transfer-votes=%d", ops, terms, maxApplied, members, snaps, joint, demoted, transfers)
	// Transfers: a TimeoutNow is honoured only from the leader of the
	// term, which must still let leaders hand over.
	if ops < 100 || terms < 20 || maxApplied < 40 || members <= 5 || snaps < 20 || joint == 0 || demoted == 0 || transfers < 40 {
		t.Fatalf("simulation too quiet: ops=%d terms=%d applied=%d nodes=%d snap=%d joint=%d demoted=%d transfer-votes=%d", ops, terms, maxApplied, members, snaps, joint, demoted, transfers)
	}
}

// TestSimulationExercisesDiskLoss guards the disk-loss configurations the
// same way: disks must be wiped and damaged, and leaders must restore the
// voters that lost them.
func TestSimulationExercisesDiskLoss(t *testing.T) {
	var wipes, damaged, restores int
	for seed := int64(0); seed < 40; seed++ {
		opts := defaultSimOptions(5)
		opts.diskLossP, opts.livenessTick = 0.03, 400
		c := newSimCluster(seed, opts)
		if err := c.run(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		wipes += c.disk.Wipes
		damaged += c.disk.Damaged
		restores += c.restores
	}
	t.Logf("wipes=%d damaged=%d restores=%d", wipes, damaged, restores)
	if wipes < 10 || damaged < 10 || restores < 10 {
		t.Fatalf("disk loss too rare: wipes=%d damaged=%d restores=%d", wipes, damaged, restores)
	}
}
