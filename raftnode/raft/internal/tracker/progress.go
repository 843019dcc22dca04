package tracker

import "fmt"

// StateType is the replication state of one follower as the leader sees it.
type StateType uint8

const (
	// StateProbe: the leader does not know where the follower's log
	// matches; it sends at most one append per heartbeat interval and
	// walks Next back on rejection.
	StateProbe StateType = iota
	// StateReplicate: the follower's log matches up to Match; the leader
	// streams appends optimistically, bounded by the Inflights window.
	StateReplicate
	// StateSnapshot: the follower needs entries the leader has compacted;
	// the leader's driver streams it a snapshot and the leader sends no
	// appends until the driver reports how that ended.
	StateSnapshot
)

// String names the state.
func (s StateType) String() string {
	switch s {
	case StateProbe:
		return "probe"
	case StateReplicate:
		return "replicate"
	case StateSnapshot:
		return "snapshot"
	}
	return "unknown"
}

// Progress is the leader's view of one peer's log.
//
// Invariant: Match < Next.
type Progress struct {
	Match, Next uint64
	State       StateType

	// ProbeSent is set after an append in StateProbe and cleared when the
	// follower answers (an append or heartbeat response); while set, no
	// more probes are sent, so a follower that lost its way gets one probe
	// per round trip rather than a flood.
	ProbeSent bool

	// PendingSnapshot is the index of the snapshot being sent in
	// StateSnapshot: the driver streams it and reports how that ended
	// (the core's ReportSnapshot).
	PendingSnapshot uint64

	// RecentActive is set when the peer is heard from and cleared by the
	// leader every election timeout (check-quorum).
	RecentActive bool

	// IsLearner marks a non-voting member.
	IsLearner bool

	// Incarnation is the incarnation of the peer's storage that last
	// answered (initially the one the configuration records). When it
	// changes, the peer lost what it had acknowledged: see
	// ResetIncarnation.
	Incarnation uint64
	// Heard reports that the peer answered this leader, so Incarnation
	// is evidence of its storage rather than an assumption: only then
	// may the leader demote it for answering from other storage.
	Heard bool

	// Inflights bounds the appends pipelined in StateReplicate.
	Inflights *Inflights
}

// ResetState moves to state, clearing per-state bookkeeping.
func (p *Progress) ResetState(state StateType) {
	p.ProbeSent = false
	p.PendingSnapshot = 0
	p.State = state
	p.Inflights.Reset()
}

// BecomeProbe is used after a rejection or an unreachable follower: it
// resumes probing just after the highest index known to match.
func (p *Progress) BecomeProbe() {
	if p.State == StateSnapshot {
		// The snapshot may or may not have landed; Next resumes after it
		// if it is newer than Match.
		ps := p.PendingSnapshot
		p.ResetState(StateProbe)
		p.Next = max(p.Match+1, ps+1)
		return
	}
	p.ResetState(StateProbe)
	p.Next = p.Match + 1
}

// ResetIncarnation records that incarnation inc of the peer answered
// instead of the one known so far: its storage was replaced, so nothing it
// acknowledged before holds. Match drops to 0 and the leader probes from
// next (its last index + 1) down to wherever the new log matches.
func (p *Progress) ResetIncarnation(inc, next uint64) {
	p.Incarnation = inc
	p.Match = 0
	p.ResetState(StateProbe)
	p.Next = next
}

// BecomeReplicate starts optimistic streaming after Match.
func (p *Progress) BecomeReplicate() {
	p.ResetState(StateReplicate)
	p.Next = p.Match + 1
}

// BecomeSnapshot starts sending the snapshot at index snapIndex.
func (p *Progress) BecomeSnapshot(snapIndex uint64) {
	p.ResetState(StateSnapshot)
	p.PendingSnapshot = snapIndex
}

// MaybeUpdate records an acknowledgement of index n. It returns false if
// the ack is stale (n <= Match), which happens with duplicated or
// reordered responses.
func (p *Progress) MaybeUpdate(n uint64) bool {
	updated := false
	if p.Match < n {
		p.Match = n
		updated = true
		p.ProbeSent = false
	}
	p.Next = max(p.Next, n+1)
	return updated
}

// OptimisticUpdate advances Next after sending entries up to n in
// StateReplicate, before they are acknowledged.
func (p *Progress) OptimisticUpdate(n uint64) { p.Next = n + 1 }

// MaybeDecrTo handles a rejected append whose previous index was
// rejected. hint is where the leader should try next (already computed
// from the follower's conflict hints). It returns false if the rejection
// is stale and should be ignored.
func (p *Progress) MaybeDecrTo(rejected, hint uint64) bool {
	if p.State == StateReplicate {
		// In replicate, only a rejection of something above Match is
		// news; anything else was sent before the window moved on.
		if rejected <= p.Match {
			return false
		}
		p.Next = max(p.Match+1, min(hint, rejected))
		return true
	}
	// In probe, only the rejection of the latest probe (Next-1) counts.
	if p.Next == 0 || p.Next-1 != rejected {
		return false
	}
	p.Next = max(p.Match+1, min(hint, rejected))
	p.ProbeSent = false
	return true
}

// IsPaused reports whether the leader should hold back appends.
func (p *Progress) IsPaused() bool {
	switch p.State {
	case StateProbe:
		return p.ProbeSent
	case StateReplicate:
		return p.Inflights.Full()
	case StateSnapshot:
		return true
	}
	return true
}

// String renders the progress for logs and test failures.
func (p *Progress) String() string {
	s := fmt.Sprintf("%s match=%d next=%d", p.State, p.Match, p.Next)
	if p.IsLearner {
		s += " learner"
	}
	if p.State == StateSnapshot {
		s += fmt.Sprintf(" snap=%d", p.PendingSnapshot)
	}
	return s
}
