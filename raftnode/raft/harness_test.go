package raft

import "testing"

// Helpers for the unit tests (election_test.go, replication_test.go,
// ready_test.go, read_test.go, membership_test.go): they drive single
// cores by hand with Step/Tick/Ready/Advance. Tests are named after the
// rules of the paper and thesis they check.

func newTestCore(t testing.TB, id uint64, voters []uint64, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	return newTestCoreConf(t, id, ConfState{Voters: voters}, mutate)
}

// newTestCoreConf is newTestCore bootstrapped with configuration cs.
func newTestCoreConf(t testing.TB, id uint64, cs ConfState, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	d := NewMemoryStorage()
	if err := d.ApplySnapshot(BootstrapSnapshot(cs)); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: id, Storage: d, ElectionTick: 10, HeartbeatTick: 1, Seed: 7}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, d
}

// persistAll handles every pending Ready like a correct driver and
// returns all messages it would send.
func persistAll(c *Core, d *MemoryStorage) []Message {
	var out []Message
	for c.HasReady() {
		rd := c.Ready()
		out = append(out, rd.Messages...)
		if !rd.Snapshot.IsEmpty() {
			_ = d.ApplySnapshot(rd.Snapshot)
		}
		_ = d.Append(rd.Entries)
		if !rd.HardState.IsEmpty() {
			d.SetHardState(rd.HardState)
		}
		out = append(out, rd.MessagesAfterPersist...)
		c.Advance()
	}
	return out
}

func only(msgs []Message, typ MessageType) []Message {
	var out []Message
	for _, m := range msgs {
		if m.Type == typ {
			out = append(out, m)
		}
	}
	return out
}

// electLeader makes a 3-node leader out of core 1 by feeding it votes.
func electLeader(t *testing.T, mutate func(*Config)) (*Core, *MemoryStorage) {
	t.Helper()
	c, d := newTestCore(t, 1, []uint64{1, 2, 3}, mutate)
	c.campaign(campaignElection)
	persistAll(c, d)
	c.Step(Message{Type: MsgVoteResp, From: 2, To: 1, Term: c.term, Granted: true})
	if c.state != StateLeader {
		t.Fatalf("not leader: %s", c.state)
	}
	persistAll(c, d)
	return c, d
}

// ackAll has followers 2 and 3 acknowledge the leader's whole log.
func ackAll(c *Core, d *MemoryStorage) {
	for _, id := range []uint64{2, 3} {
		c.Step(Message{Type: MsgAppResp, From: id, To: 1, Term: c.term, Index: c.log.lastIndex()})
	}
	persistAll(c, d)
}
