// Package kv is the replicated key-value state machine of a raftnode.
//
// The node's driver applies committed Raft log entries to a Store in log
// order, on every node, through Store.Machine: the statemachine.Machine
// the driver knows (batches of entries in, one *Applied per entry out,
// snapshots and restores as streams). The node's services use the Store
// itself for reads, sessions and token keys. Apply is pure and deterministic (no goroutines,
// clocks, I/O or randomness): nodes applying the same entries from the same
// state reach byte-identical state, which Snapshot.WriteTo makes visible.
//
// # Entries
//
// One log entry is one Command, encoded by the proposing node with
// Command.AppendBinary and decoded by Store.Apply (DecodeCommand). An empty
// entry is a no-op; an entry that does not decode yields Applied.Err on
// every node and changes nothing but the applied index. Entries that are
// not kv commands (configuration changes) are skipped with SetApplied
// (through the Machine: entries without data).
//
// # Keys and revisions
//
// Keys are ordered byte strings in a B-tree (github.com/google/btree). The
// store's revision counts the ops that changed state: a put, the delete of
// an existing key, a successful CAS that wrote or deleted, a prefix delete
// that found keys (one revision for all of them, as a transaction's writes
// share one; bounded by Config.MaxDeleteBytes). Each key keeps
// the revision that created it, the revision of its last write and its
// version (writes since creation).
//
// # Sessions and exactly-once writes
//
// Writes belong to a client session, opened through the log (its id is the
// OpenSession entry's index). Each write carries a seq; the session saves
// the Result of every seq it applied, and a retried seq returns the saved
// Result without applying again. The client acknowledges results with
// Command.AckedBelow: the results below it are forgotten, and a seq below
// the session's forgotten mark answers StaleSequence. When a session holds
// more than MaxSavedResults results, the lowest seq is forgotten the same
// way (its seq and those below become stale).
//
// Time is log time: every Command carries the leader's clock, and the
// store's clock is the largest Time seen, so it never goes back whatever
// the leaders' clocks do. A session without a write or keepalive for longer
// than SessionTTL of log time expires; opening a session when MaxSessions
// are live evicts the least recently active one (ties: lowest id). Expiry
// and eviction use an index ordered by (last activity, id), so they cost
// O(log n) per session, not a scan.
//
// # Token keys and revocations
//
// The store also replicates the state that token authentication needs
// (issue 13): token root keys, added by CmdTokenKey (a key id is never
// replaced: the first key applied with an id stays, so racing proposals
// agree), and revoked token ids, added by CmdRevoke with an expiry in log
// time (revoking again keeps the later expiry; 0 is never). A revocation
// is forgotten once the clock passes its expiry, through an expiry index
// like the sessions'. Neither changes the key revision. RevocationEpoch
// is an atomic counter, moved by every applied revocation and every
// Restore, so services can poll it on every call without the lock and
// only look up Revoked when it moved.
//
// # Leases
//
// Leases (lease.go) are granted through the log (CmdLeaseGrant; the id is
// the entry's index) with a TTL; a put or a transaction's put with a lease
// attaches its key, and revoking or expiring the lease deletes every key
// still attached through the transaction path, at one revision. A lease's
// deadline is log time (grant or last CmdLeaseKeepAlive plus the TTL),
// indexed by deadline (O(log n) per change). Leases never expire as a
// side effect of other entries: the leader proposes CmdLeaseExpire for
// the leases it sees due (DueLeases), and Apply expires only those whose
// deadline the log clock has passed, so a keepalive applied first wins,
// and an expiry proposed twice (by two leaders) ends the lease once.
//
// # Event history
//
// Every change to a key (a put, the delete of an existing key, from any
// command or transaction) is recorded as an Event at its revision while
// the entry is applied, into a history bounded by Config.HistoryRevisions
// and HistoryBytes that watches read with ReadEvents (history.go). It is
// the node's own: it does not travel in snapshots, and a Restore empties
// it, so a read from before the restored revision fails with a
// *CompactedError rather than skip what it cannot see. A delete the store
// makes on its own (a lease's, say) must go through record like the
// others for watches to see it.
//
// # Reads and snapshots
//
// Get and Range may run on any goroutine while Apply runs (a read-write
// mutex; Apply holds it for one entry). Returned key and value slices are
// shared with the store, which never modifies stored bytes: callers must
// treat them as read-only.
//
// Snapshot is O(1): copy-on-write clones of the key, sessions and
// revocations trees (sessions themselves are copied before their first
// change after a snapshot; the token keys slice is replaced, never
// modified). The Snapshot is then serialized by WriteTo on any goroutine
// while Apply continues. The encoding is canonical and checksummed
// (CRC-32C); Restore validates all of it before replacing the state, and
// Machine.Verify validates it the same way without building the state.
package kv
