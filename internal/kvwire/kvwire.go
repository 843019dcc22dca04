// Package kvwire is the KV operation codec that the client and the node
// share: how a get, put, delete, compare-and-swap or range and its result
// are written to and read from the schema's KV structs (schema/kv.capnp),
// and how an operation is checked against the size limits.
//
// The types here are plain Go. Encoding writes exactly the fields an Op or
// Result holds; a nil byte slice is written as a null pointer and an empty
// one as an empty list, so what was decoded is re-encoded as it came
// (a follower forwards a request as its client sent it).
//
// Decoding never panics on malformed input and never copies: the byte
// slices of a decoded Op or Result alias the message and are valid only
// while it is (until the call returns or its results are released).
// Callers copy what they keep, into whatever form they keep it in.
//
// A malformed operation is an error of that operation only: a batch
// decodes into one Op and one error per operation, and the caller answers
// the bad ones with their error and runs the rest.
package kvwire

import (
	"fmt"

	"github.com/capraft/capraft/schema"
)

// Kind is the kind of an operation. The zero value is invalid.
type Kind uint8

// Operation kinds.
const (
	Put Kind = 1 + iota
	Get
	Delete
	CAS
	Range
	Txn
)

var kindNames = [...]string{Put: "put", Get: "get", Delete: "delete", CAS: "cas", Range: "range", Txn: "txn"}

// String returns the kind's name as the schema spells the method ("cas").
func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return fmt.Sprintf("operation %d", k)
}

// CompareKind is what a compare-and-swap compares. The zero value is
// invalid.
type CompareKind uint8

// Compare kinds, as the schema's CasOp.expected union.
const (
	// CompareValue holds when the key exists with exactly CompareValue.
	CompareValue CompareKind = 1 + iota
	// CompareModRevision holds when the key was last written at
	// CompareRevision.
	CompareModRevision
	// CompareAbsent holds when the key does not exist.
	CompareAbsent
)

// Op is one KV operation.
type Op struct {
	Kind Kind
	// Seq is a write's sequence number in its session (> 0). Reads carry
	// whatever the client sent (0), which no node reads.
	Seq uint64
	// Key is the key; a range's prefix.
	Key []byte
	// Value is a put's value or a compare-and-swap's new value.
	Value []byte
	// Compare, CompareValue and CompareRevision are a compare-and-swap's
	// condition.
	Compare         CompareKind
	CompareValue    []byte
	CompareRevision uint64
	// DeleteOnSuccess makes a compare-and-swap delete the key.
	DeleteOnSuccess bool
	// After is where a range starts (exclusive; empty: at the first key),
	// Limit the most keys it returns (0: the node's maximum).
	After []byte
	Limit uint32
	// Serializable makes a get or range read the receiving node's state
	// as it is (possibly stale) rather than linearizably; and a
	// transaction without writes.
	Serializable bool
	// Txn is a transaction's compares and branches (Kind Txn).
	Txn *Transaction
	// Lease is the lease a put attaches its key to (0: none).
	Lease uint64
	// Prefix makes a delete delete every key that starts with Key (which
	// must not be empty), at one revision.
	Prefix bool
}

// IsWrite reports whether o writes: a put, delete or compare-and-swap, or
// a transaction with a put or delete in either branch.
func (o *Op) IsWrite() bool {
	switch o.Kind {
	case Put, Delete, CAS:
		return true
	case Txn:
		return o.Txn != nil && o.Txn.Writes()
	}
	return false
}

// Bytes is what o counts towards a batch's size limit: its keys and
// values (a transaction's: all of them).
func (o *Op) Bytes() int {
	n := len(o.Key) + len(o.Value) + len(o.CompareValue) + len(o.After)
	if o.Txn != nil {
		n += o.Txn.bytes()
	}
	return n
}

// Count is what o counts towards a batch's operation limit: one, and one
// more for each compare and operation of a transaction.
func (o *Op) Count() int {
	if o.Txn != nil {
		return 1 + o.Txn.items()
	}
	return 1
}

// KeyValue is a key's state. Its fields are those of the state machine's
// kv.KeyValue, in the same order, so either converts to the other.
type KeyValue struct {
	Key            []byte
	Value          []byte
	CreateRevision uint64 // revision of the write that created the key
	ModRevision    uint64 // revision of the last write to the key
	Version        uint64 // writes to the key since it was created
	Lease          uint64 // the lease the key is attached to (0: none)
}

// Result is one operation's outcome. Which fields mean something depends
// on the operation's kind, as in the state machine's kv.Result:
//   - put: Found says the key had a previous state, KV.
//   - delete: Succeeded says the key existed and was deleted (a prefix
//     delete: some key was); Found says its previous state is in KV
//     (never for a prefix); Count is the number of keys deleted.
//   - cas: Succeeded says the compare held; Found says the key exists,
//     with KV its state (before the write).
//   - get: Found says the key exists, with KV its state.
//   - range: KVs are the page, More says another follows.
//   - txn: Succeeded says every compare held (the then branch ran), Txn
//     holds the results of the branch's operations.
type Result struct {
	// Revision is the store's revision after a write, or at which a read
	// was served. A failed operation may carry one too.
	Revision uint64
	// Err is set when the operation failed; the fields below are unset.
	Err       *Error
	Succeeded bool
	Found     bool
	KV        KeyValue
	KVs       []KeyValue
	More      bool
	// Count is a delete's number of keys deleted (0 or 1 without a
	// prefix). Decoding sets it to 1 for a deleted key whose node left it
	// unset (a node from before prefix deletes).
	Count uint64
	// Txn is a transaction's outcome (kind Txn; nil when the result is an
	// error).
	Txn *TxnResult
	// Kind is set in the results inside a TxnResult only: the kind of
	// the branch operation answered (0 for an error), which the encoding
	// of those results needs.
	Kind Kind
}

// TxnResult is a transaction's outcome besides its branch.
type TxnResult struct {
	// Results answer the operations of the branch that ran, in order.
	Results []Result
	// Replayed: the answer is the saved result of an earlier application
	// of the same session and sequence number, which keeps the branch
	// and revision only; Results is empty.
	Replayed bool
}

// Error is a failed operation's answer: a code the client acts on, a
// message for humans and the node the answering node believed to lead
// (0: none known). The codec's own errors (a malformed operation, one over
// a size limit) are *Error too, with LeaderHint 0.
type Error struct {
	Code       schema.ErrorCode
	Message    string
	LeaderHint uint64
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

// invalid is the error of a malformed operation or request.
func invalid(format string, args ...any) *Error {
	return &Error{Code: schema.ErrorCode_invalidArgument, Message: fmt.Sprintf(format, args...)}
}

// tooLarge is the error of an operation or request over a size limit.
func tooLarge(format string, args ...any) *Error {
	return &Error{Code: schema.ErrorCode_tooLarge, Message: fmt.Sprintf(format, args...)}
}
