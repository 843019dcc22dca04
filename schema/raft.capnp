@0xfb98d4bae95e0b5f;
# Raft: the peer-to-peer protocol between the nodes of one cluster.
#
# Every request carries a PeerHeader so a node can refuse a message meant
# for another cluster or another node (for example after an address was
# reused). Terms, indexes and node ids are the Raft paper's; the pure core in
# raftnode/raft defines what each field means, and the conversion to and from
# these structs lives at the edge of the node.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

struct PeerHeader {
  clusterId @0 :UInt64;
  from @1 :UInt64;   # sender's node id
  to @2 :UInt64;     # intended receiver's node id
}

enum EntryType {
  normal @0;         # an application command (empty data: the leader's no-op)
  confChange @1;     # an encoded membership change
}

struct Entry {
  index @0 :UInt64;
  term @1 :UInt64;
  type @2 :EntryType;
  data @3 :Data;
}

struct ConfState {
  voters @0 :List(UInt64);
  learners @1 :List(UInt64);
  votersOutgoing @2 :List(UInt64);   # non-empty while a joint configuration is in effect
  learnersNext @3 :List(UInt64);
  autoLeave @4 :Bool;
}

interface RequestVote {
  requestVote @0 (req :VoteRequest) -> (resp :VoteResponse);
}

struct VoteRequest {
  header @0 :PeerHeader;
  term @1 :UInt64;           # for a pre-vote: the term the candidate would campaign in
  candidateId @2 :UInt64;
  lastLogIndex @3 :UInt64;
  lastLogTerm @4 :UInt64;
  preVote @5 :Bool;          # ask whether a vote would be granted, without changing any state
  leaderTransfer @6 :Bool;   # campaign started by TimeoutNow: voters skip leader stickiness
}

struct VoteResponse {
  term @0 :UInt64;
  voteGranted @1 :Bool;
  preVote @2 :Bool;          # echoes the request's flag
}

interface AppendEntries {
  # Calls on one capability arrive in order, so a leader pipelines these on
  # one capability per follower.
  appendEntries @0 (req :AppendRequest) -> (resp :AppendResponse);
}

struct AppendRequest {
  header @0 :PeerHeader;
  term @1 :UInt64;
  leaderId @2 :UInt64;
  prevLogIndex @3 :UInt64;   # index of the entry preceding entries
  prevLogTerm @4 :UInt64;
  entries @5 :List(Entry);
  leaderCommit @6 :UInt64;   # for a heartbeat: capped at what the follower is known to hold
  heartbeat @7 :Bool;        # no entries and no log check: carries leaderCommit and seq only
  seq @8 :UInt64;            # heartbeat round, echoed in the response (ReadIndex confirmation)
}

struct AppendResponse {
  term @0 :UInt64;
  success @1 :Bool;
  index @2 :UInt64;          # on success: the highest index known to match the leader; on failure: the rejected prevLogIndex
  lastIndex @3 :UInt64;      # the follower's last log index
  conflictIndex @4 :UInt64;  # on failure: first index of conflictTerm in the follower's log, or lastIndex+1
  conflictTerm @5 :UInt64;   # on failure: term of the follower's entry at prevLogIndex, or 0 if it has none
  seq @6 :UInt64;            # the heartbeat round answered
}

interface InstallSnapshot {
  # A snapshot is sent in chunks, in order, on one capability. The follower
  # answers each chunk; after the chunk with done set it installs the
  # snapshot and discards any log it covers.
  installSnapshot @0 (req :SnapshotChunk) -> (resp :SnapshotResponse);
}

struct SnapshotChunk {
  header @0 :PeerHeader;
  term @1 :UInt64;
  leaderId @2 :UInt64;
  lastIncludedIndex @3 :UInt64;
  lastIncludedTerm @4 :UInt64;
  confState @5 :ConfState;   # configuration as of lastIncludedIndex
  offset @6 :UInt64;         # byte offset of data within the snapshot
  data @7 :Data;
  done @8 :Bool;             # last chunk
  totalSize @9 :UInt64;      # whole snapshot size in bytes, for progress and preallocation checks
}

struct SnapshotResponse {
  term @0 :UInt64;
  nextOffset @1 :UInt64;     # the offset the follower expects next (lets the leader resume or restart)
  installed @2 :Bool;        # set on the done chunk once the snapshot is durable and applied
  index @3 :UInt64;          # when installed: the highest index now matching the leader (at least lastIncludedIndex)
}

interface TimeoutNow {
  # Leadership transfer: the leader tells a caught-up follower to start an
  # election at once, bypassing its election timer and pre-vote.
  timeoutNow @0 (req :TimeoutNowRequest) -> ();
}

struct TimeoutNowRequest {
  header @0 :PeerHeader;
  term @1 :UInt64;
  leaderId @2 :UInt64;
}

interface ReadIndex {
  # A follower asks the leader for a read index on behalf of its clients:
  # the leader confirms its leadership with a heartbeat round and answers
  # with its commit index; the follower serves the read once it has applied
  # up to that index.
  readIndex @0 (req :ReadIndexRequest) -> (resp :ReadIndexResponse);
}

struct ReadIndexRequest {
  header @0 :PeerHeader;
  context @1 :Data;
  term @2 :UInt64;           # the follower's current term
}

struct ReadIndexResponse {
  term @0 :UInt64;
  index @1 :UInt64;
  context @2 :Data;
}

interface Raft extends(RequestVote, AppendEntries, InstallSnapshot, TimeoutNow, ReadIndex) {
  # The whole peer protocol on one capability: what Node.raft returns.
}
