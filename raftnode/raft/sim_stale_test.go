package raft

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// Stale and buggy peers in the simulation. Peers are authenticated in a
// real cluster, but they can still be stale or buggy, and the core must
// not let them disturb it (see "Who is heard" in doc.go):
//
//   - zombies (zombieP): nodes removed from the configuration that keep
//     running on what they last knew. They campaign with stale logs and
//     configurations, answer, and forward reads, as removed servers that
//     never learned of their removal do;
//   - forged messages (forgeP): a member that does not lead a node sends
//     it a TimeoutNow, which would make it depose its leader, or a read
//     index answer of 0 for a read it waits for, which would serve that
//     read stale; or the node's leader sends one in another term. Or a
//     node outside the configuration (a zombie, or a stranger that never
//     was a member) sends responses or transfer vote requests in a later
//     term, which would depose a leader. Buggy peers stay buggy after the
//     network heals, so these go on while liveness is checked;
//   - snapshots damaged on the way (damageSnapP, sim_snapshot_test.go):
//     most keep the snapshot decodable (a digit changed), so only the
//     receiver's checksum tells.
//
// The checkers are the usual ones (a stale read fails linearizability, a
// damaged snapshot installed makes replicas disagree, a disrupted cluster
// fails liveness), plus awaitQuiet: once healed and live, the cluster
// keeps its leader and term while the stale and buggy peers go on.

// heardStats counts what stale and buggy peers sent and what Step made
// of it, to show that the configurations exercise the rules.
type heardStats struct {
	forged, damagedSnaps                   int
	notMember, notFromLeader, snapsRefused int
	forgedHeard                            int // forged messages Step took: must stay 0
}

// count records why Step refused a message, if it did.
func (h *heardStats) count(err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrNotMember):
		h.notMember++
	case errors.Is(err, ErrNotFromLeader):
		h.notFromLeader++
	}
}

// forge has a buggy peer send a running node a message it may not send
// (see the file comment).
func (c *simCluster) forge() {
	ups := c.upNodes()
	if len(ups) < 2 {
		return
	}
	n := ups[c.rng.IntN(len(ups))]
	var m Message
	var ok bool
	if c.rng.IntN(2) == 0 {
		m, ok = c.forgeLeaderOnly(n, ups)
	} else {
		m, ok = c.forgeFromNonMember(n)
	}
	if !ok {
		return
	}
	c.tracef("forged %s", m)
	c.heard.forged++
	err := n.core.Step(m)
	if err == nil {
		c.heard.forgedHeard++
	}
	c.heard.count(err)
	c.process(n)
}

// forgeLeaderOnly: a member that does not lead n, or n's leader in
// another term, sends n a TimeoutNow or, for a read n waits for, a read
// index of 0.
func (c *simCluster) forgeLeaderOnly(n *simNode, ups []*simNode) (Message, bool) {
	from, term := ups[c.rng.IntN(len(ups))].id, n.core.term
	if from == n.id || from == n.core.lead {
		if n.core.lead == 0 || n.core.lead == n.id {
			return Message{}, false
		}
		// Its own leader, in another term.
		from = n.core.lead
		if term > 1 && c.rng.IntN(2) == 0 {
			term--
		} else {
			term++
		}
	}
	m := Message{Type: MsgTimeoutNow, From: from, To: n.id, Term: term, Incarnation: c.nodes[from].disk.Incarnation()}
	if ctx, ok := c.awaitedRead(n); ok && c.rng.IntN(2) == 0 {
		m.Type, m.Index, m.Context = MsgReadIndexResp, 0, []byte(ctx)
	}
	return m, true
}

// strangerID is a node that was never a member (a misconfigured one).
const strangerID = 1 << 20

// forgeFromNonMember: a node outside n's configuration (a zombie, or a
// stranger) sends n, in a later term, a response, or a vote request with
// the transfer flag (which bypasses leader stickiness) and a log that
// ends where n's configuration begins.
func (c *simCluster) forgeFromNonMember(n *simNode) (Message, bool) {
	from := uint64(strangerID)
	if zs := c.zombies(); len(zs) > 0 && c.rng.IntN(2) == 0 {
		from = zs[c.rng.IntN(len(zs))]
	}
	if _, member := n.core.trk.Progress[from]; member || from == n.id {
		return Message{}, false
	}
	m := Message{From: from, To: n.id, Term: n.core.term + 1 + uint64(c.rng.IntN(3)), Incarnation: 1}
	switch c.rng.IntN(3) {
	case 0:
		m.Type = MsgHeartbeatResp
	case 1:
		m.Type, m.Reject, m.Index = MsgAppResp, true, n.core.log.lastIndex()
	default:
		m.Type, m.Transfer, m.LastLogIndex, m.LastLogTerm = MsgVote, true, n.core.confIndex, 1
	}
	return m, true
}

// zombies returns the ids of the removed nodes that lived on.
func (c *simCluster) zombies() []uint64 {
	var ids []uint64
	for _, id := range c.sortedIDs() {
		if c.nodes[id].zombie {
			ids = append(ids, id)
		}
	}
	return ids
}

// awaitedRead returns the id of a read n asked a read index for and has
// not been answered, if any (the lowest, so seeds replay).
func (c *simCluster) awaitedRead(n *simNode) (string, bool) {
	var ids []string
	for id, op := range c.ops {
		if _, answered := n.reads[id]; op.node == n.id && op.isGet && !answered {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "", false
	}
	return slices.Min(ids), true
}

// damageData returns a damaged copy of a snapshot's data: usually a
// digit turned into another, which keeps the snapshot decodable so that
// only the checksum tells, else a flipped bit.
func (c *simCluster) damageData(data []byte) []byte {
	if len(data) == 0 {
		return data
	}
	d := bytes.Clone(data)
	i := c.rng.IntN(len(d))
	bit := byte(1) << c.rng.IntN(8)
	if c.rng.IntN(4) != 0 {
		for k := range d {
			if j := (i + k) % len(d); d[j] >= '0' && d[j] <= '9' {
				i, bit = j, 0
				d[j] = '0' + (d[j]-'0'+1+byte(c.rng.IntN(9)))%10
				break
			}
		}
	}
	d[i] ^= bit
	c.heard.damagedSnaps++
	c.tracef("damaged a snapshot's data at byte %d", i)
	return d
}

// TestSimulationExercisesStalePeers guards the stale-peer configurations
// against doing nothing: removed nodes must live on, Step must drop their
// messages and forged ones, receivers must refuse damaged snapshots, and
// every forged message must be refused.
func TestSimulationExercisesStalePeers(t *testing.T) {
	for _, name := range []string{"n=5,stale-peers", "n=3,stale-peers,no-prevote", "n=5,stale-peers,disk-loss"} {
		var total heardStats
		zombies := 0
		for seed := int64(0); seed < 40; seed++ {
			c := newSimCluster(seed, simConfig(name))
			if err := c.run(); err != nil {
				t.Fatalf("%s seed %d: %v", name, seed, err)
			}
			zombies += len(c.zombies())
			h := c.heard
			total.forged += h.forged
			total.forgedHeard += h.forgedHeard
			total.damagedSnaps += h.damagedSnaps
			total.notMember += h.notMember
			total.notFromLeader += h.notFromLeader
			total.snapsRefused += h.snapsRefused
		}
		t.Logf("%s: zombies=%d %+v", name, zombies, total)
		if zombies < 10 || total.forged < 100 || total.notMember < 50 || total.notFromLeader < 50 ||
			total.damagedSnaps < 5 || total.snapsRefused < 5 {
			t.Errorf("%s: too quiet: zombies=%d %+v", name, zombies, total)
		}
		if total.forgedHeard != 0 {
			t.Errorf("%s: Step took %d forged messages", name, total.forgedHeard)
		}
	}
}

// awaitQuiet: after healing, with everything live and no membership
// change under way, the stale and buggy peers (which go on) must not make
// the members elect again: for quietTicks the leader keeps leading and no
// member goes past its term.
// A zombie campaigning, or a forged TimeoutNow obeyed, would break that.
func (c *simCluster) awaitQuiet() error {
	// A membership change still under way may rightly move leadership
	// (a leader that demoted itself steps down): let it finish first.
	settled := func(l *simNode) bool {
		return l != nil && !l.core.trk.Joint() && l.core.pendingConfIndex <= l.core.log.applied
	}
	for end := c.now + c.opts.livenessTick; !settled(c.leader()) && c.now < end && c.err == nil; {
		c.step()
	}
	l := c.leader()
	if !settled(l) {
		return errors.New("stability: no leader with its configuration settled after healing")
	}
	term := l.core.term
	for end := c.now + c.opts.quietTicks; c.now < end && c.err == nil; {
		c.step()
		for id := range l.core.trk.Progress {
			if n := c.nodes[id]; n != nil && n.up && n.core.term > term {
				return fmt.Errorf("stability: member %d went past leader %d's term %d to %d, %d ticks after healing, with no fault but stale and buggy peers",
					id, l.id, term, n.core.term, c.now-end+c.opts.quietTicks)
			}
		}
		if c.leader() != l || l.core.term != term {
			return fmt.Errorf("stability: leader %d lost its leadership in term %d with no fault but stale and buggy peers", l.id, term)
		}
	}
	return c.err
}
