// Package quorum holds the quorum arithmetic of Raft: which index a
// majority (or, in a joint configuration, two majorities) has
// acknowledged, and whether an election is won, lost or still open.
//
// It knows nothing about messages or logs; callers pass in a lookup of
// what each voter has acknowledged or voted.
package quorum

import (
	"slices"
	"sort"
)

// VoteResult is the state of an election as seen by a candidate.
type VoteResult uint8

const (
	// VotePending: neither a quorum of grants nor of rejections yet.
	VotePending VoteResult = iota
	// VoteLost: enough rejections that a quorum of grants is impossible.
	VoteLost
	// VoteWon: a quorum granted the vote.
	VoteWon
)

// String names the result for test output.
func (v VoteResult) String() string {
	switch v {
	case VotePending:
		return "pending"
	case VoteLost:
		return "lost"
	case VoteWon:
		return "won"
	}
	return "unknown"
}

// AckedIndexer reports the highest log index a voter has acknowledged.
// ok is false if nothing is known about the voter.
type AckedIndexer interface {
	AckedIndex(id uint64) (idx uint64, ok bool)
}

// MapAckIndexer is an AckedIndexer backed by a map (handy in tests).
type MapAckIndexer map[uint64]uint64

// AckedIndex implements AckedIndexer.
func (m MapAckIndexer) AckedIndex(id uint64) (uint64, bool) {
	idx, ok := m[id]
	return idx, ok
}

// MajorityConfig is a set of voter ids; a quorum is any strict majority.
type MajorityConfig map[uint64]struct{}

// NewMajority builds a MajorityConfig from ids.
func NewMajority(ids ...uint64) MajorityConfig {
	m := MajorityConfig{}
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}

// Slice returns the ids in ascending order.
func (c MajorityConfig) Slice() []uint64 {
	s := make([]uint64, 0, len(c))
	for id := range c {
		s = append(s, id)
	}
	slices.Sort(s)
	return s
}

// CommittedIndex returns the largest index acknowledged by a majority.
// An empty config commits everything (math.MaxUint64) so that it is
// neutral inside a joint configuration whose outgoing half is empty.
func (c MajorityConfig) CommittedIndex(l AckedIndexer) uint64 {
	n := len(c)
	if n == 0 {
		return ^uint64(0)
	}
	var stk [7]uint64 // avoid an allocation for common cluster sizes
	var srt []uint64
	if n <= len(stk) {
		srt = stk[:n]
	} else {
		srt = make([]uint64, n)
	}
	i := 0
	for id := range c {
		if idx, ok := l.AckedIndex(id); ok {
			srt[i] = idx
		} else {
			srt[i] = 0
		}
		i++
	}
	// Insertion sort: n is tiny and this runs on every ack.
	for a := 1; a < n; a++ {
		for b := a; b > 0 && srt[b-1] > srt[b]; b-- {
			srt[b-1], srt[b] = srt[b], srt[b-1]
		}
	}
	// Sorted ascending; the element at n-(n/2+1) is held by a majority.
	return srt[n-(n/2+1)]
}

// VoteResult tallies votes (true = granted) and reports the outcome.
// An empty config wins, again to be neutral inside a joint config.
func (c MajorityConfig) VoteResult(votes map[uint64]bool) VoteResult {
	if len(c) == 0 {
		return VoteWon
	}
	granted, missing := 0, 0
	for id := range c {
		v, ok := votes[id]
		if !ok {
			missing++
			continue
		}
		if v {
			granted++
		}
	}
	q := len(c)/2 + 1
	if granted >= q {
		return VoteWon
	}
	if granted+missing >= q {
		return VotePending
	}
	return VoteLost
}

// JointConfig is an incoming and an outgoing majority config. Outside a
// joint change the outgoing half is empty. Every decision needs both.
type JointConfig [2]MajorityConfig

// IDs returns the union of both halves, sorted.
func (c JointConfig) IDs() []uint64 {
	set := map[uint64]struct{}{}
	for _, m := range c {
		for id := range m {
			set[id] = struct{}{}
		}
	}
	s := make([]uint64, 0, len(set))
	for id := range set {
		s = append(s, id)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

// Contains reports whether id votes in either half.
func (c JointConfig) Contains(id uint64) bool {
	_, a := c[0][id]
	_, b := c[1][id]
	return a || b
}

// CommittedIndex is the smaller of the two halves' committed indexes.
func (c JointConfig) CommittedIndex(l AckedIndexer) uint64 {
	a := c[0].CommittedIndex(l)
	b := c[1].CommittedIndex(l)
	if a < b {
		return a
	}
	return b
}

// VoteResult is won only if both halves are won, lost if either is lost.
func (c JointConfig) VoteResult(votes map[uint64]bool) VoteResult {
	a := c[0].VoteResult(votes)
	b := c[1].VoteResult(votes)
	if a == b {
		return a
	}
	if a == VoteLost || b == VoteLost {
		return VoteLost
	}
	return VotePending
}
