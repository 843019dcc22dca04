@0xc8a291f6e76298c7;
# KV: the replicated key-value store's client API.
#
# Every node serves it. A follower hands writes to the leader's KV
# capability itself, so a client connected to any node works, and
# bootstrap.kv().batch(...) is one round trip from the client's side.
#
# Writes are exactly-once: a client opens a session (its id is assigned
# through the log) and numbers its writes. A retried write that was already
# applied returns the result of its first application. Sessions expire by
# log time (the leader's clock as recorded in the log), never by a
# follower's wall clock.
#
# Reads are linearizable by default (ReadIndex: the leader confirms its
# leadership with one heartbeat round, no log write). A serializable read
# is served from the receiving node's state as it is, possibly stale.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "subscription.capnp".Subscription;

interface KV {
  # batch runs many operations in one call. Writes in a batch are applied
  # in list order as one log entry; reads are served after the batch
  # arrived. results[i] answers ops[i].
  batch @0 (req :BatchRequest) -> (results :List(Result));

  # The single operations are a batch of one.
  put @1 (session :UInt64, seq :UInt64, op :PutOp) -> (result :Result);
  get @2 (op :GetOp) -> (result :Result);
  delete @3 (session :UInt64, seq :UInt64, op :DeleteOp) -> (result :Result);
  cas @4 (session :UInt64, seq :UInt64, op :CasOp) -> (result :Result);
  range @5 (op :RangeOp) -> (result :Result);

  # openSession registers a new client session through the log. ttlMillis
  # is how long (in log time) the session survives without a write or a
  # keepAlive.
  openSession @6 () -> (session :UInt64, ttlMillis :UInt64, error :Error);
  # keepAlive refreshes an idle session through the log.
  keepAlive @7 (session :UInt64) -> (error :Error);
  # closeSession forgets a session and its saved results.
  closeSession @8 (session :UInt64) -> (error :Error);

  # restrict derives a narrower KV from this one: every operation through
  # it is confined to keys that start with prefix (when restrictPrefix is
  # set; the empty prefix is every key), and writes are refused when
  # readOnly is set. Restrictions only add up: the result is confined to
  # both this KV's prefix and the new one (a prefix that does not lie
  # within this KV's fails the call with an exception whose text starts
  # "permissionDenied: "; so does one over the key size limit, with
  # tooLarge), and stays read-only if this KV is. The derived KV lives on
  # the same connection.
  #
  # A confined KV answers an operation outside its grant with the error
  # code permissionDenied, whose message names the grant:
  # - put, delete, cas: a key without the prefix, or any write on a
  #   read-only KV. A prefix delete's prefix must start with the grant's
  #   prefix: a wider one is refused, never narrowed (a delete must not
  #   quietly do less than asked).
  # - get: a key without the prefix.
  # - range: a range is a prefix scan, so it is intersected with the
  #   grant. A range over a prefix that lies within the grant's is served
  #   as is. A range over a shorter prefix that the grant's prefix starts
  #   with (the empty prefix, say) is narrowed to the grant's prefix: it
  #   returns the keys it may see, in order, from `after` on, and `more`
  #   and paging behave as for a range over the grant's prefix (a range
  #   starting before the grant starts at its first key; one running past
  #   it stops at its end; nothing past it is ever counted). A range over
  #   a prefix that neither lies within the grant's nor contains it
  #   selects no key the KV may see, and is refused.
  # - batch: a refused read fails alone. A refused write refuses the
  #   whole batch: its result says why, every other op's result says the
  #   batch was refused (permissionDenied), and nothing in it is applied.
  # - openSession, keepAlive, closeSession: refused on a read-only KV
  #   (sessions exist to write), in their error field.
  # - a write answered from its session's saved results (a retried
  #   sequence number) whose saved result names a key outside the grant.
  # The grant is enforced by the node that receives the call, before
  # anything runs or is handed to the leader, so a follower's forwarding
  # never widens it. A KV whose credential was revoked or expired fails
  # every call.
  restrict @9 (prefix :Data, restrictPrefix :Bool, readOnly :Bool) -> (kv :KV);

  # txn runs a transaction (see TxnOp): if every compare holds, the `then`
  # operations run, otherwise the `else` ones, atomically at one point of
  # the log. It is a batch of one operation, like put: a txn may also be
  # an operation of a batch.
  #
  # - A txn that writes (a put or delete in either branch) is a write: it
  #   needs a session and a sequence number, is applied as part of one
  #   log entry, and its compares and reads run when the entry is applied
  #   (linearizable). All its writes share one revision, the store's
  #   revision after the txn (as etcd's); a txn whose branch wrote nothing
  #   leaves the revision as it was. A retried sequence number is answered
  #   from the session's saved result: which branch ran and the revision,
  #   with TxnResult.replayed set and no per-operation results (a
  #   transaction's reads are not kept).
  # - A txn that only compares and reads is a read: it needs no session,
  #   runs on the receiving node at one point of its applied state, after
  #   a read index unless its consistency is serializable.
  #
  # Limits: a txn counts as 1 + its compares + its operations towards a
  # batch's operation limit, and its keys and values towards its byte
  # limit; a txn over them is refused (tooLarge). A key written (put or
  # deleted) twice in one branch is refused (invalidArgument), as are
  # cas and txn operations inside a txn and comparisons the target does
  # not support. A prefix delete writes every key under its prefix: a
  # put or delete of a key under it, or another prefix delete over or
  # under it, in the same branch, is refused too (invalidArgument, etcd's
  # rule), whatever their order. Nothing of a refused txn runs.
  #
  # A restricted KV (see restrict) refuses a txn any of whose compares,
  # gets, puts or deletes names a key outside its grant, or a range over a
  # prefix that neither lies within the grant nor contains it (a range
  # over a wider prefix is narrowed to the grant, as KV.range is); a
  # read-only KV refuses a txn that writes. Nothing of a refused txn runs.
  txn @10 (session :UInt64, seq :UInt64, op :TxnOp) -> (result :Result);

  # Leases. A lease is granted through the log with a TTL; a put (also
  # inside a txn) with PutOp.lease set attaches its key to the lease, and
  # when the lease is revoked or expires every key still attached to it
  # is deleted through the log, all of them at one revision (as a txn
  # deletes them: watchers see the deletions). A key written again
  # without the lease, or deleted, is no longer attached.
  #
  # Lease time is log time, as sessions' is. A lease expires once its
  # deadline (the log time of its grant or last keepalive plus its TTL)
  # has passed: the leader then proposes its expiry, so leases expire
  # even when no write arrives, exactly once, at one point of the log;
  # followers never expire anything on their own clock. After a leader
  # change the new leader waits for a lease's TTL plus an election
  # timeout before it expires it, so clients whose keepalives were lost
  # in the change have time to send them again: a lease may outlive its
  # deadline by that much, never expire before it.
  #
  # A restricted KV (see restrict) grants leases confined to its prefix
  # (a put attaching a key outside it fails with invalidArgument), and
  # keeps alive, revokes, lists and inspects only the leases whose prefix
  # lies within its own (the others are not found, or not listed); a
  # read-only KV refuses leaseGrant, leaseKeepAlive and leaseRevoke
  # (permissionDenied).

  # leaseGrant grants a lease of ttlMillis (within the node's bounds,
  # else invalidArgument; beyond the node's lease count limit, tooLarge)
  # whose keys must start with prefix. On a restricted KV the prefix must
  # lie within the grant's (else permissionDenied); an empty prefix there
  # is the grant's. Its id is the grant's log index. Not idempotent: a
  # lost call's outcome is unknown (outcomeUnknown), and a retry grants
  # another lease.
  leaseGrant @11 (ttlMillis :UInt64, prefix :Data) -> (lease :LeaseStatus, error :Error);
  # leaseKeepAlive refreshes many leases in one call and one log entry:
  # each lease's deadline becomes now (in log time) plus its TTL. A
  # client keeps all its leases alive with one call per interval (a third
  # of the shortest TTL, say). statuses[i] answers leases[i]: found false
  # for a lease unknown, expired or revoked. At most 1024 ids a call.
  # Idempotent: safe to retry. Only leases whose prefix starts with
  # scope (and lies within the KV's grant) are renewed; the others are
  # answered as not found (a follower handing the call to the leader
  # passes its KV's grant here; clients leave it empty).
  leaseKeepAlive @12 (leases :List(UInt64), scope :Data) -> (statuses :List(LeaseStatus), error :Error);
  # leaseRevoke ends a lease now and deletes its keys at one revision,
  # the store's revision after it (revision). An unknown lease, or one
  # outside scope (as for leaseKeepAlive), answers leaseNotFound.
  leaseRevoke @13 (lease :UInt64, scope :Data) -> (revision :UInt64, error :Error);
  # leaseTimeToLive returns a lease's state with its number of keys,
  # read from the receiving node's applied state (serializable); an
  # unknown lease answers leaseNotFound.
  leaseTimeToLive @14 (lease :UInt64) -> (lease :LeaseStatus, error :Error);
  # leaseList pages through the leases in id order, after the id `after`,
  # at most limit of them (0 or above 1000: 1000), from the receiving
  # node's applied state (serializable); more says another page follows.
  # Their keys are not counted (keys is -1).
  leaseList @15 (after :UInt64, limit :UInt32) -> (leases :List(LeaseStatus), more :Bool, error :Error);

  # watch delivers the changes to the keys req selects (a prefix, or one
  # key) to watcher, from req.fromRevision on, until the handle is
  # cancelled or released, the watcher's client disconnects, or the node
  # ends the watch (Watcher.closed says why).
  #
  # - Any node serves watches, from its own applied state; a follower's
  #   watch may lag the leader's by the replication delay, never more.
  # - Events arrive exactly once, in revision order (a transaction's
  #   events share its revision, in the order it made them), batched into
  #   Watcher.events calls, one call in flight at a time. Each call states
  #   the revision it brings the watcher up to: every change at or below
  #   it was delivered. A revision's events are never split between calls.
  # - fromRevision 0 starts after the node's current revision; with
  #   req.linearizable, after a read index, so the watch sees every write
  #   acknowledged before the call (fromRevision must then be 0).
  #   startRevision is the first revision the watch delivers.
  # - A fromRevision in the past replays from the node's retained history
  #   (bounded by revisions and bytes: raftnode --history-revisions and
  #   --history-bytes). One older than the oldest retained revision (or
  #   before the snapshot the node restored) fails with error code
  #   compacted and oldestRevision set: re-list (range) and watch from the
  #   list's revision + 1.
  # - Progress: with req.progressMillis above 0, a watcher whose keys see
  #   no change gets an empty events call at most that often, whenever the
  #   node's revision moved on, so it can always resume from a precise
  #   revision.
  # - A slow watcher gets a queue bounded in bytes on the node (8 MiB by
  #   default, plus the largest revision the node has seen: a revision
  #   travels whole, so a larger one still reaches a watcher that keeps
  #   up); a watcher past it is cancelled with a reason
  #   (Watcher.closed). It never slows writes or other watchers.
  # - A restricted KV (see restrict) serves watches within its grant only:
  #   a prefix wider than the grant is narrowed to it, one outside it is
  #   refused (permissionDenied). A watch whose credential is revoked or
  #   expires is closed with the reason.
  # - Errors in the error field: compacted, invalidArgument (a
  #   linearizable watch from a revision), tooLarge (a prefix over the key
  #   size limit), permissionDenied, unavailable/timeout (no read index
  #   for a linearizable start), shuttingDown.
  watch @16 (req :WatchRequest, watcher :Watcher)
      -> (handle :Subscription, startRevision :UInt64, oldestRevision :UInt64, error :Error);
}


struct LeaseStatus {
  id @0 :UInt64;               # the lease's id (its grant's log index)
  found @1 :Bool;              # false: the lease is unknown, expired or revoked; the rest is unset
  ttlMillis @2 :UInt64;        # the TTL it was granted with
  remainingMillis @3 :Int64;   # its deadline minus the log clock as the answering node applied it, or minus
                               # that node's clock when later (leaseTimeToLive, leaseList); <= 0: due
  keys @4 :Int64;              # keys attached (leaseGrant, leaseTimeToLive), -1 when not counted
  prefix @5 :Data;             # the prefix its keys must have (the granting KV's)
}


struct WatchRequest {
  prefix @0 :Data;           # the keys that start with it (empty: every key)
  exact @1 :Bool;            # only the key equal to prefix
  fromRevision @2 :UInt64;   # the first revision to deliver; 0: the next one
  prevValue @3 :Bool;        # fill WatchEvent.prev (the key's state before the change)
  progressMillis @4 :UInt32; # progress notifications at most this often; 0: none
  linearizable @5 :Bool;     # start after a read index (fromRevision 0 only)
}

enum EventType {
  put @0;                    # the key was created or replaced
  delete @1;                 # the key was deleted
}

struct WatchEvent {
  type @0 :EventType;
  kv @1 :KeyValue;           # after the change; a delete has only key and modRevision (its revision)
  prev @2 :KeyValue;         # before the change, when hadPrev (asked with prevValue, and the key existed)
  hadPrev @3 :Bool;
}

interface Watcher {
  # events carries the changes of whole revisions, oldest first, and the
  # revision upTo the watcher is now up to date with (every change to its
  # keys at or below upTo was delivered, in this call or before). An empty
  # list is a progress notification. The node sends the next call only
  # after this one returns: what changes meanwhile is batched into it
  # (about 1 MiB of events per call, or a single larger revision). A
  # watcher resumes a watch from upTo + 1.
  events @0 (events :List(WatchEvent), upTo :UInt64) -> ();

  # closed is the node's last call: the watch ended and why (it fell too
  # far behind, its credential was revoked, the node is stopping, or its
  # history no longer holds the revision the watcher needs: code
  # compacted, with oldestRevision). upTo is the revision the watcher was
  # up to date with. It is not sent when the watcher's side cancelled,
  # released the handle or disconnected.
  closed @1 (reason :Text, code :ErrorCode, upTo :UInt64, oldestRevision :UInt64) -> ();
}

struct BatchRequest {
  session @0 :UInt64;      # from openSession; may be 0 when ops holds only reads
  ackedBelow @1 :UInt64;   # the client has seen the results of every seq below this: the cluster may forget them
  ops @2 :List(Op);
  forwarded @3 :Bool;      # set by a follower handing the batch to the leader; never forwarded again
  leaderTime @4 :Int64;    # reserved
}

struct Op {
  seq @0 :UInt64;          # writes: the session's sequence number for this write (> 0, unique per session)
  union {
    put @1 :PutOp;
    get @2 :GetOp;
    delete @3 :DeleteOp;
    cas @4 :CasOp;
    range @5 :RangeOp;
    txn @6 :TxnOp;         # a transaction (see KV.txn)
  }
}

enum Consistency {
  linearizable @0;         # reflects every write acknowledged before the read started
  serializable @1;         # the receiving node's applied state, possibly stale; no leader needed
}

struct PutOp {
  key @0 :Data;
  value @1 :Data;
  lease @2 :UInt64;        # attach the key to this lease (0: none); unknown: leaseNotFound, nothing applied
}

struct GetOp {
  key @0 :Data;
  consistency @1 :Consistency;
}

struct DeleteOp {
  # Deletes key; with prefix set, every key that starts with key (as
  # etcd's DeleteRange with a prefix), all of them at one revision (the
  # store's revision after the delete, as a txn's writes share one): a
  # watcher sees one delete event per key at that revision, and each key
  # leaves its lease. The prefix must not be empty (invalidArgument:
  # deleting every key must not be one typo away). A restricted KV (see
  # KV.restrict) deletes a prefix only within its grant: the prefix must
  # start with the grant's (else permissionDenied); a read-only KV refuses.
  # A prefix that selects no key changes nothing (count 0, the revision
  # as it was). The previous values are not returned: read them first
  # with a range in the same txn, or watch with prevValue.
  #
  # A prefix delete is bounded: if the keys and values under the prefix
  # add up to more than 4 MiB (each key counting 64 bytes more), it is
  # refused (tooLarge) and deletes nothing; delete narrower prefixes. A
  # revision's events reach a watcher whole, in one call, so one
  # revision stays well within a message and a watcher's queue with the
  # previous values; in a txn, the prefix deletes of the branch that
  # runs count together.
  key @0 :Data;
  prefix @1 :Bool;
}

struct CasOp {
  # Writes newValue (or deletes the key when delete is set) only if the
  # key's current state matches expected.
  key @0 :Data;
  expected :union {
    value @1 :Data;        # the current value equals this
    modRevision @2 :UInt64;  # the key was last written at this revision
    absent @3 :Void;       # the key does not exist
  }
  newValue @4 :Data;
  delete @5 :Bool;
}

struct RangeOp {
  # Keys with prefix, in byte order, strictly after `after` (empty: from the
  # first), at most limit of them (0 or above the node's maximum: the
  # node's maximum page). RangeResult.more says whether another page
  # follows; ask for it with after = the last key returned.
  prefix @0 :Data;
  after @1 :Data;
  limit @2 :UInt32;
  consistency @3 :Consistency;
}

struct TxnOp {
  # A transaction: the compares, then the operations of one branch. See
  # KV.txn for how it runs.
  compares @0 :List(Compare);  # all must hold (an empty list always does)
  then @1 :List(Op);           # run when every compare holds
  else @2 :List(Op);           # run otherwise
  # Branch operations are put, delete (also of a prefix), get and range,
  # in list order; a read sees the writes of the operations before it. Their seq and
  # consistency fields are ignored: the txn's own apply.
  consistency @3 :Consistency; # a txn without writes: how it is read
}

struct Compare {
  # Compares a key's state with a given value: key's <target> <operator>
  # the union's value. A key that does not exist has version,
  # createRevision and modRevision 0, and fails every value compare.
  key @0 :Data;
  operator @1 :CompareOperator;
  target :union {
    value @2 :Data;            # byte-wise order for less and greater
    version @3 :UInt64;
    createRevision @4 :UInt64;
    modRevision @5 :UInt64;
    absent @6 :Void;           # equal: the key does not exist; notEqual: it does; less and greater are refused
  }
}

enum CompareOperator {
  equal @0;
  notEqual @1;
  less @2;                     # the key's target is below the given one
  greater @3;                  # the key's target is above the given one
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
  createRevision @2 :UInt64;  # revision of the write that created the key
  modRevision @3 :UInt64;     # revision of the last write to the key
  version @4 :UInt64;         # writes to the key since it was created
  lease @5 :UInt64;           # the lease the key is attached to (0: none; unset in a replayed write's prev)
}

struct Result {
  revision @0 :UInt64;     # the store's revision after a write, or at which a read was served
  union {
    put @1 :PutResult;
    get @2 :GetResult;
    delete @3 :DeleteResult;
    cas @4 :CasResult;
    range @5 :RangeResult;
    error @6 :Error;
    txn @7 :TxnResult;
  }
}

struct TxnResult {
  succeeded @0 :Bool;          # every compare held: `then` ran; else `else` ran
  results @1 :List(Result);    # one per operation of the branch that ran, in order
  replayed @2 :Bool;           # answered from the session's saved result: results is empty
}

struct PutResult {
  prev @0 :KeyValue;       # the key's previous state, when hadPrev
  hadPrev @1 :Bool;
}

struct GetResult {
  found @0 :Bool;
  kv @1 :KeyValue;
}

struct DeleteResult {
  deleted @0 :Bool;        # false: the key did not exist (prefix: no key had it)
  prev @1 :KeyValue;       # the key's previous state, when it existed (never set for a prefix)
  count @2 :UInt64;        # the number of keys deleted (0 or 1 without prefix); kept in the
                           # session's saved result, so a retried prefix delete answers the same
}

struct CasResult {
  succeeded @0 :Bool;
  current @1 :KeyValue;    # when the compare failed: the key's current state (if found)
  found @2 :Bool;          # when the compare failed: whether the key exists
}

struct RangeResult {
  kvs @0 :List(KeyValue);
  more @1 :Bool;           # another page follows the last key returned
}

enum ErrorCode {
  internal @0;             # a bug or a broken node; the message says more
  unavailable @1;          # no leader, or this node cannot reach it: nothing was applied, retry
  outcomeUnknown @2;       # it may or may not have taken effect: retry a write with the same session and seq;
                           # check a membership change (members) or leadership transfer (who leads) before retrying it
  sessionExpired @3;       # the session is unknown or expired: open a new one
  invalidArgument @4;      # the operation is malformed (empty key, bad seq); do not retry
  tooLarge @5;             # key, value or batch over the node's limits; do not retry
  staleSequence @6;        # seq is below the session's acknowledged mark and its result was forgotten
  shuttingDown @7;         # the node is stopping: retry on another node
  timeout @8;              # the node gave up waiting (for a leader, a commit or a read index)
  permissionDenied @9;     # outside what the capability grants (a restricted or read-only KV); the message names the grant
  leaseNotFound @10;       # the lease is unknown, expired or revoked: grant a new one
  compacted @11;           # a watch from a revision the node's history no longer holds: re-list and watch from the list's revision + 1
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  leaderHint @2 :UInt64;   # the node id believed to lead, or 0
}
