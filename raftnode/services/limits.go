package services

import (
	"fmt"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// Requests over the store's size limits are refused by the node that
// receives them, before anything is proposed or handed to the leader: a
// refused write costs no log entry, no fsync and no replication. The
// checks are kvwire's (the client makes the same ones before sending).
// The state machine checks the key and value limits again when it
// applies (entries written before these checks existed may hold such
// writes).

// kvLimits returns the request limits of the store's configuration.
func kvLimits(c kv.Config) kvwire.Limits {
	return kvwire.Limits{MaxKeySize: c.MaxKeySize, MaxValueSize: c.MaxValueSize,
		MaxBatchOps: c.MaxBatchOps, MaxBatchBytes: c.MaxBatchBytes}
}

// tooLarge is the error of a request over a size limit; its message
// names the limit.
func tooLarge(format string, args ...any) error {
	return &requestError{schema.ErrorCode_tooLarge, fmt.Sprintf(format, args...)}
}
