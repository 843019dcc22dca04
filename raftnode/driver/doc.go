// Package driver is a consensus node's engine. It owns the pure Raft core
// (raftnode/raft) and drives it: the Ready loop, persistence, apply,
// proposals, read waiters, membership, leadership transfer and snapshot
// waiters, leader tracking, and what the loop does when storage fails or
// was lost. It speaks in domain terms only: no wire types, no
// capabilities. The services (raftnode/services) are its callers; the
// composition root (raftnode) builds it and the pieces it is given.
//
// # What it is given
//
// Everything outside the engine comes in through Config, as interfaces
// the driver declares:
//
//   - Storage, the write-ahead log and snapshot store (satisfied by
//     *storage.Store);
//   - statemachine.Machine, the replicated state machine: entries in,
//     results out, snapshots as streams; the driver knows nothing else of
//     it (the results are handed, untouched, to whoever waits for them
//     and to Config.OnApplied);
//   - Clock, its only source of time (timers, the ticker, deadlines),
//     and Go, which starts its background work (writing a snapshot);
//     nil means the real clock and a goroutine. With Stepped, Start
//     spawns no loop and the caller runs it one turn at a time (Step):
//     with a virtual clock, that is how a simulator runs the real
//     driver deterministically from a seed;
//   - Transport, which sends the core's messages to peers (Send), streams
//     the stored snapshots the core's snapshot messages name beside them,
//     and learns the peers' addresses (SetPeer, RemovePeer). What peers
//     send comes back in through Deliver and ReceiveSnapshot, the ends of
//     snapshot transfers through ReportSnapshot, and lost peers through
//     ReportUnreachable and ReportNotMember, which the transport and its
//     handlers call.
//
// # The loop
//
// One goroutine (run, in loop.go; the caller of Step for a stepped
// driver) owns the core. Everything else talks to
// it through one queue: peers' messages, proposals, read requests and
// tasks. Each turn it takes the whole queue, steps it into the core,
// proposes every pending command with one ProposeBatch and asks for one
// read index for every pending read, then handles one Ready:
//
//  1. the leader's appends go out before its own write (thesis §10.2.1);
//  2. committed entries are applied and their waiters answered (they are
//     durable on a quorum already);
//  3. reads whose confirmed index has been applied are released: a read
//     index depends on nothing this Ready writes, so a read does not
//     wait for other clients' fsync;
//  4. entries and hard state are written with one fsync (a commit-only
//     change waits for the next write);
//  5. acknowledgements and votes go out only after that write;
//  6. reads whose index has been applied (a follower applies after the
//     write) are released.
//
// Proposals are matched to their entries by the index and term the core
// appended them at (any other entry there means a new leader overwrote
// them). Snapshots are copy-on-write views of the state machine streamed
// into a file off the loop inside the driver's own envelope (snapshot.go),
// which also carries the members' addresses.
//
// Snapshots stream beside the core. A leader's core names the snapshot a
// follower needs (a MsgSnap, metadata only); the transport streams that
// file on a connection of its own, reading it once, and the loop reports
// the outcome to the core (ReportSnapshot). The follower's receiver
// (snapshot_receive.go) takes a snapshot only from the leader its core
// follows, in that leader's term, writes it to a temporary file while the
// state machine verifies the same bytes, and hands the core the metadata
// only once the transport checked size and checksum end to end and the
// file is durable; the loop then restores from the file as a stream.
// Neither side holds a snapshot in memory, and the loop does no snapshot
// I/O but that restore.
//
// # API
//
// Lifecycle:
//
//	New(Config) (*Driver, error)   recover (or bootstrap, or force a new cluster) and build the core
//	(*Driver).Start()              start the loop (and elect a lone voter at once)
//	(*Driver).Step() bool          one turn of a stepped driver's loop (Config.Stepped)
//	Close(), Done(), Err()         stop; closed when stopped; why it stopped on its own
//	Stopped() bool, ID() uint64
//	StoppedError() error           the error for requests that find it stopped (wraps ErrStopped)
//
// Peers (called by the transport and its handlers):
//
//	Deliver(msgs, done func(*NotMember, error))   step one send call's messages; done says they were taken
//	ReceiveSnapshot(ctx, SnapshotOffer) (SnapshotSink, error)   take a leader's snapshot, if the core would hear it
//	ReportSnapshot(to, index, err)                 how a snapshot transfer to a follower ended
//	ReportUnreachable(id)                          a peer's connection failed or its queue overflowed
//	ReportNotMember(from, NotMember)               a peer's configuration does not include this node
//
// Writes and reads (the key-value service's path):
//
//	Propose(data, reply func(Result))          propose; reply gets the state machine's result or why not
//	ProposeWait(ctx, data) (statemachine.Result, error)
//	ReadBarrier(reply func(error))             nil once a linearizable read may be served locally
//	ReadIndex(ctx) error                       ReadBarrier, waited for
//
// Leadership:
//
//	Leader() uint64, IsLeader() bool, LeaderChanged() <-chan struct{}, WaitLeader(ctx) (uint64, error)
//
// Operations (the admin service's and the node's):
//
//	ChangeMembership(ctx, raft.ConfChange) error
//	TransferLeadership(ctx, to) error          to 0: the most caught-up voter
//	Snapshot(ctx) (index, error)
//	Members(ctx) (leader, []Member, error)     as of a linearizable read
//	Status(ctx) (Status, error)                the core's status and the driver's counters
//	Configured(ctx) (bool, error)              whether the core holds a configuration
//	Bootstrap(ctx, raft.Snapshot) error        bootstrap a new cluster (peer discovery decided to)
//	WarnLostData(counted, kv...)               say once that this node lost its data
//	TickInterval() time.Duration               the core's clock period
//	ReceiveStats() ReceiveStats                what the snapshot receiver took and refused
//
// Observers (Config): OnApplied sees every result the state machine
// returns; OnLeading runs when this node becomes leader. Both run on the
// loop goroutine and must not block.
//
// Every reply callback is called exactly once, from any goroutine (often
// the loop's), and must not block: it may encode and queue an answer, or
// start a goroutine.
//
// # Errors
//
// The driver's errors are domain errors, which callers test with
// errors.Is and errors.As: ErrNoLeader, ErrNotLeader, ErrDropped (not
// applied, retry), ErrOutcomeUnknown (may or may not be applied), ErrTimeout,
// ErrStopped (wrapped with the reason by StoppedError), ErrRemoved,
// ErrConfNotApplied, ErrChangeInProgress, ErrChangeOutcomeUnknown,
// ErrTransferOutcomeUnknown, and the types *InvalidError
// (a request that names something in the wrong state) and
// *LeaderMovedError (a transfer that another node won). How they reach a
// client is the services' business (one map, in raftnode/services).
//
// # Dependencies
//
// The driver imports the core, the state machine contract, storage (for
// the types of its snapshot files) and the standard library; never
// schema, rpc, capnp, kv, echo or transport (a test checks). It also
// reads raftnode/internal/driverbugs: deliberate bugs, each one flag read
// at its site (injected_bugs.go), that only the whole-node simulator's
// tests switch on, to show that its checkers catch them.
//
// # Failures
//
// A failed write to storage, a snapshot that cannot be installed, or a
// failed read of the log (on which the core panics) stops the driver
// cleanly with a reason (Err, Done): what waits is answered, nothing the
// failed write covered is acknowledged, and nothing is answered from a
// disk the node can no longer trust. Only panics raised inside the core
// are recovered (guardedCore); a panic in the driver's own code is a bug
// and crashes the process. A node that is removed from the cluster stops
// once it has applied everything committed and is still not a member. A
// removal names the storage (incarnation) it removed: a node started
// afresh on an empty disk and added back under the same id replays its
// old removal on its way to its addition, and carries on past it (see
// removalOfEarlierStorage). A node removed while it was away never gets
// that entry: its peers, whose core ignores it as a non-member, say so
// (ReportNotMember), and it stops when their configuration is newer than
// any it applied.
package driver
