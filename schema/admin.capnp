@0xbe2e088fcf68ff64;
# Admin: cluster membership and leadership, and each node's status.
#
# Like KV, any node accepts these calls; membership changes and leadership
# transfers are handed to the leader.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "kv.capnp".Error;

enum Role {
  follower @0;
  candidate @1;
  preCandidate @2;
  leader @3;
  learner @4;               # a non-voting member receiving the log
  stopped @5;               # the node stopped (removed from the cluster, or a fatal disk error)
}

struct NodeStatus {
  id @0 :UInt64;
  address @1 :Text;         # the address the node advertises
  role @2 :Role;
  term @3 :UInt64;
  leader @4 :UInt64;        # the leader's id as this node knows it, or 0
  commit @5 :UInt64;        # commit index
  applied @6 :UInt64;       # applied index
  lastIndex @7 :UInt64;     # last log index
  snapshotIndex @8 :UInt64; # index of the newest snapshot
  clusterId @9 :UInt64;
  version @10 :Text;        # build version of the raftnode binary
  revision @11 :UInt64;     # the key-value store's revision
  stopReason @12 :Text;     # when role is stopped: why
  snapshotsInstalled @13 :UInt64;  # snapshots received from a leader (InstallSnapshot) since the node started
}

struct Member {
  id @0 :UInt64;
  address @1 :Text;
  learner @2 :Bool;
  match @3 :UInt64;         # as the leader sees it: highest index known to be replicated there (0 if unknown)
  promoting @4 :Bool;       # a learner the leader makes a voter by itself once it has caught up: added as a voter, or a voter whose storage was lost
}

interface Admin {
  # members lists the cluster's configuration as of the answering node's
  # applied log (linearizable: served after a read index).
  members @0 () -> (members :List(Member), leader :UInt64, error :Error);
  # addMember adds a node that will start with an empty data directory;
  # learner adds it without a vote (promote it once it caught up).
  addMember @1 (id :UInt64, address :Text, learner :Bool) -> (error :Error);
  # promoteMember turns a learner into a voter.
  promoteMember @2 (id :UInt64) -> (error :Error);
  # removeMember removes a node; a removed node stops.
  #
  # A membership change returns once it is applied. One refused (invalid,
  # another change under way: invalidArgument, unavailable) or overwritten
  # by a new leader (unavailable) was not made; one proposed but not seen
  # applied within the request timeout answers outcomeUnknown: it may
  # still be made, so check members before retrying it.
  removeMember @3 (id :UInt64) -> (error :Error);
  # transferLeadership hands leadership to the given voter (0: the most
  # up-to-date other voter) and returns once it has moved. If leadership
  # has not moved within the request timeout, it answers outcomeUnknown:
  # the transfer may still complete (check who leads before retrying).
  transferLeadership @4 (to :UInt64) -> (error :Error);
  # snapshot makes the answering node snapshot its state now, and returns
  # once it is on disk (or with the writer's error: internal); unavailable
  # if a snapshot is being written already.
  snapshot @5 () -> (index :UInt64, error :Error);

  # createToken mints a token (a sturdy reference: see the token package)
  # for the given role, with optional caveats. Any node mints it with the
  # cluster's current token key (created through the log the first time
  # one is needed) and every node verifies it. ttlMillis 0: no expiry.
  # The token is a secret; id names it for revokeToken.
  createToken @6 (spec :TokenSpec) -> (token :Text, id :Text, error :Error);
  # revokeToken revokes the token with this id and every token derived
  # from it, on every node, through the log: logins with it fail and
  # connections that logged in with it lose what it granted once the
  # revocation is applied on the node they are connected to. expires
  # (unix milliseconds, 0: unknown) lets nodes forget the revocation
  # once the token has expired anyway.
  revokeToken @7 (id :Text, expires :Int64) -> (error :Error);

  # saveSnapshot streams a backup of the answering node's state to sink:
  # a consistent snapshot that covers at least every write committed
  # before the call (the node confirms a read index first, as a
  # linearizable read does, so a follower that lags waits until it has
  # applied them). The node takes a fresh snapshot unless its newest one
  # already covers everything it has applied (nothing changed since), or
  # waits for the one being written. It then calls sink.begin once with
  # the snapshot's description (size and CRC-32C of the data up front),
  # then sink.write with the data in order, with a bounded number of
  # writes in flight (flow control: a slow caller slows the transfer,
  # never the node), and returns the same description once every write
  # returned. The caller checks the size and checksum of what it received
  # against the description before it keeps the data.
  #
  # The node reads the snapshot file once, from disk, holding a few
  # chunks in memory; a newer snapshot may replace the file meanwhile
  # (the open file stays readable until the transfer ends). A sink call
  # that fails, or does not return within the node's snapshot timeout
  # (30 s), ends the transfer: the node answers unavailable (the caller
  # may try again). One backup at a time per node: a second one answers
  # unavailable. Errors: internal (the snapshot could not be taken or
  # read: see the node's log), timeout (no read index within the request
  # timeout), unavailable, shuttingDown.
  saveSnapshot @8 (sink :BackupSink) -> (info :BackupInfo, error :Error);
}

# BackupInfo describes a snapshot sent by Admin.saveSnapshot.
struct BackupInfo {
  clusterId @0 :UInt64;     # the cluster's id (a hash of its name)
  nodeId @1 :UInt64;        # the node that sent it
  index @2 :UInt64;         # the snapshot's last included log index
  term @3 :UInt64;          # the term of that entry
  size @4 :UInt64;          # the data's length in bytes
  checksum @5 :UInt32;      # CRC-32C (Castagnoli) of the data, as the node stored it
  voters @6 :List(UInt64);  # the configuration at index
  learners @7 :List(UInt64);
  version @8 :Text;         # the sending node's build version
  createdMillis @9 :Int64;  # unix milliseconds when the node began sending
}

# BackupSink receives one backup, from the node to the caller of
# Admin.saveSnapshot. Calls arrive in order; an error from any of them
# ends the transfer.
interface BackupSink {
  # begin comes first, once: what follows.
  begin @0 (info :BackupInfo) -> ();
  # write carries the next bytes of the data. The node keeps a few
  # writes in flight and waits for their returns: return once the bytes
  # are taken (written to a file, say).
  write @1 (data :Data) -> ();
}

struct TokenSpec {
  operator @0 :Bool;          # an operator's token (else a client's)
  restrictPrefix @1 :Bool;    # confine kv to prefix
  prefix @2 :Data;
  readOnly @3 :Bool;
  ttlMillis @4 :UInt64;
}
