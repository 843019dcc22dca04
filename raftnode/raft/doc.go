// Package raft is a pure, deterministic implementation of the Raft
// consensus algorithm (Ongaro & Ousterhout 2014; Ongaro's thesis).
//
// The core has no goroutines, clocks, network or disk I/O and no global
// randomness: time is a count of Tick calls, peers' messages arrive through
// Step, and everything the outside world must do comes back as a Ready.
// The same Config (including Seed) and the same calls give the same
// Readys, which is what makes whole-cluster simulation possible.
//
// # Starting
//
// A new cluster: every initial member persists BootstrapSnapshot(cs) into
// its storage, then calls New; or it calls New over empty storage and
// later Bootstrap(snapshot), which hands the snapshot back in a Ready (for
// a driver that first asks its peers whether a cluster exists). cs should
// record every voter's storage incarnation (see below). A restarted node
// calls New with the same storage; its application restores state from
// Storage.Snapshot(), and the committed entries after the snapshot are
// delivered again in CommittedEntries (set Config.Applied if the
// application keeps its own state durable beyond the snapshot). A node
// joining an existing cluster starts with empty storage and is added by a
// ConfChange on the leader; it learns the membership from the snapshot or
// entries the leader sends it.
//
// # The loop
//
// One goroutine owns the *Core and repeats:
//
//  1. Feed input: call Tick every tick interval; Step for every message
//     received from a peer; Propose / ProposeBatch / ProposeConfChange /
//     ReadIndex / TransferLeadership on client requests; ReportUnreachable
//     when the transport loses a peer; ReportSnapshot when a snapshot
//     transfer ends (see "Snapshots"). Drain as much pending input as is
//     available before step 2: one Ready is one batch and one fsync.
//  2. If HasReady, take rd := Ready(). Then, in this order:
//     a. Send rd.Messages. These are the leader's AppendEntries,
//     heartbeats, snapshot requests (MsgSnap), TimeoutNow and ReadIndex answers,
//     and any node's heartbeat answers and ReadIndex requests, only
//     when the sender's term and vote are already durable. They may
//     be sent before or while the entries are written (thesis
//     §10.2.1): the leader counts itself toward a commit only after
//     Advance reports its own write done, and the others promise
//     nothing about the sender's log.
//     b. Persist, all before any of step c: rd.Snapshot if not empty
//     (it replaces the log), then rd.Entries (appending; an entry at
//     an existing index replaces that entry and all after it), then
//     rd.HardState if not empty. fsync if rd.MustSync.
//     c. Only now send rd.MessagesAfterPersist: votes, vote grants,
//     append acknowledgements and anything sent while term or vote was
//     changing. Each promises the sender's disk holds what it
//     acknowledges; sending one earlier breaks Raft's safety.
//     d. If rd.Snapshot is not empty, restore the application from it
//     (from the data the driver received with it; see "Snapshots").
//     Apply rd.CommittedEntries in order. They are already durable, so
//     this may run in parallel with b. Entries of type
//     EntryConfChange are applied by the core itself during Advance;
//     the application may decode them (UnmarshalConfChange) to act on
//     Context, e.g. dial a new member.
//     e. For each rd.ReadStates entry, serve that read once the
//     application has applied through its Index. A read index depends
//     on nothing this Ready persists: a read may be served before b
//     (a leader that applies before b serves its reads at once).
//  3. Call Advance. The storage must now reflect rd (Storage is read
//     back by the core). Do not call Ready again before Advance; that
//     panics. Step, Tick and proposals may be called between Ready and
//     Advance; their effects appear in the next Ready.
//
// A crash at any point is safe as long as nothing from
// MessagesAfterPersist left before the write it depends on completed.
// After a restart the core continues from what storage holds.
//
// # Storage errors
//
// Storage may return ErrCompacted, ErrUnavailable and (from Snapshot)
// ErrSnapshotTemporarilyUnavailable; the core handles those. Any other
// error means the node's disk can no longer be trusted and the core
// panics: a node that cannot read its own log must stop rather than vote
// or acknowledge from a partial view.
//
// # Snapshots
//
// The application snapshots on its own schedule: at an applied index i it
// stores the state with the ConfState returned by ConfState() (call it
// after Advance so it matches i) and compacts the log up to i (for
// MemoryStorage: CreateSnapshot then Compact). Keep some entries before i
// so slightly lagging followers can catch up without a snapshot.
//
// A snapshot's data never passes through the core; only its metadata
// does, and the transfer runs beside the core, in the style of
// etcd-io/raft's ReportSnapshot:
//
//  1. The leader needs to send a follower entries it has compacted: it
//     puts the follower in StateSnapshot and emits a MsgSnap naming its
//     newest snapshot (Storage.Snapshot's Meta), metadata only.
//  2. The leader's driver streams that snapshot's data to the follower's
//     driver, each byte read from disk once, with flow control, on a
//     stream of its own so appends and heartbeats to others never wait
//     behind it.
//  3. The follower's driver accepts the stream only from the leader its
//     core follows, in that leader's term. It writes the data to a
//     temporary file, checks it end to end against the leader's checksum,
//     has the application verify it, makes it durable, and only then
//     steps a MsgSnap with the snapshot's metadata into its core. The core
//     installs it by Raft's rules alone (handleSnapshot); the next Ready's
//     Snapshot carries the metadata, which the driver persists (the data
//     is on disk already) before restoring the application from the file.
//     A snapshot that fails a check never reaches the core: the node keeps
//     its log and state and runs on.
//  4. The leader's driver calls ReportSnapshot with how the transfer
//     ended. The leader moves the follower back to probing: after a
//     finished transfer the follower's acknowledgement of the install puts
//     it in StateReplicate; after a failed one the leader tries again
//     once the follower answers a heartbeat.
//
// Every transfer the driver starts must be reported exactly once; a
// report the leader no longer waits for is ignored. Neither side holds a
// whole snapshot in memory, and the loop that owns the core never waits
// for a transfer.
//
// # Messages
//
// Message kinds map one to one onto the wire's RPCs: MsgVote/MsgVoteResp
// (RequestVote, with PreVote and Transfer flags), MsgApp/MsgAppResp
// (AppendEntries; the response carries fast-backtracking hints),
// MsgHeartbeat/MsgHeartbeatResp (AppendEntries with no entries and no log
// check), MsgSnap (InstallSnapshot, metadata only), MsgTimeoutNow,
// and MsgReadIndex/MsgReadIndexResp (a follower asking the leader for a
// read index). Step ignores malformed or misaddressed messages rather than
// panicking, and messages from senders that may not send them (see "Who
// is heard").
//
// # Who is heard
//
// Authenticated peers can still be stale or buggy, so Step hears a
// message only from whoever may send it (Core.admit has the reasoning).
// Dropping a message never endangers safety, since Raft tolerates any
// message loss; the rules keep every message progress depends on:
//
//   - TimeoutNow and ReadIndex answers: only from the leader this node
//     follows, in its term (ErrNotFromLeader).
//   - AppendEntries, heartbeats and InstallSnapshot: from anyone, as
//     thesis §4.1 requires: a node whose configuration is behind, or a
//     joining node with none, must follow a leader it does not know yet.
//     Below our term they only earn the rejection that carries our term.
//     (A snapshot's data is the driver's, which takes it only from the
//     leader its core follows: see "Snapshots".)
//   - Everything else (votes, pre-votes, responses, read requests): from
//     members of this node's configuration only, except a vote request
//     that may come from a newer configuration that needs our vote
//     (§4.1): its log reaches beyond the entry our configuration comes
//     from and is at least as up to date as ours (ErrNotMember).
//
// Status counts the dropped messages; Step's error names why, so the
// driver can log the sender and the message type.
//
// The seeded simulation checks these rules under membership changes, disk
// loss and stale peers: removed nodes that keep running, and forged
// TimeoutNow and ReadIndex answers from members that do not lead.
//
// # Membership
//
// ProposeConfChange with one change (or ConfChangeTransitionAuto touching
// one voter) makes a single-step change; several changes or an explicit
// joint transition enter joint consensus (§4.3), left automatically or by
// proposing an empty ConfChange. Learners receive the log but never vote;
// promote one with ConfChangeAddVoter once Status shows it caught up. A
// configuration takes effect when its entry is applied, and only one
// change may be pending at a time. A leader removed by a change steps down
// once the change is applied.
//
// Because a configuration takes effect only when applied, a node may hold
// in its log changes the cluster committed that it has not applied yet.
// One change behind is harmless (consecutive configurations overlap);
// two or more behind, a candidate, and the leader it becomes, also count
// votes, commits and read confirmations with the configuration its log's
// last change leads to, until that change is applied (logconf.go). The
// stale-peer simulation found the schedule that needs this: a removed node
// that ran on gave its vote to a candidate two changes behind.
//
// # Storage incarnations
//
// Raft assumes a node never forgets what it persisted. A node whose disk
// is wiped, or whose storage lost or damaged records it may have
// acknowledged, breaks that: it can vote a second time in a term, or be
// counted in a quorum for entries it no longer holds, and acknowledged
// entries are lost (Protocol-Aware Recovery, Alagappan et al., FAST 2018).
// The core therefore treats a voter as the pair (id, incarnation), where
// the incarnation (Config.Incarnation) names the storage: chosen at
// random when it is created, and chosen anew by storage that may have lost
// anything. Every message carries the sender's incarnation. The
// configuration records per member the incarnation it counts
// (ConfState.Incarnations); votes, acknowledgements, check-quorum and
// ReadIndex rounds count only from it, and a node whose own storage is not
// the counted one never campaigns. A wiped node is thus a crashed server
// plus a brand-new one, and Raft's own membership rules keep it safe:
//
//   - A leader that hears a voter answer from another incarnation resets
//     its progress (what it acknowledged is gone) and demotes it to a
//     learner marked AutoPromote, one single-step change.
//   - Once that learner has caught up, the leader promotes it back with
//     its new incarnation (also one change). Learners added with
//     AutoPromote (a new voter joining) are promoted the same way.
//   - A voter's recorded incarnation is never replaced in place.
//
// Safety holds whatever number of nodes lose their storage; the cluster
// stays available while a majority of each configuration's voters keep
// theirs. A member recorded without an incarnation (configurations
// written before incarnations existed) counts any, until a leader records
// the one it hears.
//
// # Reads
//
// ReadIndex(ctx) yields a ReadState{Index, ctx} after the leader has
// committed an entry of its term and confirmed with one heartbeat round
// that it is still leader (thesis §6.4). On a follower, the request is
// forwarded to the leader. Config.ReadOnlyOption = ReadOnlyLeaseBased
// skips the heartbeat round and requires CheckQuorum; it trusts clocks.
//
// # Testing
//
// The package's main test is a deterministic simulation of whole clusters
// (sim_test.go). Seeds are replayable; flags go after the package path:
//
//	go test ./raftnode/raft -run TestSimulation -seeds=100000   # more seeds per configuration
//	go test ./raftnode/raft -run 'TestSimulation/n=5$' -seed=N -v  # replay one failure
//
// TestSimulationOnDurableStorage runs the same simulation over the durable
// store (raftnode/storage) on a crash-injecting file system, with crashes
// inside writes, fsyncs and recovery; it replays the same way
// (-run 'TestSimulationOnDurableStorage/n=3$' -seed=N).
//
// A failing seed prints the exact replay command.
package raft
