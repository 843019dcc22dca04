@0xfb98d4bae95e0b5f;
# Raft: the peer-to-peer protocol between the nodes of one cluster.
#
# Raft messages travel one way: each member opens, per lane, a stream of
# messages to each peer (Raft.open, PeerStream.send) and sends its core's
# messages on it as the core produced them; a response is just a message
# the responder sends on its own stream back. Nothing pairs a response
# with a request. Opening a stream names the sender, the receiver and the
# cluster (PeerHeader), so a node refuses a stream meant for another
# cluster or another node (for example after an address was reused).
# Terms, indexes and node ids are the Raft paper's; the pure core in
# raftnode/raft defines what each field means, and the conversion to and
# from these structs lives in raftnode/internal/transport.

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

enum MessageType {
  # raft.MessageType, in the same order (raftnode/raft/message.go says
  # what each carries).
  vote @0;            # RequestVote (preVote, transfer flags)
  voteResp @1;        # answers vote: granted, preVote echoed
  app @2;             # AppendEntries: index/logTerm precede entries; commit
  appResp @3;         # answers app (and an installed snapshot): index, reject, hints
  heartbeat @4;       # commit (capped at what the follower holds), seq
  heartbeatResp @5;   # answers heartbeat: seq echoed
  snap @6;
  # InstallSnapshot, metadata only. Never sent on a PeerStream (a receiver
  # refuses it there): a snapshot travels on its own stream
  # (Raft.installSnapshot), and the receiver's core is handed the snap
  # once the data is on its disk.
  snapResp @7;        # retired (chunked snapshots): never sent, refused
  timeoutNow @8;      # leadership transfer: campaign at once
  readIndex @9;       # a follower asks the leader for a read index (context)
  readIndexResp @10;  # the read index (index) for context
}

struct SnapshotMeta {
  index @0 :UInt64;          # last index the snapshot covers
  term @1 :UInt64;           # term of that entry
  confState @2 :ConfState;   # configuration as of index (snap only)
}

struct Message {
  # One raft.Message, field for field: the core's messages are delivered
  # as the core sent them, responses included. Which fields mean
  # something depends on type; the others are zero.
  type @0 :MessageType;
  from @1 :UInt64;
  to @2 :UInt64;
  term @3 :UInt64;
  incarnation @4 :UInt64;
  # The sender's storage incarnation (see PeerHeader): a configuration
  # counts a voter's votes and acknowledgements only from the one it
  # records for it.
  toIncarnation @5 :UInt64;
  # heartbeat: the incarnation of the follower's storage that commit is
  # meant for; a follower with other storage ignores commit.

  lastLogIndex @6 :UInt64;   # vote
  lastLogTerm @7 :UInt64;    # vote
  preVote @8 :Bool;          # vote, voteResp
  transfer @9 :Bool;         # vote: campaign started by timeoutNow (voters skip leader stickiness)
  granted @10 :Bool;         # voteResp

  index @11 :UInt64;         # app: previous index; appResp: matched or rejected index; readIndexResp: read index
  logTerm @12 :UInt64;       # app: previous term
  entries @13 :List(Entry);  # app
  commit @14 :UInt64;        # app, heartbeat
  reject @15 :Bool;          # appResp
  conflictIndex @16 :UInt64; # appResp on reject
  conflictTerm @17 :UInt64;  # appResp on reject
  lastIndex @18 :UInt64;     # appResp: the follower's last index
  seq @19 :UInt64;           # heartbeat, heartbeatResp: read round

  snapshot @20 :SnapshotMeta;  # snap (never on a PeerStream)
  offset @21 :UInt64;        # retired (chunked snapshots): unused
  data @22 :Data;            # retired: unused
  done @23 :Bool;            # retired: unused
  checksum @24 :UInt32;      # retired: unused (see SnapshotOffer)

  context @25 :Data;         # readIndex, readIndexResp: the request's identifier
}

enum Lane {
  control @0;
  # Elections and leadership: heartbeats, votes and pre-votes, timeoutNow,
  # readIndex, and every response (appResp included). Small and rare: it
  # must never wait behind the data lane.
  data @1;
  # Replication: app, which can be large and many. (Snapshots have a
  # stream of their own: Raft.installSnapshot.)
}

struct NotMember {
  # The receiver's configuration, as of its applied index, does not
  # include the sender: the receiver's core ignored the sender's messages
  # as a non-member's (raftnode/raft doc.go, "Who is heard").
  index @0 :UInt64;  # the receiver's applied index
  term @1 :UInt64;   # the receiver's term
}

interface PeerStream {
  # One direction of one lane between two members: the sender's core's
  # messages, in the order it sent them. There is no reply per message:
  # a response is a message the responder sends on its own stream to
  # the sender. Raft tolerates loss, duplication and reordering between
  # lanes; within one stream messages arrive in order.

  send @0 (msgs :List(Message)) -> (notMember :NotMember);
  # Delivers msgs (all from the stream's sender, to the receiver) and
  # returns once the receiver's core has taken them, so that the calls
  # a sender keeps in flight bound what it has sent but the receiver has
  # not consumed (flow control, per lane). A message that is malformed,
  # or names another sender or receiver than the stream's header, fails
  # the call and ends the stream. notMember is set when the receiver's
  # core ignored a message because its sender is not a member of the
  # receiver's configuration: a removed node learns so here (it stops
  # when that configuration is newer than any it has applied).
  #
  # Declared as an ordinary call rather than "-> stream": the Go sender
  # keeps its own bounded window of calls in flight per lane (go-capnp's
  # streaming client has no window of its own and starts a goroutine per
  # call), and the result carries notMember.
}

struct SnapshotOffer {
  # What a leader says of a snapshot before streaming its data
  # (Raft.installSnapshot).
  term @0 :UInt64;           # the sender's term, in which it leads
  meta @1 :SnapshotMeta;     # the snapshot: index, term, configuration
  size @2 :UInt64;           # bytes of data the stream carries
  checksum @3 :UInt32;       # CRC-32C (Castagnoli) of all of them
}

interface SnapshotStream {
  # One snapshot's data, from a leader to a follower, beside the Raft
  # messages (Raft.installSnapshot): neither side holds more than a few
  # chunks of it in memory.

  write @0 (data :Data) -> ();
  # The next bytes of the data, in order. Returns once the receiver has
  # written them to its disk: the sender keeps a bounded number of writes
  # in flight (flow control). A write past offer.size, or after the
  # stream failed, fails and ends the stream.

  finish @1 () -> ();
  # All the data was written. The receiver checks it end to end (size and
  # checksum against the offer), has its state machine verify it, makes it
  # durable, and hands its Raft core the snapshot; finish returns once the
  # core has taken it. It fails if any check refused the snapshot: the
  # receiver then keeps its state, and the leader tries again later.
  # Releasing the stream before finish abandons the snapshot.
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

interface Raft extends(Discover) {
  # The whole peer protocol on one capability: what Node.raft returns to
  # a member of the cluster (peer authority). Every message must come
  # from a member id; when the credential named one (MemberProof.id), the
  # header's from must be that id.

  # kv and admin are what a member hands its clients' and operators'
  # calls to (forwarding to the leader): unrestricted, because the
  # forwarding node has already confined each call to the caller's grant.
  kv @0 () -> (kv :import "kv.capnp".KV);
  admin @1 () -> (admin :import "admin.capnp".Admin);

  open @2 (header :PeerHeader, lane :Lane) -> (stream :PeerStream);
  # Opens the caller's stream of Raft messages to this node on one lane.
  # The header must name this cluster and this node, and as sender the
  # member the connection proved to be (if its credential named one);
  # every message on the stream must then be from header.from, to
  # header.to, with header.incarnation. A member keeps one connection per
  # lane to each peer, so that the control lane never queues behind the
  # data lane, in the sender, in the network or in the receiver. A
  # connection holds a few streams at most (a few per lane, across every
  # Raft capability it obtained): one more is refused as overloaded,
  # naming the bound, until the caller releases one.

  installSnapshot @3 (header :PeerHeader, offer :SnapshotOffer) -> (stream :SnapshotStream);
  # Opens the stream of one snapshot's data from the caller to this node,
  # on a connection of its own, so that appends and heartbeats never wait
  # behind it. The header is checked as for open. The offer is refused
  # unless this node's core follows header.from as the leader of
  # offer.term, the snapshot lies beyond what this node has committed, and
  # it is well formed; the leader asks again once this node answers its
  # heartbeats. A new stream replaces one this node is still receiving.
  # A connection holds one snapshot stream at a time: another is refused
  # as overloaded until the caller releases the first.
}
