// Package tracker keeps the leader's per-peer replication progress, the
// active membership configuration, and votes in the current election.
package tracker

import (
	"slices"

	"github.com/capraft/capraft/raftnode/raft/internal/quorum"
)

// Config is the membership configuration as the tracker uses it.
type Config struct {
	// Voters is the joint config; Voters[1] is empty unless a joint
	// change is in progress.
	Voters quorum.JointConfig
	// Learners never vote. Invariant: disjoint from both Voters halves.
	Learners map[uint64]struct{}
	// LearnersNext are voters of the outgoing config that become learners
	// when the joint config is left (they must keep receiving entries
	// until then, so they cannot be learners yet).
	LearnersNext map[uint64]struct{}
	// AutoLeave asks the leader to leave the joint config automatically
	// once it commits.
	AutoLeave bool
	// Incarnations maps a member to the incarnation of its storage that
	// counts: only that incarnation's votes and acknowledgements make a
	// quorum. A member absent from it counts any incarnation.
	Incarnations map[uint64]uint64
	// AutoPromote are learners the leader promotes once they have caught
	// up (voters whose storage was replaced, voters being added).
	AutoPromote map[uint64]struct{}
}

// Counts reports whether incarnation inc of member id is the one the
// configuration counts.
func (c Config) Counts(id, inc uint64) bool {
	rec, ok := c.Incarnations[id]
	return !ok || rec == inc
}

// Joint reports whether a joint configuration is in effect.
func (c Config) Joint() bool { return len(c.Voters[1]) > 0 }

// Clone returns a deep copy.
func (c Config) Clone() Config {
	cp := func(m map[uint64]struct{}) map[uint64]struct{} {
		if m == nil {
			return nil
		}
		n := make(map[uint64]struct{}, len(m))
		for k := range m {
			n[k] = struct{}{}
		}
		return n
	}
	incs := make(map[uint64]uint64, len(c.Incarnations))
	for id, inc := range c.Incarnations {
		incs[id] = inc
	}
	return Config{
		Voters:       quorum.JointConfig{cp(c.Voters[0]), cp(c.Voters[1])},
		Learners:     cp(c.Learners),
		LearnersNext: cp(c.LearnersNext),
		AutoLeave:    c.AutoLeave,
		Incarnations: incs,
		AutoPromote:  orEmpty(cp(c.AutoPromote)),
	}
}

func orEmpty(m map[uint64]struct{}) map[uint64]struct{} {
	if m == nil {
		return map[uint64]struct{}{}
	}
	return m
}

func sortedKeys(m map[uint64]struct{}) []uint64 {
	if len(m) == 0 {
		return nil
	}
	s := make([]uint64, 0, len(m))
	for k := range m {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// VoterIDs returns the incoming voters, sorted.
func (c Config) VoterIDs() []uint64 { return sortedKeys(c.Voters[0]) }

// OutgoingIDs returns the outgoing voters, sorted.
func (c Config) OutgoingIDs() []uint64 { return sortedKeys(c.Voters[1]) }

// LearnerIDs returns the learners, sorted.
func (c Config) LearnerIDs() []uint64 { return sortedKeys(c.Learners) }

// LearnerNextIDs returns the learners-to-be, sorted.
func (c Config) LearnerNextIDs() []uint64 { return sortedKeys(c.LearnersNext) }

// AutoPromoteIDs returns the learners waiting to be promoted, sorted.
func (c Config) AutoPromoteIDs() []uint64 { return sortedKeys(c.AutoPromote) }

// ProgressTracker holds the config, every member's Progress, and votes.
type ProgressTracker struct {
	Config
	Progress map[uint64]*Progress
	Votes    map[uint64]bool

	MaxInflight      int
	MaxInflightBytes uint64
}

// MakeProgressTracker returns an empty tracker.
func MakeProgressTracker(maxInflight int, maxInflightBytes uint64) ProgressTracker {
	return ProgressTracker{
		Config: Config{
			Voters:       quorum.JointConfig{quorum.MajorityConfig{}, quorum.MajorityConfig{}},
			Learners:     map[uint64]struct{}{},
			LearnersNext: map[uint64]struct{}{},
			Incarnations: map[uint64]uint64{},
			AutoPromote:  map[uint64]struct{}{},
		},
		Progress:         map[uint64]*Progress{},
		Votes:            map[uint64]bool{},
		MaxInflight:      maxInflight,
		MaxInflightBytes: maxInflightBytes,
	}
}

// AckedIndex implements quorum.AckedIndexer over Match. Only the counted
// incarnation's acknowledgements count: a member whose storage was
// replaced has acknowledged nothing the configuration counts.
func (t *ProgressTracker) AckedIndex(id uint64) (uint64, bool) {
	pr, ok := t.Progress[id]
	if !ok {
		return 0, false
	}
	if !t.Counts(id, pr.Incarnation) {
		return 0, true
	}
	return pr.Match, true
}

// Committed is the largest index acknowledged by the voting quorum(s).
func (t *ProgressTracker) Committed() uint64 {
	return t.Voters.CommittedIndex(t)
}

// IsSingleton reports whether this is a one-voter, non-joint config.
func (t *ProgressTracker) IsSingleton() bool {
	return len(t.Voters[0]) == 1 && len(t.Voters[1]) == 0
}

// IDs returns all members (voters, learners, learners-to-be), sorted, so
// iteration order and therefore output is deterministic.
func (t *ProgressTracker) IDs() []uint64 {
	ids := make([]uint64, 0, len(t.Progress))
	for id := range t.Progress {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// QuorumActive reports whether the voters marked RecentActive form a
// quorum (check-quorum).
func (t *ProgressTracker) QuorumActive() bool {
	votes := map[uint64]bool{}
	for id, pr := range t.Progress {
		if pr.IsLearner {
			continue
		}
		votes[id] = pr.RecentActive && t.Counts(id, pr.Incarnation)
	}
	return t.Voters.VoteResult(votes) == quorum.VoteWon
}

// ResetVotes starts a new election tally.
func (t *ProgressTracker) ResetVotes() { clear(t.Votes) }

// RecordVote records id's answer; only the first answer counts.
func (t *ProgressTracker) RecordVote(id uint64, granted bool) {
	if _, ok := t.Votes[id]; !ok {
		t.Votes[id] = granted
	}
}

// TallyVotes returns granted and rejected counts and the result.
func (t *ProgressTracker) TallyVotes() (granted, rejected int, result quorum.VoteResult) {
	for id, pr := range t.Progress {
		if pr.IsLearner {
			continue
		}
		v, ok := t.Votes[id]
		if !ok {
			continue
		}
		if v {
			granted++
		} else {
			rejected++
		}
	}
	return granted, rejected, t.Voters.VoteResult(t.Votes)
}
