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
}

struct TokenSpec {
  operator @0 :Bool;          # an operator's token (else a client's)
  restrictPrefix @1 :Bool;    # confine kv to prefix
  prefix @2 :Data;
  readOnly @3 :Bool;
  ttlMillis @4 :UInt64;
}
