package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/capraft/capraft/raftnode/raft/quorum"
	"github.com/capraft/capraft/raftnode/raft/tracker"
)

// ConfChangeType is one membership operation.
type ConfChangeType uint8

const (
	// ConfChangeAddVoter adds a voter (or promotes a learner).
	ConfChangeAddVoter ConfChangeType = iota + 1
	// ConfChangeAddLearner adds a non-voting learner (or demotes a voter).
	ConfChangeAddLearner
	// ConfChangeRemoveNode removes a voter or learner.
	ConfChangeRemoveNode
)

// ConfChangeSingle changes one node's membership.
type ConfChangeSingle struct {
	Type   ConfChangeType
	NodeID uint64
}

// ConfChangeTransition selects how a change is carried out.
type ConfChangeTransition uint8

const (
	// ConfChangeTransitionAuto uses a single-step change when at most one
	// voter is affected, and joint consensus that is left automatically
	// otherwise.
	ConfChangeTransitionAuto ConfChangeTransition = iota
	// ConfChangeTransitionJointImplicit always enters a joint
	// configuration and leaves it automatically once committed.
	ConfChangeTransitionJointImplicit
	// ConfChangeTransitionJointExplicit enters a joint configuration that
	// the application leaves by proposing an empty ConfChange.
	ConfChangeTransitionJointExplicit
)

// ConfChange is a membership change as proposed and as stored in an
// EntryConfChange entry. An empty Changes list means "leave the joint
// configuration".
type ConfChange struct {
	Transition ConfChangeTransition
	Changes    []ConfChangeSingle
	// Context is opaque to the core (e.g. the new node's address).
	Context []byte
}

// LeaveJoint reports whether cc is a request to leave a joint config.
func (cc ConfChange) LeaveJoint() bool { return len(cc.Changes) == 0 }

const confChangeVersion = 1

// Marshal encodes cc for an entry's Data.
func (cc ConfChange) Marshal() []byte {
	b := make([]byte, 0, 8+len(cc.Changes)*11+len(cc.Context))
	b = append(b, confChangeVersion, byte(cc.Transition))
	b = binary.AppendUvarint(b, uint64(len(cc.Changes)))
	for _, c := range cc.Changes {
		b = append(b, byte(c.Type))
		b = binary.AppendUvarint(b, c.NodeID)
	}
	b = binary.AppendUvarint(b, uint64(len(cc.Context)))
	return append(b, cc.Context...)
}

var errBadConfChange = errors.New("raft: malformed conf change")

// UnmarshalConfChange decodes an EntryConfChange's Data. It never panics
// on malformed input.
func UnmarshalConfChange(b []byte) (ConfChange, error) {
	var cc ConfChange
	if len(b) < 2 || b[0] != confChangeVersion || b[1] > byte(ConfChangeTransitionJointExplicit) {
		return cc, errBadConfChange
	}
	cc.Transition = ConfChangeTransition(b[1])
	b = b[2:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return cc, errBadConfChange
	}
	b = b[k:]
	for i := uint64(0); i < n; i++ {
		if len(b) < 2 {
			return cc, errBadConfChange
		}
		t := ConfChangeType(b[0])
		if t < ConfChangeAddVoter || t > ConfChangeRemoveNode {
			return cc, errBadConfChange
		}
		id, k := binary.Uvarint(b[1:])
		if k <= 0 || id == 0 {
			return cc, errBadConfChange
		}
		cc.Changes = append(cc.Changes, ConfChangeSingle{Type: t, NodeID: id})
		b = b[1+k:]
	}
	cl, k := binary.Uvarint(b)
	if k <= 0 || cl != uint64(len(b)-k) {
		return cc, errBadConfChange
	}
	if cl > 0 {
		cc.Context = append([]byte(nil), b[k:]...)
	}
	return cc, nil
}

// confStateFromConfig converts the tracker's config to a ConfState.
func confStateFromConfig(c tracker.Config) ConfState {
	return ConfState{
		Voters:         c.VoterIDs(),
		VotersOutgoing: c.OutgoingIDs(),
		Learners:       c.LearnerIDs(),
		LearnersNext:   c.LearnerNextIDs(),
		AutoLeave:      c.AutoLeave,
	}
}

func configFromConfState(cs ConfState) tracker.Config {
	set := func(ids []uint64) map[uint64]struct{} {
		m := make(map[uint64]struct{}, len(ids))
		for _, id := range ids {
			if id != 0 {
				m[id] = struct{}{}
			}
		}
		return m
	}
	return tracker.Config{
		Voters:       quorum.JointConfig{quorum.MajorityConfig(set(cs.Voters)), quorum.MajorityConfig(set(cs.VotersOutgoing))},
		Learners:     set(cs.Learners),
		LearnersNext: set(cs.LearnersNext),
		AutoLeave:    cs.AutoLeave,
	}
}

// nextConfig computes the configuration after cc, or an error if cc is not
// allowed from cur. Every node applies the same committed entries to the
// same configuration, so refusing here is deterministic cluster-wide.
func nextConfig(cur tracker.Config, cc ConfChange) (tracker.Config, error) {
	if cc.LeaveJoint() {
		if !cur.Joint() {
			return cur, errors.New("raft: leave joint while not joint")
		}
		n := cur.Clone()
		n.Voters[1] = quorum.MajorityConfig{}
		for id := range n.LearnersNext {
			n.Learners[id] = struct{}{}
		}
		n.LearnersNext = map[uint64]struct{}{}
		n.AutoLeave = false
		return n, nil
	}
	if cur.Joint() {
		return cur, errors.New("raft: config change while joint (leave first)")
	}
	n := cur.Clone()
	joint := cc.Transition != ConfChangeTransitionAuto
	if !joint {
		// Auto: single-step if at most one voter changes.
		changed := 0
		for _, c := range cc.Changes {
			_, isVoter := cur.Voters[0][c.NodeID]
			if (c.Type == ConfChangeAddVoter) != isVoter {
				changed++
			}
		}
		joint = changed > 1
	}
	if joint {
		n.Voters[1] = cur.Clone().Voters[0]
		n.AutoLeave = cc.Transition != ConfChangeTransitionJointExplicit
	}
	for _, c := range cc.Changes {
		id := c.NodeID
		if id == 0 {
			return cur, errBadConfChange
		}
		switch c.Type {
		case ConfChangeAddVoter:
			n.Voters[0][id] = struct{}{}
			delete(n.Learners, id)
			delete(n.LearnersNext, id)
		case ConfChangeAddLearner:
			delete(n.Voters[0], id)
			if _, outgoing := n.Voters[1][id]; outgoing {
				// Still votes in the outgoing half until we leave.
				n.LearnersNext[id] = struct{}{}
			} else {
				n.Learners[id] = struct{}{}
			}
		case ConfChangeRemoveNode:
			delete(n.Voters[0], id)
			delete(n.Learners, id)
			delete(n.LearnersNext, id)
		default:
			return cur, errBadConfChange
		}
	}
	if len(n.Voters[0]) == 0 {
		return cur, errors.New("raft: config change removes all voters")
	}
	if !joint {
		// Single-step changes are only safe if the majorities overlap.
		if symDiff(cur.Voters[0], n.Voters[0]) > 1 {
			return cur, fmt.Errorf("raft: single-step change alters more than one voter")
		}
	}
	return n, nil
}

func symDiff(a, b quorum.MajorityConfig) int {
	n := 0
	for id := range a {
		if _, ok := b[id]; !ok {
			n++
		}
	}
	for id := range b {
		if _, ok := a[id]; !ok {
			n++
		}
	}
	return n
}

// sortedIDs returns the members of cfg (voters, learners) sorted.
func sortedIDs(c tracker.Config) []uint64 {
	set := map[uint64]struct{}{}
	for _, h := range c.Voters {
		for id := range h {
			set[id] = struct{}{}
		}
	}
	for id := range c.Learners {
		set[id] = struct{}{}
	}
	for id := range c.LearnersNext {
		set[id] = struct{}{}
	}
	ids := make([]uint64, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
