package raftnode

import (
	"context"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
)

// Hooks for the external tests that play a stale, buggy or forged peer
// (forged_peer_test.go).

// DeliverPeerMessage hands m to n exactly as a peer's stream does with a
// decoded message, and waits until n's core has taken it. It reports
// whether n said the sender is not a member of its configuration.
func DeliverPeerMessage(ctx context.Context, n *Node, m raft.Message) (notMember bool, err error) {
	type taken struct {
		nm  *raft.NotMember
		err error
	}
	ch := make(chan taken, 1)
	peerHandler{n}.Deliver([]raft.Message{m}, func(nm *raft.NotMember, err error) { ch <- taken{nm, err} })
	select {
	case t := <-ch:
		return t.nm != nil, t.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// CoreStatus returns n's Raft core status, read on its loop.
func CoreStatus(ctx context.Context, n *Node) (raft.Status, error) {
	st, err := n.d.Status(ctx)
	return st.Status, err
}

// EmptySnapshotData is a well-formed snapshot of an empty store with
// addrs as its address book.
func EmptySnapshotData(addrs map[uint64]string) []byte {
	return driver.BootstrapSnapshot(nil, addrs).Data
}

// TransportStats returns what n's transport knows of its lanes to peer.
func TransportStats(n *Node, peer uint64) transport.PeerStats { return n.tr.Stats(peer) }

// SnapshotsRefused counts the snapshots n's receiver refused after their
// data arrived (a checksum or the state machine's verification failed).
func SnapshotsRefused(n *Node) uint64 { return n.d.ReceiveStats().Refused }

// SnapshotReceiveWrites returns how many writes of snapshot data n's
// receiver took and the largest, in bytes.
func SnapshotReceiveWrites(n *Node) (writes uint64, largest int64) {
	st := n.d.ReceiveStats()
	return st.Writes, st.LargestWrite
}

// SnapshotSendStatsT is what SnapshotSendStats returns.
type SnapshotSendStatsT = transport.SnapshotStats

// SnapshotSendStats returns the counters of the snapshot transfers n sent.
func SnapshotSendStats(n *Node) transport.SnapshotStats { return n.tr.SnapshotStats() }

// SnapshotBytesRead is how many bytes of snapshot files n's store has read.
func SnapshotBytesRead(n *Node) int64 { return n.store.SnapshotBytesRead() }
