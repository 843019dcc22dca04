package raft

import (
	"fmt"
	"testing"
)

// The Ready contract: what may be sent before persisting, Advance, misuse.

// TestReadyLeaderSendsAppendsBeforePersisting: thesis §10.2.1; the leader's
// AppendEntries may go out with the write, but followers' acks and votes
// wait for persistence.
func TestReadyLeaderSendsAppendsBeforePersisting(t *testing.T) {
	c, d := electLeader(t, nil)
	ackAll(c, d)
	if err := c.Propose([]byte("x")); err != nil {
		t.Fatal(err)
	}
	rd := c.Ready()
	if len(rd.Entries) != 1 || len(only(rd.Messages, MsgApp)) != 2 || len(rd.MessagesAfterPersist) != 0 {
		t.Fatalf("leader ready: entries=%d early=%v late=%v", len(rd.Entries), rd.Messages, rd.MessagesAfterPersist)
	}
	c.Advance()

	f, _ := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2}}})
	rd = f.Ready()
	if len(rd.Messages) != 0 || len(only(rd.MessagesAfterPersist, MsgAppResp)) != 1 {
		t.Fatalf("follower ack must wait for persistence: %v / %v", rd.Messages, rd.MessagesAfterPersist)
	}
}

// A follower whose term and vote are durable answers a heartbeat, and
// forwards a read index request, before it persists the entries that
// arrived with them: neither promises anything about its disk, and the
// leader's read round would otherwise wait for this follower's fsync of
// other clients' writes. Its acknowledgement of the entries still waits.
func TestReadyFollowerAnswersHeartbeatBeforePersisting(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2})
	persistAll(f, d) // term 2 is durable now

	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 2}}})
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2, Seq: 5})
	if err := f.ReadIndex([]byte("r")); err != nil {
		t.Fatal(err)
	}
	rd := f.Ready()
	if len(rd.Entries) != 1 {
		t.Fatalf("entries %v, want the one appended", rd.Entries)
	}
	if hb := only(rd.Messages, MsgHeartbeatResp); len(hb) != 1 || hb[0].Seq != 5 || hb[0].Term != 2 {
		t.Fatalf("heartbeat answer before persisting: %v (late: %v)", rd.Messages, rd.MessagesAfterPersist)
	}
	if len(only(rd.Messages, MsgReadIndex)) != 1 {
		t.Fatalf("read index request before persisting: %v (late: %v)", rd.Messages, rd.MessagesAfterPersist)
	}
	if len(only(rd.Messages, MsgAppResp)) != 0 || len(only(rd.MessagesAfterPersist, MsgAppResp)) != 1 {
		t.Fatalf("the append's ack must wait for persistence: %v / %v", rd.Messages, rd.MessagesAfterPersist)
	}
}

// A heartbeat that moves a follower to a new term is answered only once
// that term is durable: the answer speaks from it.
func TestReadyHeartbeatAnswerInANewTermWaitsForPersisting(t *testing.T) {
	f, _ := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgHeartbeat, From: 1, To: 2, Term: 2, Seq: 1})
	rd := f.Ready()
	if rd.HardState.Term != 2 || !rd.MustSync {
		t.Fatalf("hard state %+v (must sync %v), want term 2 to persist", rd.HardState, rd.MustSync)
	}
	if len(rd.Messages) != 0 || len(only(rd.MessagesAfterPersist, MsgHeartbeatResp)) != 1 {
		t.Fatalf("heartbeat answer in a new term must wait for persistence: %v / %v", rd.Messages, rd.MessagesAfterPersist)
	}
}

// TestLeaderCountsItselfOnlyAfterPersist: a single-node leader commits an
// entry only once Advance confirms it is on its own disk.
func TestLeaderCountsItselfOnlyAfterPersist(t *testing.T) {
	c, d := newTestCore(t, 1, []uint64{1}, nil)
	c.campaign(campaignElection)
	persistAll(c, d)
	_ = c.Propose([]byte("x"))
	rd := c.Ready()
	if c.log.committed >= rd.Entries[len(rd.Entries)-1].Index {
		t.Fatal("committed before persisting")
	}
	_ = d.Append(rd.Entries)
	c.Advance()
	if c.log.committed != rd.Entries[len(rd.Entries)-1].Index {
		t.Fatalf("not committed after persisting: %d", c.log.committed)
	}
}

func TestReadyAdvanceMisuseIsAProgrammerError(t *testing.T) {
	c, _ := newTestCore(t, 1, []uint64{1}, nil)
	mustPanic(t, "Advance without Ready", c.Advance)
	c.campaign(campaignElection)
	c.Ready()
	mustPanic(t, "Ready twice", func() { c.Ready() })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	f()
}

// TestDeterminism: the same seed gives the same run, message for message.
func TestDeterminism(t *testing.T) {
	a, b := newSimCluster(42, defaultSimOptions(5)), newSimCluster(42, defaultSimOptions(5))
	if ea, eb := a.run(), b.run(); fmt.Sprint(ea) != fmt.Sprint(eb) {
		t.Fatalf("%v vs %v", ea, eb)
	}
	if a.msgCount != b.msgCount || len(a.history) != len(b.history) || a.now != b.now {
		t.Fatalf("runs differ: msgs %d/%d ops %d/%d ticks %d/%d", a.msgCount, b.msgCount, len(a.history), len(b.history), a.now, b.now)
	}
}

// TestStepBetweenReadyAndAdvance: entries handed out in a Ready may be
// replaced by a newer leader before Advance; Advance must not mark the
// replacements stable, and the next Ready must carry them.
func TestStepBetweenReadyAndAdvance(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 2, Index: 1, LogTerm: 1,
		Entries: []Entry{{Index: 2, Term: 2, Data: []byte("a")}, {Index: 3, Term: 2, Data: []byte("b")}}})
	rd := f.Ready()
	// A term-3 leader overwrites index 3 before the driver finishes.
	f.Step(Message{Type: MsgApp, From: 3, To: 2, Term: 3, Index: 2, LogTerm: 2,
		Entries: []Entry{{Index: 3, Term: 3, Data: []byte("c")}}})
	_ = d.Append(rd.Entries)
	d.SetHardState(rd.HardState)
	f.Advance()
	persistAll(f, d)
	ents, err := d.Entries(2, 4, 1<<20)
	if err != nil || len(ents) != 2 || string(ents[1].Data) != "c" || ents[1].Term != 3 {
		t.Fatalf("storage after overwrite: %v %v", ents, err)
	}
	if f.log.stableIndex() != 3 {
		t.Fatalf("stable index %d", f.log.stableIndex())
	}
}

// TestRestartWithEntriesButNoHardStateKeepsTermAtLastEntry: a crash after
// persisting entries but before their HardState must not leave the node
// with a term behind its own log.
func TestRestartWithEntriesButNoHardStateKeepsTermAtLastEntry(t *testing.T) {
	f, d := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: 5, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: 5}}})
	rd := f.Ready()
	_ = d.Append(rd.Entries) // crash before SetHardState
	r, err := New(Config{ID: 2, Storage: d, ElectionTick: 10, HeartbeatTick: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r.term != 5 || r.vote != 0 {
		t.Fatalf("restarted at term %d vote %d, want 5/0", r.term, r.vote)
	}
}
