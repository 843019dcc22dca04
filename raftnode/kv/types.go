package kv

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"
)

// Defaults applied by New to the zero fields of Config.
const (
	DefaultSessionTTL      = 60 * time.Second
	DefaultMaxSessions     = 100_000
	DefaultMaxSavedResults = 4096
	DefaultMaxKeySize      = 8 << 10
	DefaultMaxValueSize    = 1 << 20
	DefaultMaxRangeLimit   = 1000
	// DefaultMaxBatchOps and DefaultMaxBatchBytes bound one request. An
	// accepted batch becomes one log entry of at most MaxEntrySize bytes
	// (about 3.05 MiB with these defaults). An AppendEntries carries 1 MiB
	// of entries or one larger entry, so the entry, the request and its
	// forwarded copy (Cap'n Proto adds under 64 bytes an operation) all
	// fit the smallest frame limit raftnode allows (--max-message-size
	// 4 MiB) with room for the envelope, and the default 16 MiB five
	// times over. 3 MiB still holds any single valid operation (a CAS
	// with a maximal key, expected value and new value: 2 MiB + 8 KiB).
	DefaultMaxBatchOps   = 1024
	DefaultMaxBatchBytes = 3 << 20
	// DefaultMaxDeleteBytes bounds a prefix delete (Config.MaxDeleteBytes):
	// half a watcher's default queue (8 MiB), so the one revision holding
	// its events reaches every watcher, previous values included.
	DefaultMaxDeleteBytes = 4 << 20
	// DefaultHistoryRevisions and DefaultHistoryBytes bound the event
	// history (Config.HistoryRevisions), which is held in memory: 16 MiB
	// of accounted bytes (a value counts in the change that wrote it and
	// in the one that replaced it) is about 27,000 revisions of 256-byte
	// values, and the full 100,000 revisions of values under about 40
	// bytes with short keys. A watcher away for longer re-lists.
	DefaultHistoryRevisions = 100_000
	DefaultHistoryBytes     = 16 << 20
)

// Config holds the store's limits. Zero (or negative) values mean the
// defaults above. Every node of a cluster must use the same Config: the
// limits take part in the replicated state transitions (expiry, eviction,
// TooLarge results), so nodes with different limits diverge.
type Config struct {
	// SessionTTL is how long, in log time (see Command.Time), a session
	// survives without a write or a keepalive.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions table; opening one more evicts the
	// least recently active session (ties: the lowest id).
	MaxSessions int
	// MaxSavedResults bounds the saved results per session; beyond it the
	// lowest seq is forgotten (and seqs at or below it become stale).
	MaxSavedResults int
	// MaxKeySize is the largest key accepted, in bytes.
	MaxKeySize int
	// MaxValueSize is the largest value accepted, in bytes.
	MaxValueSize int
	// MaxRangeLimit is the most keys one Range page returns.
	MaxRangeLimit int
	// MaxBatchOps is the most operations one request may carry, and
	// MaxBatchBytes the most bytes of keys and values (keys, values,
	// expected values, range starts) in it. Unlike the limits above they
	// are not part of the state transitions: the node that receives a
	// request checks them before proposing or forwarding anything, and
	// Apply does not. MaxBatchBytes below MaxKeySize+2*MaxValueSize (one
	// maximal CAS) is raised to it.
	MaxBatchOps   int
	MaxBatchBytes int
	// MinLeaseTTL and MaxLeaseTTL bound a lease's TTL; MaxLeases bounds
	// the leases held at once (a grant beyond it is refused, TooLarge).
	MinLeaseTTL, MaxLeaseTTL time.Duration
	MaxLeases                int
	// MaxDeleteBytes bounds what a prefix delete deletes: its keys and
	// values, each key counting 64 bytes more (what its delete event
	// costs). A prefix delete over it is refused (TooLarge) and deletes
	// nothing; so is a txn whose prefix deletes add up to more. A
	// revision's events travel to a watcher whole (a watch never splits
	// a revision), so an unbounded one could exceed every watcher's
	// queue and cancel them again at every resume.
	MaxDeleteBytes int
	// HistoryRevisions and HistoryBytes bound the event history that
	// watches replay from (see ReadEvents): the newest HistoryRevisions
	// revisions, within HistoryBytes of keys and values (the newest
	// revision is always kept). Like MaxBatchOps they are the node's own,
	// not part of the state transitions: nodes may differ.
	HistoryRevisions int
	HistoryBytes     int64
}

func (c Config) withDefaults() Config {
	if c.SessionTTL <= 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxSavedResults <= 0 {
		c.MaxSavedResults = DefaultMaxSavedResults
	}
	if c.MaxKeySize <= 0 {
		c.MaxKeySize = DefaultMaxKeySize
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.MaxRangeLimit <= 0 {
		c.MaxRangeLimit = DefaultMaxRangeLimit
	}
	if c.MaxBatchOps <= 0 {
		c.MaxBatchOps = DefaultMaxBatchOps
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	c.MaxBatchBytes = max(c.MaxBatchBytes, c.MaxKeySize+2*c.MaxValueSize)
	if c.MinLeaseTTL <= 0 {
		c.MinLeaseTTL = DefaultMinLeaseTTL
	}
	if c.MaxLeaseTTL <= 0 {
		c.MaxLeaseTTL = DefaultMaxLeaseTTL
	}
	c.MaxLeaseTTL = max(c.MaxLeaseTTL, c.MinLeaseTTL)
	if c.MaxLeases <= 0 {
		c.MaxLeases = DefaultMaxLeases
	}
	if c.MaxDeleteBytes <= 0 {
		c.MaxDeleteBytes = DefaultMaxDeleteBytes
	}
	if c.HistoryRevisions <= 0 {
		c.HistoryRevisions = DefaultHistoryRevisions
	}
	if c.HistoryBytes <= 0 {
		c.HistoryBytes = DefaultHistoryBytes
	}
	return c
}

// maxOpOverhead bounds the bytes an encoded write op takes besides its key
// and values: the seq, the type, compare and flag bytes, three length
// prefixes, the compare revision and the lease (see AppendBinary), and a
// transaction's three list lengths. A transaction's compares (two bytes,
// two length prefixes, a number) and operations (a byte, three length
// prefixes, a limit) take less each, and count as ops towards
// MaxBatchOps.
const maxOpOverhead = binary.MaxVarintLen64 + 3 + 3*binary.MaxVarintLen64 + binary.MaxVarintLen64 + 3*binary.MaxVarintLen64 + binary.MaxVarintLen64

// maxCommandHeader bounds an encoded Command's bytes before its ops: the
// version and kind bytes, Time, and four uvarints.
const maxCommandHeader = 2 + 8 + 4*binary.MaxVarintLen64

// MaxEntrySize is the largest log entry a request within the limits
// becomes: the Command of MaxBatchOps writes holding MaxBatchBytes of
// keys and values. Transports must carry a message of this size plus
// their own framing (zero fields: defaults).
func (c Config) MaxEntrySize() int {
	c = c.withDefaults()
	return maxCommandHeader + c.MaxBatchOps*maxOpOverhead + c.MaxBatchBytes
}

// CommandKind says what a Command does. The zero value is invalid.
type CommandKind uint8

// Command kinds.
const (
	// CmdBatch applies Ops in order within Session.
	CmdBatch CommandKind = 1 + iota
	// CmdOpenSession opens a session whose id is the entry's log index.
	CmdOpenSession
	// CmdKeepAlive refreshes Session's last activity.
	CmdKeepAlive
	// CmdCloseSession forgets Session and its saved results.
	CmdCloseSession
	// CmdTokenKey adds TokenKey to the token root keys; a key id already
	// present is ignored (the first key with an id stays).
	CmdTokenKey
	// CmdRevoke adds Revoke to the revoked token ids.
	CmdRevoke
	// CmdLeaseGrant grants a lease whose id is the entry's log index,
	// with Lease.TTL and Lease.Prefix.
	CmdLeaseGrant
	// CmdLeaseRevoke revokes the leases Lease.IDs, deleting their keys.
	CmdLeaseRevoke
	// CmdLeaseKeepAlive refreshes the leases Lease.IDs.
	CmdLeaseKeepAlive
	// CmdLeaseExpire expires those of the leases Lease.IDs whose deadline
	// the log clock has passed, deleting their keys (see lease.go).
	CmdLeaseExpire
)

// String returns the kind's name.
func (k CommandKind) String() string {
	switch k {
	case CmdBatch:
		return "Batch"
	case CmdOpenSession:
		return "OpenSession"
	case CmdKeepAlive:
		return "KeepAlive"
	case CmdCloseSession:
		return "CloseSession"
	case CmdTokenKey:
		return "TokenKey"
	case CmdRevoke:
		return "Revoke"
	case CmdLeaseGrant:
		return "LeaseGrant"
	case CmdLeaseRevoke:
		return "LeaseRevoke"
	case CmdLeaseKeepAlive:
		return "LeaseKeepAlive"
	case CmdLeaseExpire:
		return "LeaseExpire"
	}
	return "CommandKind(" + strconv.Itoa(int(k)) + ")"
}

// Command is one replicated log entry's content: the leader encodes it
// with AppendBinary, every node decodes it in Apply.
type Command struct {
	// ID is an opaque id chosen by the proposing node, returned by Apply
	// in Applied.ID. Nothing depends on it any more (the driver matches
	// proposals to entries by log index and term); it stays in the
	// encoding, which entries already in logs use.
	ID uint64
	// Time is the leader's wall clock (unix nanoseconds) at proposal. The
	// store's clock is the maximum Time seen, so it never goes back.
	Time int64
	// Kind says what the command does.
	Kind CommandKind
	// Session is the client's session (CmdBatch, CmdKeepAlive,
	// CmdCloseSession).
	Session uint64
	// AckedBelow (CmdBatch): the client has seen the results of every seq
	// below it, so the store forgets them.
	AckedBelow uint64
	// Ops (CmdBatch) are applied in order.
	Ops []WriteOp
	// TokenKey (CmdTokenKey) is the token root key to add.
	TokenKey TokenKey
	// Revoke (CmdRevoke) is the token revocation to add.
	Revoke Revocation
	// Lease is the lease commands' body.
	Lease LeaseCommand
}

// Limits of the auth state. They take part in the replicated state
// transitions and in Restore's validation, so every node of a cluster
// must use the same values.
const (
	// MinTokenKeySize and MaxTokenKeySize bound a token root key's secret,
	// in bytes.
	MinTokenKeySize = 32
	MaxTokenKeySize = 64
	// MaxTokenKeys is the most token root keys the store holds; a new key
	// beyond it is refused (TooLarge).
	MaxTokenKeys = 1024
	// MaxRevocations is the most revocations the store holds at once
	// (about 16 MiB of memory and 6 MiB of snapshot when full); a new
	// revocation beyond it is refused (TooLarge) until expired ones are
	// forgotten.
	MaxRevocations = 1 << 18
)

// TokenKey is a token root key: the HMAC key that mints and verifies the
// tokens naming its ID.
type TokenKey struct {
	// ID names the key (> 0). Keys are never replaced: the first key
	// applied with an id is the key of that id.
	ID uint64
	// Secret is the key, MinTokenKeySize to MaxTokenKeySize bytes.
	Secret []byte
}

// Revocation revokes a token id (and so every token derived from it).
type Revocation struct {
	// ID is the revoked token's id.
	ID [16]byte
	// Expires (unix nanoseconds, >= 0; 0: never) is when the revocation
	// may be forgotten: once the store's log clock is past it, the token
	// has expired anyway. Revoking an id again keeps the later expiry
	// (never beats any time).
	Expires int64
}

// OpType is a write operation's type. The zero value is invalid.
type OpType uint8

// Write operation types.
const (
	// OpPut writes Value at Key.
	OpPut OpType = 1 + iota
	// OpDelete deletes Key.
	OpDelete
	// OpCAS writes Value at Key (or deletes Key, with DeleteOnSuccess)
	// when the key's current state matches the compare.
	OpCAS
	// OpTxn runs the transaction Txn (see Txn); Key and Value are unused.
	OpTxn
)

// String returns the type's name.
func (t OpType) String() string {
	switch t {
	case OpPut:
		return "Put"
	case OpDelete:
		return "Delete"
	case OpCAS:
		return "CAS"
	case OpTxn:
		return "Txn"
	}
	return "OpType(" + strconv.Itoa(int(t)) + ")"
}

// CompareKind is an OpCAS compare. The zero value is invalid.
type CompareKind uint8

// Compare kinds.
const (
	// CompareValue matches when the key exists and its value equals
	// WriteOp.CompareValue.
	CompareValue CompareKind = 1 + iota
	// CompareModRevision matches when the key's ModRevision equals
	// WriteOp.CompareRevision; an absent key has ModRevision 0.
	CompareModRevision
	// CompareAbsent matches when the key does not exist.
	CompareAbsent
)

// String returns the compare's name.
func (c CompareKind) String() string {
	switch c {
	case CompareValue:
		return "Value"
	case CompareModRevision:
		return "ModRevision"
	case CompareAbsent:
		return "Absent"
	}
	return "CompareKind(" + strconv.Itoa(int(c)) + ")"
}

// WriteOp is one write of a CmdBatch.
type WriteOp struct {
	// Seq numbers the write within its session (> 0). A seq is applied at
	// most once; a retry returns the saved result.
	Seq uint64
	// Type is the operation.
	Type OpType
	// Key is the key written (non-empty, at most MaxKeySize).
	Key []byte
	// Value is the value written by OpPut and OpCAS (at most MaxValueSize).
	Value []byte
	// Compare is the OpCAS compare.
	Compare CompareKind
	// CompareValue is the value expected by CompareValue.
	CompareValue []byte
	// CompareRevision is the ModRevision expected by CompareModRevision.
	CompareRevision uint64
	// DeleteOnSuccess makes a matching OpCAS delete the key instead of
	// writing Value.
	DeleteOnSuccess bool
	// Prefix makes an OpDelete delete every key that starts with Key
	// (non-empty), all at one revision; see Result.Deleted.
	Prefix bool
	// Txn is an OpTxn's transaction.
	Txn *Txn
	// Lease (OpPut, OpCAS writing a value) attaches the key to a lease
	// (0: none); an unknown lease fails the op with LeaseNotFound, a key
	// outside the lease's prefix with InvalidArgument.
	Lease uint64
}

// KeyValue is a key's state. Its slices are shared with the store and must
// be treated as read-only.
type KeyValue struct {
	Key   []byte
	Value []byte
	// CreateRevision is the revision of the write that created the key.
	CreateRevision uint64
	// ModRevision is the revision of the key's last write.
	ModRevision uint64
	// Version counts the writes to the key since it was created (1 after
	// the creating write).
	Version uint64
	// Lease is the lease the key is attached to (0: none). Results saved
	// with a session do not keep it in Prev.
	Lease uint64
}

// Code is a write result's outcome.
type Code uint8

// Result codes.
const (
	// OK: the operation was applied (a CAS whose compare failed is OK too,
	// with Succeeded false).
	OK Code = iota
	// SessionExpired: the session is unknown or expired; nothing applied.
	SessionExpired
	// StaleSequence: the seq is below the session's forgotten mark (acked
	// through AckedBelow, or evicted by MaxSavedResults); nothing applied.
	StaleSequence
	// InvalidArgument: malformed op (seq 0, empty key, unknown type) or
	// auth command (token key id 0 or secret size, negative expiry).
	InvalidArgument
	// TooLarge: the key or a value is over the store's limits, a prefix
	// delete over MaxDeleteBytes, or the token keys or revocations are at
	// theirs.
	TooLarge
	// Internal: a bug.
	Internal
	// LeaseNotFound: the lease named is unknown, expired or revoked;
	// nothing applied.
	LeaseNotFound
)

// String returns the code's name.
func (c Code) String() string {
	switch c {
	case OK:
		return "OK"
	case SessionExpired:
		return "SessionExpired"
	case StaleSequence:
		return "StaleSequence"
	case InvalidArgument:
		return "InvalidArgument"
	case TooLarge:
		return "TooLarge"
	case Internal:
		return "Internal"
	case LeaseNotFound:
		return "LeaseNotFound"
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}

// Result answers one write (or a keepalive or close).
type Result struct {
	// Code is the outcome; Message says why when it is not OK.
	Code    Code
	Message string
	// Revision is the store's revision after the op (unchanged for a
	// failed op, a failed CAS, the delete of a missing key and the auth
	// commands, which do not count as key revisions).
	Revision uint64
	// Succeeded: CAS: the compare matched; Delete: the key existed;
	// TokenKey, Revoke: the auth state changed (false: the key id was
	// present, or the revocation added nothing).
	Succeeded bool
	// Found: Put/Delete/successful CAS: the key had a previous state, in
	// Prev. Failed CAS: the key exists, Prev is its current state. When
	// Found is false, Prev is zero. (Txn: Succeeded says the compares
	// held and the Then branch ran.)
	Found bool
	Prev  KeyValue
	// Txn is a transaction's branch results (OpTxn, Code OK), nil in a
	// result saved with the session: a retried transaction is answered
	// with its branch and revision only.
	Txn *TxnResult
	// Deleted is the number of keys a prefix delete (OpDelete with
	// Prefix) deleted; Succeeded says it is above 0, and Found and Prev
	// are unset (the previous values are not kept). Zero for every other
	// op. It is saved with the session, so a retry answers the same.
	Deleted uint64
}

// Applied is what Apply reports for one log entry.
type Applied struct {
	// ID and Kind are the command's (zero for a no-op entry).
	ID   uint64
	Kind CommandKind
	// Session is the new session's id for CmdOpenSession (the entry's log
	// index), the command's session otherwise.
	Session uint64
	// Results has one Result per op for CmdBatch, one for CmdKeepAlive and
	// CmdCloseSession (OK or SessionExpired), one for CmdTokenKey and
	// CmdRevoke (OK, InvalidArgument or TooLarge; Succeeded says whether
	// the auth state changed), none for CmdOpenSession, one for
	// CmdLeaseGrant and one per id for the other lease commands
	// (Succeeded: the lease was revoked or expired).
	Results []Result
	// Err is set when the entry could not be applied: a malformed command
	// (wraps ErrMalformed; every node gets the same error and only the
	// applied index moved), or an index not after the applied index (wraps
	// ErrIndex; nothing changed).
	Err error
	// Leases holds the leases' state after a CmdLeaseGrant (one, when it
	// succeeded) and a CmdLeaseKeepAlive (one per id, zero for a lease
	// not found).
	Leases []LeaseInfo
}

var (
	// ErrMalformed is wrapped by the errors of entries and snapshots that
	// cannot be decoded.
	ErrMalformed = errors.New("kv: malformed")
	// ErrIndex is wrapped by Apply's error when the index is not after the
	// applied index.
	ErrIndex = errors.New("kv: index not after applied index")
)
