// Package raftnode is a consensus node: it serves the node's capabilities
// (Node, Echo, and the Raft peer protocol as it lands) over the rpc
// package, and will drive the pure Raft core in raftnode/raft with the
// durable storage in raftnode/storage.
//
// Services live in their own sub-packages (echo today); this package wires
// them into the per-connection bootstrap capability, Node.
package raftnode
