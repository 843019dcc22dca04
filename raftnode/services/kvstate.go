package services

import (
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/statemachine"
)

// The services' side of the state-machine boundary: the driver applies
// entries to the state machine and hands each result on untouched; what a result means
// is known only here, where the key-value store is the state machine.

// applied returns the key-value store's outcome of a proposal's entry,
// the result the driver handed back (the zero value when the proposal
// failed).
func applied(res statemachine.Result) kv.Applied {
	if a, ok := res.(*kv.Applied); ok && a != nil {
		return *a
	}
	return kv.Applied{}
}

// observeApplied is the node's onApplied. It logs entries the store
// applied as no-ops because they do not decode, and has the first token
// key applied after this node started write the first operator token
// (see writeOperatorToken): an entry replayed from the log at start may
// have been applied in an earlier run, so its one-time effect is not
// repeated.
func (sv *Server) observeApplied(index uint64, res statemachine.Result, replayed bool) {
	a, ok := res.(*kv.Applied)
	switch {
	case !ok:
	case a.Err != nil:
		sv.log.Warn("applied an undecodable entry as a no-op", "index", index, "error", a.Err)
	case a.Kind == kv.CmdTokenKey && !replayed:
		sv.writeOperatorToken()
	}
}
