package raftnode

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// Requests over the store's size limits are refused by the node that
// receives them, before anything is proposed or handed to the leader: a
// refused write costs no log entry, no fsync and no replication. The
// state machine checks the key and value limits again when it applies
// (entries written before these checks existed may hold such writes).

// tooLarge is the error of a request over a size limit; its message
// names the limit.
func tooLarge(format string, args ...any) error {
	return &requestError{schema.ErrorCode_tooLarge, fmt.Sprintf(format, args...)}
}

var opNames = [...]string{opPut: "put", opGet: "get", opDelete: "delete", opCAS: "cas", opRange: "range"}

func (k opKind) String() string {
	if int(k) < len(opNames) && opNames[k] != "" {
		return opNames[k]
	}
	return fmt.Sprintf("operation %d", k)
}

// checkOpSize refuses an operation whose key or values are over lim.
func checkOpSize(lim *kv.Config, o *kvOp) error {
	switch {
	case len(o.key) > lim.MaxKeySize:
		return tooLarge("%s key of %d bytes is over the key size limit of %d bytes", o.kind, len(o.key), lim.MaxKeySize)
	case len(o.after) > lim.MaxKeySize:
		return tooLarge("range start key (after) of %d bytes is over the key size limit of %d bytes", len(o.after), lim.MaxKeySize)
	case len(o.value) > lim.MaxValueSize:
		return tooLarge("%s value of %d bytes is over the value size limit of %d bytes", o.kind, len(o.value), lim.MaxValueSize)
	case len(o.cmpValue) > lim.MaxValueSize:
		return tooLarge("cas expected value of %d bytes is over the value size limit of %d bytes", len(o.cmpValue), lim.MaxValueSize)
	}
	return nil
}

// opBytes is what an operation counts towards the batch size limit.
func opBytes(o *kvOp) int { return len(o.key) + len(o.value) + len(o.cmpValue) + len(o.after) }

// checkBatchOps refuses a batch of more than lim's operations. It is
// answered as a failed call rather than one error per operation: the
// answer to an unbounded number of operations could exceed the message
// limit itself.
func checkBatchOps(lim *kv.Config, n int) error {
	if n > lim.MaxBatchOps {
		return tooLarge("tooLarge: batch of %d operations is over the limit of %d operations per batch: split it", n, lim.MaxBatchOps)
	}
	return nil
}

// checkBatchBytes refuses a batch whose keys and values add up to more
// than lim allows.
func checkBatchBytes(lim *kv.Config, total int) error {
	if total > lim.MaxBatchBytes {
		return tooLarge("batch of %d bytes of keys and values is over the batch size limit of %d bytes: split it", total, lim.MaxBatchBytes)
	}
	return nil
}
