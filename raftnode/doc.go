// Package raftnode is a consensus node, put together: it opens the node's
// durable storage (raftnode/storage), builds the replicated key-value
// store (raftnode/kv), the peer transport (raftnode/internal/transport), the
// engine that drives the Raft core (raftnode/driver) and the Cap'n Proto
// services (raftnode/services), wires them to each other, and runs peer
// discovery before a new cluster bootstraps. Node is what cmd/raftnode
// and the tests hold: New, Bootstrap (each connection's Node capability:
// echo, raft, kv, status, admin, info), Close, Done, Err, Status, Leader,
// StepDown, Members, Snapshot, StorageStats.
//
// # The rooms and their arrows
//
//	client -> rpc -> services -> driver -> raft (the pure core)
//	                     |          |-> storage (through driver.Storage)
//	                     |          |-> kv (through statemachine.Machine)
//	                     |          '-> transport (through driver.Transport)
//	                     '-> kv (reads, sessions, token keys), transport (the leader's Raft capability)
//
// The driver (see its package documentation for the Ready loop) knows no
// wire type; the services know the driver only through its API and
// errors. This package is the only one that knows them all: it builds
// them in order (storage, kv, transport, driver, services), hands the
// transport's reports and the peers' messages to the driver (peers.go),
// and the driver's observations of applied entries and of leadership to
// the services.
//
// # Bootstrapping and lost disks
//
// A node whose storage holds no configuration does not bootstrap a
// cluster of several on its own (bootstrap.go): it asks every --peers
// member (Discover). If any holds a configuration the cluster exists and
// the node waits for its leader; only when all answer with empty storage
// do they bootstrap the same configuration, each voter recorded with its
// storage incarnation. A node that lost its disk therefore comes back as
// new storage: the leader demotes it, catches it up and makes it a voter
// again by itself (see "Storage incarnations" in raftnode/raft), and
// every node logs what happened. --force-new-cluster (ForceNewCluster) is
// the operator's way out when a majority lost its data for good.
//
// # Failures
//
// A failed write to storage, a snapshot that cannot be installed, or a
// failed read of the log stops the node cleanly with a reason (Err,
// Done); a node removed from the cluster stops once it knows (see "Failures"
// in raftnode/driver).
package raftnode
