package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// TestMembershipChangesUnderLoad: under a write load, a fourth node joins
// as a learner, catches up and is promoted; then a follower and then the
// leader are removed (each stops by itself). The final two-node
// configuration elects a leader and serves, and every acknowledged write
// survives, applied once.
func TestMembershipChangesUnderLoad(t *testing.T) {
	e := newEnv(t, envConfig{})
	leader := e.waitLeader(e.c.IDs(), 10*time.Second)
	n4, err := e.c.AddNode()
	if err != nil {
		t.Fatal(err)
	}
	addrs := e.c.Addrs()
	w := e.startWrites([]kvClient{e.client(addrs...), e.client(addrs...)}, "members", 4, 5000)
	e.waitAcked(w, 50, 15*time.Second, "writes before the membership changes")

	admin := e.client(addrs[:3]...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := admin.AddMember(ctx, n4.ID, n4.Addr, true); err != nil {
		t.Fatalf("add node %d as a learner: %v", n4.ID, err)
	}
	if err := e.c.StartNode(ctx, n4.ID); err != nil {
		t.Fatal(err)
	}
	target := e.statuses([]uint64{leader})[leader].Commit
	e.waitFor(20*time.Second, "the learner caught up", func() (bool, string) {
		st := e.statuses([]uint64{n4.ID})
		s, ok := st[n4.ID]
		return ok && s.Applied >= target && s.Role == "learner", fmt.Sprintf("want a learner with applied >= %d: %s", target, describe(st))
	})
	if err := admin.PromoteMember(ctx, n4.ID); err != nil {
		t.Fatalf("promote node %d: %v", n4.ID, err)
	}
	e.waitMembers(admin, e.c.IDs())
	e.waitAcked(w, 50, 15*time.Second, "writes with four voters")

	remaining := e.c.IDs()
	for _, step := range []string{"follower", "leader"} {
		cur := e.waitLeader(remaining, 10*time.Second)
		victim := cur
		if step == "follower" {
			victim = e.othersOf(remaining, cur, n4.ID)[0]
		}
		t.Logf("removing %s %d (leader %d)", step, victim, cur)
		if err := admin.RemoveMember(ctx, victim); err != nil {
			// Removing the leader can close the connection before the
			// answer: the outcome is unknown; the configuration says.
			t.Logf("remove %s %d: %v (checking the configuration)", step, victim, err)
		}
		remaining = e.othersOf(remaining, victim)
		e.waitMembers(admin, remaining)
		if !e.stopsWithin(victim, 15*time.Second) {
			st := e.statuses([]uint64{victim})
			t.Errorf("removed node %d still runs 15s after its removal was committed: %s"+
				"(it never applied its own removal: the leader stopped replicating to it first?); killing it",
				victim, describe(st))
			if err := e.c.Kill(victim); err != nil {
				t.Fatal(err)
			}
		}
		e.waitLeader(remaining, 10*time.Second)
		e.waitAcked(w, 50, 15*time.Second, fmt.Sprintf("writes after removing node %d", victim))
	}
	w.stop()
	var restAddrs []string
	for _, id := range remaining {
		restAddrs = append(restAddrs, e.c.Addr(id))
	}
	e.waitConverged(remaining, 15*time.Second)
	e.verifyWrites(e.client(restAddrs...), w, 20*time.Second)
}

// othersOf returns ids without the ones given.
func (e *env) othersOf(ids []uint64, except ...uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		skip := false
		for _, x := range except {
			skip = skip || x == id
		}
		if !skip {
			out = append(out, id)
		}
	}
	return out
}

// waitMembers waits until the cluster's configuration is exactly the
// voters want.
func (e *env) waitMembers(admin kvClient, want []uint64) {
	e.t.Helper()
	sorted := append([]uint64(nil), want...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	e.waitFor(15*time.Second, fmt.Sprintf("members %v, all voters", sorted), func() (bool, string) {
		ctx, cancel := opCtx()
		defer cancel()
		_, ms, err := admin.Members(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(ms) != len(sorted) {
			return false, fmt.Sprintf("members %v", ms)
		}
		for _, id := range sorted {
			if learner, ok := ms[id]; !ok || learner {
				return false, fmt.Sprintf("members %v (id: learner)", ms)
			}
		}
		return true, ""
	})
}

// stopsWithin reports whether node id's process exits by itself within d.
func (e *env) stopsWithin(id uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for e.c.Running(id) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollEvery) // polling a condition with a deadline
	}
	return true
}
