package kvwire

import (
	"fmt"

	"github.com/capraft/capraft/schema"
)

// Limits are the sizes a node accepts (raftnode/kv's Config holds a
// cluster's). The client checks its operations against the key and value
// limits before sending anything; the node that receives a request checks
// them all before anything runs or is handed to the leader.
type Limits struct {
	MaxKeySize   int // bytes of a key, a range's prefix or its start
	MaxValueSize int // bytes of a value or a compare-and-swap's expected value
	// MaxBatchOps is the most operations one batch may carry and
	// MaxBatchBytes the most bytes of keys and values (Op.Bytes) in it.
	MaxBatchOps   int
	MaxBatchBytes int
}

// SizeError reports the part of an operation that is over a limit.
type SizeError struct {
	Kind  Kind
	Part  string // "key", "range start key", "value", "expected value", "compare key" or "compared value"
	Size  int    // bytes
	Limit int    // bytes
}

// Error names the part, its size and the limit.
func (e *SizeError) Error() string {
	switch e.Part {
	case "key":
		return fmt.Sprintf("%s key of %d bytes is over the key size limit of %d bytes", e.Kind, e.Size, e.Limit)
	case "range start key":
		return fmt.Sprintf("range start key (after) of %d bytes is over the key size limit of %d bytes", e.Size, e.Limit)
	case "value":
		return fmt.Sprintf("%s value of %d bytes is over the value size limit of %d bytes", e.Kind, e.Size, e.Limit)
	case "compare key":
		return fmt.Sprintf("txn compare key of %d bytes is over the key size limit of %d bytes", e.Size, e.Limit)
	default:
		return fmt.Sprintf("%s %s of %d bytes is over the value size limit of %d bytes", e.Kind, e.Part, e.Size, e.Limit)
	}
}

// OverLimit returns the first part of o over lim's key and value limits,
// or nil if none is.
func (o *Op) OverLimit(lim Limits) *SizeError {
	over := func(part string, size, limit int) *SizeError {
		return &SizeError{Kind: o.Kind, Part: part, Size: size, Limit: limit}
	}
	switch {
	case len(o.Key) > lim.MaxKeySize:
		return over("key", len(o.Key), lim.MaxKeySize)
	case len(o.After) > lim.MaxKeySize:
		return over("range start key", len(o.After), lim.MaxKeySize)
	case len(o.Value) > lim.MaxValueSize:
		return over("value", len(o.Value), lim.MaxValueSize)
	case len(o.CompareValue) > lim.MaxValueSize:
		return over("expected value", len(o.CompareValue), lim.MaxValueSize)
	case o.Txn != nil:
		return o.Txn.overLimit(lim)
	}
	return nil
}

// CheckSize refuses o if a key or value is over lim: the error is an
// *Error with the code tooLarge.
func (o *Op) CheckSize(lim Limits) error {
	if e := o.OverLimit(lim); e != nil {
		return &Error{Code: schema.ErrorCode_tooLarge, Message: e.Error()}
	}
	return nil
}

// checkBatchOps refuses a batch of n operations if that is over lim.
func (lim *Limits) checkBatchOps(n int) error {
	if n > lim.MaxBatchOps {
		return tooLarge("tooLarge: batch of %d operations is over the limit of %d operations per batch: split it", n, lim.MaxBatchOps)
	}
	return nil
}

// checkBatchBytes refuses a batch whose keys and values add up to total
// bytes if that is over lim.
func (lim *Limits) checkBatchBytes(total int) error {
	if total > lim.MaxBatchBytes {
		return tooLarge("batch of %d bytes of keys and values is over the batch size limit of %d bytes: split it", total, lim.MaxBatchBytes)
	}
	return nil
}
