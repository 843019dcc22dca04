package driver

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// The leader answers a read index request on its own stream to whichever
// process runs the node by then. An answer owed to a previous run of this
// node (its labels restarted at 1, at an older index) must not release a
// read of this run: that would be a stale linearizable read.
func TestReadIndexAnswerMeantForAnEarlierRunReleasesNoRead(t *testing.T) {
	var inc uint64
	d := newTestDriver(t, func(cfg *Config) {
		inc = cfg.Storage.(*storage.Store).Incarnation()
		boot := BootstrapSnapshot([]raft.MemberIncarnation{{ID: 1, Incarnation: inc}, {ID: 2, Incarnation: 22}, {ID: 3, Incarnation: 33}},
			map[uint64]string{1: "127.0.0.1:1", 2: "127.0.0.1:2", 3: "127.0.0.1:3"})
		cfg.Bootstrap = &boot
		cfg.ElectionTimeout = time.Hour // a follower of node 2 throughout
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deliver := func(m raft.Message) {
		t.Helper()
		m.From, m.To, m.Term, m.Incarnation = 2, 1, 2, 22
		done := make(chan error, 1)
		d.Deliver([]raft.Message{m}, func(_ *NotMember, err error) { done <- err })
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("deliver %s: %v", m.Type, err)
			}
		case <-ctx.Done():
			t.Fatalf("deliver %s: never taken", m.Type)
		}
	}
	settle := func() { // two trips through the loop: what was pushed before is handled
		t.Helper()
		for range 2 {
			if err := runOnLoop(ctx, d.Driver, func() {}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deliver(raft.Message{Type: raft.MsgHeartbeat, ToIncarnation: inc})
	if lead, err := d.WaitLeader(ctx); err != nil || lead != 2 {
		t.Fatalf("leader %d, %v; want 2", lead, err)
	}
	read := make(chan error, 1)
	d.ReadBarrier(func(err error) { read <- err })
	settle() // the read's request went to node 2 (and was lost)
	// Node 2 answers what an earlier run of node 1 asked, labels 1 to 4,
	// at an index this run has applied.
	for label := uint64(1); label <= 4; label++ {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], label)
		deliver(raft.Message{Type: raft.MsgReadIndexResp, Index: 1, Context: c[:]})
	}
	settle()
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("a read index answer meant for an earlier run of this node released a read of this run")
		}
	default: // still waiting for its own answer: right
	}
}
