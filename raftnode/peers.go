package raftnode

import (
	"context"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
)

// peerHandler is what a peer reaches through the Raft capability
// (transport.Handler): its messages and snapshots go to the driver, and
// its question before bootstrapping is answered by discovery (Discover,
// bootstrap.go).
type peerHandler struct{ n *Node }

// Deliver queues msgs for the driver's loop at once, so the sends of one
// stream reach the core in the order they arrived; the loop calls done
// once the core has stepped them, and at the latest when it stops. done
// goes to the driver as it is: transport and driver share raft.NotMember,
// so no wrapper is allocated per send.
func (h peerHandler) Deliver(msgs []raft.Message, done func(*raft.NotMember, error)) {
	h.n.d.Deliver(msgs, done)
}

// ReceiveSnapshot hands the driver the snapshot a peer offers
// (transport.SnapshotReceiver).
func (h peerHandler) ReceiveSnapshot(ctx context.Context, offer transport.SnapshotOffer) (transport.SnapshotSink, error) {
	return h.n.d.ReceiveSnapshot(ctx, driver.SnapshotOffer(offer))
}
