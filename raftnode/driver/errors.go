package driver

import (
	"errors"
	"fmt"
)

// The errors requests end with. Their messages say what to do next; the
// services map each to what a client sees (raftnode/services errors.go).
var (
	// ErrNoLeader: no leader is known, or a read index asked of one was
	// lost with its leadership. Nothing was done: retry.
	ErrNoLeader = errors.New("no leader is known (election in progress or quorum lost): retry")
	// ErrNotLeader: the request needs the leader and this node is not
	// it. Nothing was proposed: hand it to the leader or retry.
	ErrNotLeader = errors.New("this node is not the leader: retry")
	// ErrDropped: the write was not applied and never will be (the core
	// dropped it, or a new leader overwrote its entry): retry.
	ErrDropped = errors.New("the write was not applied (leadership changed or the leader is overloaded): retry")
	// ErrOutcomeUnknown: the write was proposed and may or may not be
	// applied. Retry it only if applying it twice is harmless (a kv
	// session's sequence number makes it so).
	ErrOutcomeUnknown = errors.New("the write may or may not have been applied: retry it with the same session and sequence number")
	// ErrTimeout: the cluster did not answer in time; nothing was done
	// (reads, and tasks that never started).
	ErrTimeout = errors.New("timed out waiting for the cluster (no quorum reachable?)")
	// ErrStopped: the driver has stopped (closed, removed, or its disk
	// failed). StoppedError wraps it with the reason.
	ErrStopped = errors.New("the node is shutting down: use another node")
	// ErrRemoved is why a driver stops once it is no longer a member.
	ErrRemoved = errors.New("removed from the cluster; to bring it back, add it again (raftctl member add) and start it with an empty --data-dir and --join")
	// ErrConfNotApplied: a new leader overwrote a proposed membership
	// change; it will never be applied: retry.
	ErrConfNotApplied = errors.New("the membership change was not applied (leadership changed): retry")
	// ErrChangeInProgress: the core refused a membership change or a
	// transfer because another one is under way: retry shortly.
	ErrChangeInProgress = errors.New("another membership change or a leadership transfer is in progress: retry shortly")
	// ErrChangeOutcomeUnknown: a membership change was proposed but not
	// seen applied; it may still be, so retrying it blindly could apply
	// it twice.
	ErrChangeOutcomeUnknown = errors.New("the membership change was proposed but not seen applied in time; it may still be: check with raftctl members before retrying")
	// ErrTransferOutcomeUnknown: a leadership transfer was started but
	// not seen to end; it may still complete.
	ErrTransferOutcomeUnknown = errors.New("leadership did not move in time; the transfer may still complete: check the leader with raftctl status before retrying")
)

// InvalidError is a request the driver refuses because what it names is
// in the wrong state (a membership change naming a node that is not a
// member, say); the message says what to do instead.
type InvalidError struct{ Msg string }

func (e *InvalidError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// LeaderMovedError is a leadership transfer that ended with another node
// than its target leading: nothing to undo; retry the transfer.
type LeaderMovedError struct {
	// Leader leads now; Target was the transfer's.
	Leader, Target uint64
}

func (e *LeaderMovedError) Error() string {
	return fmt.Sprintf("leadership moved to node %d, not %d: retry the transfer", e.Leader, e.Target)
}
