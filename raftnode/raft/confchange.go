package raft

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/capraft/capraft/raftnode/raft/internal/quorum"
	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
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
	// Incarnation, if non-zero, is the incarnation of the node's storage
	// that the configuration records for it: for a voter, the only one
	// whose votes and acknowledgements count. ProposeConfChange fills it
	// in for a voter from what the leader last heard from the node. A
	// voter's recorded incarnation cannot be replaced in place: demote it
	// to learner first (the leader does that by itself, see AutoPromote).
	// On ConfChangeRemoveNode it names the storage removed (filled in
	// the same way): a node that applies its own removal under another
	// incarnation was started afresh and added back since, and replays
	// a removal that was not of its storage.
	Incarnation uint64
	// AutoPromote, on ConfChangeAddLearner, asks the leader to promote
	// the learner to voter, recording the incarnation it answers with,
	// as soon as it has caught up: for a voter demoted because its
	// storage was replaced, and for a voter added before it has the log
	// (it counts towards no quorum until it has).
	AutoPromote bool
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

// Encoding versions of a ConfChange: version 1 (type, node id per change)
// is still read; version 2 adds each change's incarnation and flags.
const (
	confChangeV1      = 1
	confChangeVersion = 2

	confChangeFlagAutoPromote = 1
)

// Marshal encodes cc for an entry's Data.
func (cc ConfChange) Marshal() []byte {
	b := make([]byte, 0, 8+len(cc.Changes)*22+len(cc.Context))
	b = append(b, confChangeVersion, byte(cc.Transition))
	b = binary.AppendUvarint(b, uint64(len(cc.Changes)))
	for _, c := range cc.Changes {
		b = append(b, byte(c.Type))
		b = binary.AppendUvarint(b, c.NodeID)
		b = binary.AppendUvarint(b, c.Incarnation)
		var flags byte
		if c.AutoPromote {
			flags |= confChangeFlagAutoPromote
		}
		b = append(b, flags)
	}
	b = binary.AppendUvarint(b, uint64(len(cc.Context)))
	return append(b, cc.Context...)
}

var errBadConfChange = errors.New("raft: malformed conf change")

// UnmarshalConfChange decodes an EntryConfChange's Data. It never panics
// on malformed input.
func UnmarshalConfChange(b []byte) (ConfChange, error) {
	var cc ConfChange
	if len(b) < 2 || (b[0] != confChangeVersion && b[0] != confChangeV1) || b[1] > byte(ConfChangeTransitionJointExplicit) {
		return cc, errBadConfChange
	}
	v2 := b[0] == confChangeVersion
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
		c := ConfChangeSingle{Type: ConfChangeType(b[0])}
		if c.Type < ConfChangeAddVoter || c.Type > ConfChangeRemoveNode {
			return cc, errBadConfChange
		}
		b = b[1:]
		if c.NodeID, k = binary.Uvarint(b); k <= 0 || c.NodeID == 0 {
			return cc, errBadConfChange
		}
		b = b[k:]
		if v2 {
			if c.Incarnation, k = binary.Uvarint(b); k <= 0 || len(b) < k+1 || b[k]&^confChangeFlagAutoPromote != 0 {
				return cc, errBadConfChange
			}
			c.AutoPromote = b[k]&confChangeFlagAutoPromote != 0
			b = b[k+1:]
		}
		cc.Changes = append(cc.Changes, c)
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
	cs := ConfState{
		Voters:         c.VoterIDs(),
		VotersOutgoing: c.OutgoingIDs(),
		Learners:       c.LearnerIDs(),
		LearnersNext:   c.LearnerNextIDs(),
		AutoLeave:      c.AutoLeave,
		AutoPromote:    c.AutoPromoteIDs(),
	}
	if len(c.Incarnations) > 0 {
		cs.Incarnations = make([]MemberIncarnation, 0, len(c.Incarnations))
		for id, inc := range c.Incarnations {
			cs.Incarnations = append(cs.Incarnations, MemberIncarnation{ID: id, Incarnation: inc})
		}
		slices.SortFunc(cs.Incarnations, func(a, b MemberIncarnation) int { return cmp.Compare(a.ID, b.ID) })
	}
	return cs
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
	c := tracker.Config{
		Voters:       quorum.JointConfig{quorum.MajorityConfig(set(cs.Voters)), quorum.MajorityConfig(set(cs.VotersOutgoing))},
		Learners:     set(cs.Learners),
		LearnersNext: set(cs.LearnersNext),
		AutoLeave:    cs.AutoLeave,
		Incarnations: make(map[uint64]uint64, len(cs.Incarnations)),
		AutoPromote:  map[uint64]struct{}{},
	}
	member := func(id uint64) bool {
		_, v0 := c.Voters[0][id]
		_, v1 := c.Voters[1][id]
		_, l := c.Learners[id]
		_, ln := c.LearnersNext[id]
		return v0 || v1 || l || ln
	}
	// Entries about non-members would outlive their removal; drop them.
	for _, mi := range cs.Incarnations {
		if mi.ID != 0 && mi.Incarnation != 0 && member(mi.ID) {
			c.Incarnations[mi.ID] = mi.Incarnation
		}
	}
	for _, id := range cs.AutoPromote {
		if _, l := c.Learners[id]; l {
			c.AutoPromote[id] = struct{}{}
		}
	}
	return c
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
		for id := range n.Incarnations {
			if _, l := n.Learners[id]; !l && !n.Voters.Contains(id) {
				delete(n.Incarnations, id) // removed while joint
			}
		}
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
			if rec, ok := n.Incarnations[id]; ok && c.Incarnation != 0 && rec != c.Incarnation && n.Voters.Contains(id) {
				// The recorded incarnation is the one whose votes may
				// have elected leaders and whose acks committed
				// entries; swapping it in place would let a voter
				// that forgot them count as if it remembered.
				return cur, fmt.Errorf("raft: voter %d counts incarnation %x; demote it to learner before recording incarnation %x", id, rec, c.Incarnation)
			}
			n.Voters[0][id] = struct{}{}
			delete(n.Learners, id)
			delete(n.LearnersNext, id)
			delete(n.AutoPromote, id)
			setIncarnation(n.Incarnations, id, c.Incarnation)
		case ConfChangeAddLearner:
			delete(n.Voters[0], id)
			if _, outgoing := n.Voters[1][id]; outgoing {
				// Still votes in the outgoing half until we leave.
				n.LearnersNext[id] = struct{}{}
			} else {
				n.Learners[id] = struct{}{}
			}
			delete(n.AutoPromote, id)
			if _, outgoing := n.Voters[1][id]; !outgoing {
				if c.AutoPromote {
					n.AutoPromote[id] = struct{}{}
				}
				// A learner's incarnation counts for nothing; record
				// what is known of it for its later promotion.
				setIncarnation(n.Incarnations, id, c.Incarnation)
			}
		case ConfChangeRemoveNode:
			delete(n.Voters[0], id)
			delete(n.Learners, id)
			delete(n.LearnersNext, id)
			delete(n.AutoPromote, id)
			if _, outgoing := n.Voters[1][id]; !outgoing {
				delete(n.Incarnations, id)
			}
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

// setIncarnation records inc for id; 0 keeps what is recorded.
func setIncarnation(incs map[uint64]uint64, id, inc uint64) {
	if inc != 0 {
		incs[id] = inc
	}
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
