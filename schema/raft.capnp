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
  incarnation @3 :UInt64;
  # The sender's storage incarnation: a random number chosen when its data
  # directory was created, and chosen anew when that storage was lost or
  # damaged. A configuration counts a voter's votes and acknowledgements
  # only from the incarnation it records for it (ConfState.incarnations),
  # so a node that forgot what it acknowledged never counts as if it
  # remembered. 0 means the sender has none.
}

struct MemberIncarnation {
  id @0 :UInt64;
  incarnation @1 :UInt64;
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
  incarnations @5 :List(MemberIncarnation);
  # Per member, the storage incarnation whose votes and acknowledgements
  # count; a member not listed counts any incarnation.
  autoPromote @6 :List(UInt64);
  # Learners the leader promotes to voter, recording the incarnation each
  # answers with, once it has caught up: voters demoted because their
  # storage was lost, and voters added before they had the log.
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
  incarnation @3 :UInt64;    # the voter's storage incarnation (see PeerHeader): a grant counts only from the recorded one
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
  toIncarnation @9 :UInt64;
  # For a heartbeat: the storage incarnation of the follower that
  # leaderCommit is meant for (the one the leader last heard from). A
  # follower with other storage ignores leaderCommit: the leader's
  # knowledge of what it holds was about storage it no longer has.
}

struct AppendResponse {
  term @0 :UInt64;
  success @1 :Bool;
  index @2 :UInt64;          # on success: the highest index known to match the leader; on failure: the rejected prevLogIndex
  lastIndex @3 :UInt64;      # the follower's last log index
  conflictIndex @4 :UInt64;  # on failure: first index of conflictTerm in the follower's log, or lastIndex+1
  conflictTerm @5 :UInt64;   # on failure: term of the follower's entry at prevLogIndex, or 0 if it has none
  seq @6 :UInt64;            # the heartbeat round answered
  incarnation @7 :UInt64;    # the follower's storage incarnation: the leader counts acknowledgements only from the recorded one
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
  checksum @10 :UInt64;
  # CRC-32C (Castagnoli) of the whole snapshot, in every chunk. The
  # follower checks the assembled snapshot against it, and decodes it in
  # full, before it replaces anything: a bad snapshot is refused and the
  # follower keeps its state. 0: none sent (older leaders).
}

struct SnapshotResponse {
  term @0 :UInt64;
  nextOffset @1 :UInt64;     # the offset the follower expects next (lets the leader resume or restart)
  installed @2 :Bool;        # set on the done chunk once the snapshot is durable and applied
  index @3 :UInt64;          # when installed: the highest index now matching the leader (at least lastIncludedIndex)
  incarnation @4 :UInt64;    # the follower's storage incarnation
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
  incarnation @3 :UInt64;    # the leader's storage incarnation
}

interface Discover {
  # What a node with empty storage asks its peers before it bootstraps a
  # new cluster. A new cluster is bootstrapped only when every member
  # listed in --peers answers and none holds a configuration: otherwise
  # the cluster exists, and the asking node (new, or one that lost its
  # disk) waits to be caught up and restored by the leader rather than
  # start a second cluster of the same name that would forget every
  # acknowledged write.
  discover @0 (req :DiscoverRequest) -> (resp :DiscoverResponse);
}

struct DiscoverRequest {
  header @0 :PeerHeader;     # carries the asking node's id and incarnation
}

struct DiscoverResponse {
  incarnation @0 :UInt64;    # the answering node's storage incarnation
  configured @1 :Bool;       # it holds a configuration (bootstrapped, or caught up from a leader)
  term @2 :UInt64;           # its current term
  commit @3 :UInt64;         # its commit index
  voters @4 :List(MemberIncarnation);
  # When configured: its configuration's voters (incoming half) and the
  # incarnation each is counted with (0 if none is recorded).
  bootstrapOnly @5 :Bool;
  # Configured, and nothing applied since the bootstrap snapshot: voters
  # is the new cluster's bootstrap configuration. An initial member it
  # records with its own incarnation bootstraps the same snapshot itself
  # rather than wait for the leader to send it.
}

interface Raft extends(RequestVote, AppendEntries, InstallSnapshot, TimeoutNow, ReadIndex, Discover) {
  # The whole peer protocol on one capability: what Node.raft returns to
  # a member of the cluster (peer authority). Every message must come
  # from a member id; when the credential named one (MemberProof.id), the
  # header's from must be that id.

  # kv and admin are what a member hands its clients' and operators'
  # calls to (forwarding to the leader): unrestricted, because the
  # forwarding node has already confined each call to the caller's grant.
  kv @0 () -> (kv :import "kv.capnp".KV);
  admin @1 () -> (admin :import "admin.capnp".Admin);
}
