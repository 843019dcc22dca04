package raft

import "github.com/capraft/capraft/raftnode/raft/internal/tracker"

// ConfState returns the configuration currently in effect (as of the
// applied index once Advance has returned); store it with snapshots.
func (r *Core) ConfState() ConfState { return confStateFromConfig(r.trk.Config) }

// ID returns this node's id.
func (r *Core) ID() uint64 { return r.id }

// ProgressStatus is the leader's view of one member.
type ProgressStatus struct {
	Match, Next  uint64
	State        string
	RecentActive bool
	IsLearner    bool
	// Incarnation is the incarnation of the member's storage that last
	// answered (or the recorded one, before any answer).
	Incarnation uint64
}

// Status is a snapshot of a core's state for operators and tests.
type Status struct {
	ID, Term, Vote, Lead uint64
	Role                 StateType
	Commit, Applied      uint64
	FirstIndex           uint64
	LastIndex            uint64
	LeadTransferee       uint64
	Config               ConfState
	// Progress is set on the leader only.
	Progress map[uint64]ProgressStatus
	// Incarnation is this node's storage incarnation (Config.Incarnation).
	Incarnation uint64
	// UncountedVoters are voters whose latest answer to this node's
	// campaigns came from an incarnation the configuration does not count
	// (they lost their storage), with that incarnation: the reason an
	// election cannot be won, if they leave no majority.
	UncountedVoters map[uint64]uint64
	// DroppedNonMember counts messages Step dropped because their sender
	// is not a member of this node's configuration (ErrNotMember).
	DroppedNonMember uint64
	// DroppedNotFromLeader counts TimeoutNow and ReadIndex answers Step
	// dropped because they did not come from the leader this node
	// follows, in its term (ErrNotFromLeader).
	DroppedNotFromLeader uint64
}

// Status reports the core's current state.
func (r *Core) Status() Status {
	s := Status{
		ID: r.id, Term: r.term, Vote: r.vote, Lead: r.lead, Role: r.state,
		Commit: r.log.committed, Applied: r.log.applied,
		FirstIndex: r.log.firstIndex(), LastIndex: r.log.lastIndex(),
		LeadTransferee: r.leadTransferee, Config: r.ConfState(),
		Incarnation:      r.cfg.Incarnation,
		DroppedNonMember: r.droppedNonMember, DroppedNotFromLeader: r.droppedNotFromLeader,
	}
	if len(r.uncounted) > 0 {
		s.UncountedVoters = make(map[uint64]uint64, len(r.uncounted))
		for id, inc := range r.uncounted {
			if _, voter := r.trk.Progress[id]; voter && !r.counts(id, inc) {
				s.UncountedVoters[id] = inc
			}
		}
	}
	if r.state == StateLeader {
		s.Progress = make(map[uint64]ProgressStatus, len(r.trk.Progress))
		for id, pr := range r.trk.Progress {
			s.Progress[id] = progressStatus(pr)
		}
	}
	return s
}

func progressStatus(pr *tracker.Progress) ProgressStatus {
	return ProgressStatus{Match: pr.Match, Next: pr.Next, State: pr.State.String(), RecentActive: pr.RecentActive, IsLearner: pr.IsLearner, Incarnation: pr.Incarnation}
}

// Lead returns the id of the leader this node knows of, or 0. It is the
// cheap way for a driver to route a request to the leader.
func (r *Core) Lead() uint64 { return r.lead }

// LastIndex returns the index of the last entry in the log, persisted or
// not. Right after a successful Propose it is the proposal's index (after
// ProposeBatch, the last of the batch's), which lets a driver notice when
// a different entry is later committed at that index.
func (r *Core) LastIndex() uint64 { return r.log.lastIndex() }

// Term returns the current term.
func (r *Core) Term() uint64 { return r.term }

// Role returns the node's current role.
func (r *Core) Role() StateType { return r.state }
