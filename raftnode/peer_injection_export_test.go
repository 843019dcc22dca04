package raftnode

import (
	"context"

	"github.com/capraft/capraft/raftnode/raft"
)

// Hooks for the external tests that play a stale, buggy or forged peer
// (forged_peer_test.go).

// DeliverPeerMessage hands m to n exactly as the Raft capability does
// with a peer's decoded request, and returns the node's answer.
func DeliverPeerMessage(ctx context.Context, n *Node, m raft.Message) (raft.Message, bool, error) {
	return peerHandler{n}.Handle(ctx, m)
}

// CoreStatus returns n's Raft core status, read on its loop.
func CoreStatus(ctx context.Context, n *Node) (raft.Status, error) {
	var st raft.Status
	err := n.runOnLoop(ctx, func() { st = n.core.Status() })
	return st, err
}

// EmptySnapshotData is a well-formed snapshot of an empty store with
// addrs as its address book.
func EmptySnapshotData(addrs map[uint64]string) []byte { return encodeSnapshot(addrs) }
