package raftnode

import (
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
)

// Handing a peer's messages from the transport to the driver costs no
// allocation of its own: the transport and the driver share
// raft.NotMember, so the transport's done goes to the driver as it is,
// with no wrapper to convert one NotMember into another on every send.
// (The driver is stopped so that nothing else allocates meanwhile; it
// then answers done at once, as it does a send that arrives while it
// stops.)
func TestPeerDeliveryAllocatesNothingBeyondTheDriver(t *testing.T) {
	n, err := New(Config{ID: 1, Version: "test", Advertise: "127.0.0.1:1", DataDir: t.TempDir(),
		Peers: map[uint64]string{1: "127.0.0.1:1"}, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	msgs := []raft.Message{{Type: raft.MsgHeartbeat, From: 2, To: 1, Term: 1}}
	calls := 0
	done := func(*raft.NotMember, error) { calls++ }
	driver := testing.AllocsPerRun(200, func() { n.d.Deliver(msgs, done) })
	handler := testing.AllocsPerRun(200, func() { peerHandler{n}.Deliver(msgs, done) })
	if handler > driver {
		t.Errorf("peerHandler.Deliver allocates %v per send, the driver's Deliver alone %v: the handler adds %v", handler, driver, handler-driver)
	}
	if calls != 2*201 {
		t.Errorf("done called %d times, want once per send (%d)", calls, 2*201)
	}
	t.Logf("allocations per send: driver %v, through the peer handler %v", driver, handler)
}
