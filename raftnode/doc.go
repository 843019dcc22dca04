// Package raftnode is a consensus node: it drives the pure Raft core
// (raftnode/raft) with durable storage (raftnode/storage), replicates the
// key-value state machine (raftnode/kv), talks to its peers through
// raftnode/transport, and serves clients, peers and operators through one
// bootstrap capability per connection (Node: echo, raft, kv, status,
// admin, info).
//
// # The loop
//
// One goroutine (run, in loop.go) owns the core. Everything else talks to
// it through one queue: peers' messages, proposals, read requests and
// admin tasks. Each turn it takes the whole queue, steps it
// into the core, proposes every pending command with one ProposeBatch and
// asks for one read index for every pending read, then handles one Ready:
//
//  1. the leader's AppendEntries go out before its own write (thesis
//     §10.2.1);
//  2. committed entries are applied and their clients answered (they are
//     durable on a quorum already);
//  3. entries and hard state are written with one fsync (a commit-only
//     change waits for the next write);
//  4. acknowledgements and votes go out only after that write;
//  5. reads whose index has been applied are released.
//
// Peers' messages travel one way (raftnode/transport): the loop hands
// every message the core produces, responses included, to the transport,
// which sends it on a stream to its receiver, on the control lane
// (elections, heartbeats, responses) or the data lane (appends); and it
// steps what peers send in the order they sent it. Nothing pairs a
// response with a request.
//
// Snapshots stream beside the core. A leader's core names the snapshot a
// follower needs (a MsgSnap, metadata only); the transport streams that
// file on a connection of its own, reading it once, and the loop reports
// the outcome to the core. The follower's receiver (snapshot_receive.go)
// takes a snapshot only from the leader its core follows, in that
// leader's term, writes it to a temporary file while the state machine
// verifies the same bytes, and hands the core the metadata only once the
// transport checked size and checksum end to end and the file is durable;
// the loop then restores from the file as a stream. Neither side holds a
// snapshot in memory, and the loop does no snapshot I/O but that restore.
//
// The loop knows the replicated state machine only as a
// statemachine.Machine (Node.sm; the key-value store's Store.Machine): it
// hands each Ready's committed entries to Apply as one batch, answers
// each proposal with the result of the entry at the index and term the
// core appended it at (any other entry there means it was overwritten),
// takes snapshots as copy-on-write views streamed into the snapshot file
// off the loop, inside its own envelope (snapshot.go), and restores and
// verifies snapshots as streams. What a result means is the services'
// business: kvstate.go reads them, and observes applied token keys for
// the first operator token.
//
// # Clients
//
// Any node accepts any call. The leader proposes writes itself; a
// follower hands requests with writes to the leader's KV capability (a
// handed-over request is never handed on again, so nodes that disagree
// about the leader cannot bounce it). Linearizable reads are served by
// the receiving node once its state machine has applied the read index
// the leader confirmed with a heartbeat round; serializable reads at
// once. Writes are exactly-once through kv sessions: a write whose
// outcome is unknown (leader lost, timeout) is retried by the client with
// the same session and sequence number and applied at most once.
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
// failed read of the log (on which the core panics) stops the node
// cleanly with a reason (Err, Done): what waits is answered, nothing the
// failed write covered is acknowledged, and nothing is answered from a
// disk the node can no longer trust. Only panics raised inside the core
// are recovered; a panic in the node's own code is a bug and crashes the
// process. A node that is removed from the cluster stops once it
// has applied everything committed and is still not a member (a node that
// was removed and added back replays its old removal on the way). A node
// removed while it was away never gets that entry: its peers, whose core
// ignores it as a non-member, say so on its stream (schema NotMember),
// and it stops when their configuration is newer than any it applied.
package raftnode
