package raft

import (
	"errors"
	"testing"
)

// ReadIndex and lease reads (thesis §6.4).

func TestReadIndexWaitsForHeartbeatQuorum(t *testing.T) {
	c, d := electLeader(t, nil)
	// Commit the no-op first (§6.4 step 1).
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	if err := c.ReadIndex([]byte("r1")); err != nil {
		t.Fatal(err)
	}
	var hb []Message
	for c.HasReady() {
		rd := c.Ready()
		if len(rd.ReadStates) > 0 {
			t.Fatal("read answered before the heartbeat round")
		}
		hb = append(hb, only(rd.Messages, MsgHeartbeat)...)
		_ = d.Append(rd.Entries)
		c.Advance()
	}
	if len(hb) == 0 {
		t.Fatal("no heartbeat round")
	}
	c.Step(Message{Type: MsgHeartbeatResp, From: hb[0].To, To: 1, Term: c.term, Seq: hb[0].Seq})
	rd := c.Ready()
	if len(rd.ReadStates) != 1 || string(rd.ReadStates[0].RequestCtx) != "r1" || rd.ReadStates[0].Index != c.log.committed {
		t.Fatalf("read states %v", rd.ReadStates)
	}
	c.Advance()
}

func TestFollowerReadIndexIsForwardedToLeader(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	if err := f.ReadIndex([]byte("x")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("no leader: %v", err)
	}
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2})
	persistAll(f, d)
	_ = f.ReadIndex([]byte("x"))
	if fw := only(persistAll(f, d), MsgReadIndex); len(fw) != 1 || fw[0].To != 1 {
		t.Fatalf("forward: %v", fw)
	}
	f.Step(Message{Type: MsgReadIndexResp, From: 1, To: 2, Term: 2, Index: 7, Context: []byte("x")})
	rd := f.Ready()
	if len(rd.ReadStates) != 1 || rd.ReadStates[0].Index != 7 {
		t.Fatalf("read states %v", rd.ReadStates)
	}
	f.Advance()
}

func TestLeaseReadRequiresCheckQuorumAndSkipsHeartbeatRound(t *testing.T) {
	if _, err := New(Config{ID: 1, Storage: NewMemoryStorage(), ElectionTick: 10, HeartbeatTick: 1, ReadOnlyOption: ReadOnlyLeaseBased}); err == nil {
		t.Fatal("lease reads without check-quorum must be refused")
	}
	c, d := electLeader(t, func(cfg *Config) { cfg.CheckQuorum = true; cfg.ReadOnlyOption = ReadOnlyLeaseBased })
	ackAll(c, d)
	_ = c.ReadIndex([]byte("r"))
	rd := c.Ready()
	if len(rd.ReadStates) != 1 || len(only(rd.Messages, MsgHeartbeat)) != 0 {
		t.Fatalf("lease read: states %v heartbeats %d", rd.ReadStates, len(only(rd.Messages, MsgHeartbeat)))
	}
	c.Advance()
}

func TestReadIndexWaitsForFirstCommitOfTerm(t *testing.T) {
	c, d := electLeader(t, nil)
	_ = c.ReadIndex([]byte("early"))
	if hb := only(persistAll(c, d), MsgHeartbeat); len(hb) != 0 {
		t.Fatal("read round started before the no-op committed")
	}
	ackAll(c, d) // commits the no-op; the read round starts now
	if len(c.reads.pending) != 1 {
		t.Fatalf("pending reads %d", len(c.reads.pending))
	}
}
