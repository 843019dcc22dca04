package raft

import "github.com/capraft/capraft/raftnode/raft/tracker"

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
}

// Status reports the core's current state.
func (r *Core) Status() Status {
	s := Status{
		ID: r.id, Term: r.term, Vote: r.vote, Lead: r.lead, Role: r.state,
		Commit: r.log.committed, Applied: r.log.applied,
		FirstIndex: r.log.firstIndex(), LastIndex: r.log.lastIndex(),
		LeadTransferee: r.leadTransferee, Config: r.ConfState(),
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
	return ProgressStatus{Match: pr.Match, Next: pr.Next, State: pr.State.String(), RecentActive: pr.RecentActive, IsLearner: pr.IsLearner}
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
