package nodesim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
)

// Membership changes, as an operator makes them: the leader removes a
// member (any, itself included) through ChangeMembership; once the
// removal is applied, the removed node stops by itself (it applies its
// own removal, or a voter of a newer configuration tells it it is no
// longer a member), or lingers as a stale peer if cut off. Later the
// operator stops it, empties its data directory, starts it afresh (no
// bootstrap: it waits to be contacted) and adds it back: as a learner
// that the leader promotes once it has caught up, or as a plain learner
// that serves for a while before the operator promotes it. After
// healing, every node removed is added back and every learner promoted.
//
// A stepped driver's ChangeMembership is called with a cancelled
// context: the change is proposed on the loop at once, and the call
// returns without waiting for its outcome, which the simulator reads
// from the leader's configuration.

// membership is a node's place in the simulated operator's plan.
type membership struct {
	// removalAsked: a removal of this node was proposed, at askedAt;
	// everAsked: ever (one may commit late), so stopping with
	// driver.ErrRemoved is expected.
	removalAsked, everAsked bool
	// out: its removal was applied; readding: it was started afresh
	// and is being added back (askedAt: when the addition was last
	// proposed). readdAt: when the operator starts adding it back.
	out, readding    bool
	readdAt, askedAt time.Time
	// asLearner: it is added back as a plain learner (no automatic
	// promotion); learner: the learner is in, and the operator promotes
	// it at promoteAt.
	asLearner, learner bool
	promoteAt          time.Time
}

// cancelledCtx makes a stepped driver's blocking operations return as
// soon as they have started.
func cancelledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// leaderConfig returns the leader and its configuration.
func (c *cluster) leaderConfig() (*node, raft.Status, bool) {
	l := c.leader()
	if l == nil {
		return nil, raft.Status{}, false
	}
	st, err := l.d.Status(context.Background())
	if err != nil || st.Role != raft.StateLeader {
		return nil, raft.Status{}, false
	}
	return l, st.Status, true
}

// counted reports whether cs counts n as a voter with the storage it
// has.
func counted(cs raft.ConfState, n *node) bool {
	inc, ok := cs.IncarnationOf(n.id)
	return ok && slices.Contains(cs.Voters, n.id) && n.store != nil && inc == n.store.Incarnation()
}

func inConfig(cs raft.ConfState, id uint64) bool {
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		if slices.Contains(ids, id) {
			return true
		}
	}
	return false
}

// stable reports whether cs holds every node as a voter and nothing is
// under way (no learner, no joint configuration).
func (c *cluster) stable(cs raft.ConfState) bool {
	return len(cs.Voters) == len(c.nodes) && len(cs.Learners) == 0 && len(cs.VotersOutgoing) == 0 &&
		len(cs.LearnersNext) == 0 && len(cs.AutoPromote) == 0
}

// proposeRemoval asks the leader to remove a random member, when the
// configuration is stable.
func (c *cluster) proposeRemoval() {
	l, st, ok := c.leaderConfig()
	if !ok || l.paused() || !c.allCounted(st) {
		return
	}
	x := c.nodes[c.rng.IntN(len(c.nodes))]
	cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeRemoveNode, NodeID: x.id}}}
	err := l.d.ChangeMembership(cancelledCtx(), cc)
	c.dirty = true
	c.event("node %d proposes removing node %d: %v", l.id, x.id, err)
	if errors.Is(err, driver.ErrChangeOutcomeUnknown) {
		c.stats.Removals++
		x.m.removalAsked, x.m.everAsked, x.m.askedAt = true, true, c.now
	}
}

// stepMembership follows the removals and additions under way.
func (c *cluster) stepMembership() {
	if !slices.ContainsFunc(c.nodes, func(n *node) bool { return n.m != membership{} }) {
		return // nothing under way (and no leader's status to read)
	}
	l, st, ok := c.leaderConfig()
	for _, n := range c.nodes {
		m := &n.m
		switch {
		case m.removalAsked && !m.out && ok && c.stable(st.Config) && c.now.Sub(m.askedAt) > 4*requestTimeout:
			// Not applied (a new leader dropped it, say): the
			// operator gives up on it.
			m.removalAsked = false
		case m.removalAsked && !m.out && ok && !inConfig(st.Config, n.id):
			m.out, m.readding = true, false
			m.readdAt = c.now.Add(c.between(50*time.Millisecond, 500*time.Millisecond))
			if !c.lossy {
				m.readdAt = c.now
			}
			c.event("node %d is out of the configuration %v", n.id, st.Config)
		case m.out && !m.readding && !c.now.Before(m.readdAt):
			// The operator stops it, empties its data directory and
			// starts it afresh; the leader then adds it.
			if n.up {
				c.crash(n, "removed: the operator stops it and empties its data directory")
			}
			n.fs = c.newDisk()
			m.readding = true
			m.asLearner = c.rng.IntN(2) == 0
			n.downUntil = c.now
			if err := n.openStore(); err != nil {
				c.failf("node %d: open an empty data directory: %v", n.id, err)
				return
			}
			if err := n.start(nil); err != nil {
				c.failf("%v", err)
				return
			}
		case m.readding && ok && n.up && counted(st.Config, n):
			// A voter again, with its new storage (a leader's stale
			// configuration may still hold the old one).
			c.event("node %d is back in the configuration", n.id)
			*m = membership{everAsked: true}
		case m.readding && m.asLearner && !m.learner && ok && n.up && slices.Contains(st.Config.Learners, n.id):
			// In as a learner: it serves reads, counts towards no
			// quorum, and is promoted later.
			m.learner = true
			m.promoteAt = c.now.Add(c.between(50*time.Millisecond, time.Second))
			if !c.lossy {
				m.promoteAt = c.now
			}
			c.event("node %d is a learner", n.id)
		case m.learner && ok && !l.paused() && !c.now.Before(m.promoteAt) && c.now.Sub(m.askedAt) >= requestTimeout:
			m.askedAt = c.now
			cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddVoter, NodeID: n.id}}}
			err := l.d.ChangeMembership(cancelledCtx(), cc)
			c.dirty = true
			c.event("node %d proposes promoting learner %d: %v", l.id, n.id, err)
		case m.readding && !m.learner && ok && !l.paused() && (m.askedAt.IsZero() || c.now.Sub(m.askedAt) >= requestTimeout):
			m.askedAt = c.now
			cc := raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddLearner, NodeID: n.id, AutoPromote: !m.asLearner}},
				Context: []byte(fmt.Sprintf("n%d", n.id))}
			err := l.d.ChangeMembership(cancelledCtx(), cc)
			c.dirty = true
			c.event("node %d proposes adding node %d back: %v", l.id, n.id, err)
		}
	}
}

// removedStop handles a node whose driver stopped with ErrRemoved: the
// removal of a member the configuration still holds is a bug.
func (c *cluster) removedStop(n *node) {
	if !n.m.everAsked {
		c.failf("node %d stopped as removed, but no removal of it was ever proposed: %v", n.id, n.d.Err())
		return
	}
	stopErr := n.d.Err()
	c.event("node %d stopped: %v", n.id, stopErr)
	if n.armed {
		// Power fails as it stops (its storage would fail to close).
		c.crash(n, "removed, and power fails as it stops")
	} else {
		// The process exits cleanly: the operator adds it back later.
		c.abortTransfers(n)
		n.up = false
		if err := n.store.Close(); err != nil {
			c.failf("node %d: close its storage: %v", n.id, err)
		}
		n.d, n.store, n.clock, n.bg = nil, nil, nil, nil
	}
	if n.m.readding {
		// Started afresh and being added back, it catches up from the
		// leader, and may replay its old removal on the way (from a
		// snapshot older than the removal): that removal was of its
		// earlier storage, not of this one, and must not stop it.
		c.failf("node %d, started afresh and being added back, stopped as removed: %v", n.id, stopErr)
		return
	}
	if !n.m.out {
		// Its removal was applied before the simulated operator saw it
		// out: the operator starts over with a fresh disk.
		n.m = membership{everAsked: true, out: true}
		n.m.readdAt = c.now.Add(c.between(50*time.Millisecond, 500*time.Millisecond))
		if !c.lossy {
			n.m.readdAt = c.now
		}
	}
}

// allCounted reports whether st, the leader's status, counts every node
// as a voter with the storage it has, with no change under way and none
// pending, and every node up with the same configuration: the only time
// the simulated operator removes a node, and a disk may be lost (the
// rest then count as a majority, and a node that lost its disk is
// restored before anything else changes).
func (c *cluster) allCounted(st raft.Status) bool {
	if st.Commit != st.LastIndex || !c.stable(st.Config) {
		return false
	}
	want := fmt.Sprint(st.Config)
	for _, m := range c.nodes {
		if !m.up || m.armed || m.m.out || m.m.removalAsked || !counted(st.Config, m) {
			return false
		}
		ms, err := m.d.Status(context.Background())
		if err != nil || fmt.Sprint(ms.Config) != want {
			return false
		}
	}
	return true
}

// watchDemotions notices a leader demoting a voter whose storage was
// never replaced (the same incarnation it was counted with): a leader
// must demote only on the evidence of an answer from other storage. It
// compares one leader's views within its term only: a new leader whose
// configuration has not yet applied a promotion another leader made is
// behind, not demoting.
// Safety does not suffer (the voter is restored once caught up), but the
// cluster loses a vote meanwhile, so it is counted (Stats), not failed.
func (c *cluster) watchDemotions() {
	l := c.leader()
	if l == nil {
		return
	}
	st, err := l.d.Status(context.Background())
	if err != nil || st.Role != raft.StateLeader {
		return
	}
	for _, n := range c.nodes {
		switch {
		case !n.up || n.store == nil:
		case counted(st.Config, n):
			n.countedInc, n.demoted = n.store.Incarnation(), false
			n.countedBy = leaderTerm{l.id, st.Term}
		case !n.demoted && n.countedInc == n.store.Incarnation() && n.countedBy == (leaderTerm{l.id, st.Term}) &&
			slices.Contains(st.Config.Learners, n.id) &&
			slices.Contains(st.Config.AutoPromote, n.id):
			n.demoted = true
			c.stats.SpuriousDemotions++
			c.event("node %d, counted as a voter with incarnation %016x which it still has, was demoted by leader %d",
				n.id, n.countedInc, l.id)
		}
	}
}
