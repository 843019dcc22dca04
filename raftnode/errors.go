package raftnode

import (
	"errors"

	"github.com/capraft/capraft/schema"
)

// requestError is an error a request is answered with: a code the client
// acts on and a message for humans.
type requestError struct {
	code schema.ErrorCode
	msg  string
}

func (e *requestError) Error() string { return e.msg }

// The errors requests end with. Their messages say what to do next.
var (
	errNoLeader       = &requestError{schema.ErrorCode_unavailable, "no leader is known (election in progress or quorum lost): retry"}
	errNotLeader      = &requestError{schema.ErrorCode_unavailable, "this node is not the leader: retry"}
	errDropped        = &requestError{schema.ErrorCode_unavailable, "the write was not applied (leadership changed or the leader is overloaded): retry"}
	errOutcomeUnknown = &requestError{schema.ErrorCode_outcomeUnknown, "the write may or may not have been applied: retry it with the same session and sequence number"}
	errTimeout        = &requestError{schema.ErrorCode_timeout, "timed out waiting for the cluster (no quorum reachable?)"}
	errBatchFull      = &requestError{schema.ErrorCode_unavailable, "this batch's answers reached the size limit before this read: retry it"}
	errShuttingDown   = &requestError{schema.ErrorCode_shuttingDown, "the node is shutting down: use another node"}
	errConfNotApplied = &requestError{schema.ErrorCode_unavailable, "the membership change was not applied (leadership changed): retry"}
	errRemoved        = errors.New("removed from the cluster; to bring it back, add it again (raftctl member add) and start it with an empty --data-dir and --join")
)

// The outcomes of admin calls.
var (
	errSnapshotBusy = &requestError{schema.ErrorCode_unavailable, "a snapshot is already being written: retry shortly"}
	// A membership change or leadership transfer that was started but
	// whose end this node did not see may still take effect: retrying it
	// blindly could apply it twice.
	errChangeOutcomeUnknown   = &requestError{schema.ErrorCode_outcomeUnknown, "the membership change was proposed but not seen applied in time; it may still be: check with raftctl members before retrying"}
	errTransferOutcomeUnknown = &requestError{schema.ErrorCode_outcomeUnknown, "leadership did not move in time; the transfer may still complete: check the leader with raftctl status before retrying"}
)

// errorCode maps any error to the code a client sees.
func errorCode(err error) (schema.ErrorCode, string) {
	var re *requestError
	if errors.As(err, &re) {
		return re.code, err.Error()
	}
	return schema.ErrorCode_internal, err.Error()
}
