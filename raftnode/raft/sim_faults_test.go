package raft

import (
	"fmt"
	"strings"

	"github.com/anishathalye/porcupine"
)

// Simulated faults and workload: crashes, membership changes, leadership
// transfers, and clients.

func (c *simCluster) crash(n *simNode) {
	c.tracef("node %d crashes", n.id)
	n.up = false
	n.core = nil
	// Power loss: the disk comes back as it was after the last write that
	// returned, or with part of the one in flight.
	if d, err := n.disk.Crash(c.rng); err != nil {
		c.failf("node %d: disk unusable after crash: %v", n.id, err)
	} else {
		n.disk = d
		c.checkRecovered(n)
	}
	n.model.inFlight = nil
	for id, op := range c.ops {
		if op.node == n.id {
			c.abandon(id)
		}
	}
}

// abandon ends a client op whose outcome is unknown: a Put may or may not
// have taken effect, so it stays in the history with an open end.
func (c *simCluster) abandon(id string) {
	op := c.ops[id]
	delete(c.ops, id)
	c.busy[op.client] = false
	if !op.isGet {
		c.history = append(c.history, porcupine.Operation{
			ClientId: op.client, Input: kvInput{Key: op.key, Value: op.value},
			Call: op.call, Return: 1 << 62,
		})
	}
}

func (c *simCluster) tick() int64 { c.clock++; return c.clock }

func (c *simCluster) serveReads(n *simNode) {
	for ctx, idx := range n.reads {
		if n.applied < idx {
			continue
		}
		delete(n.reads, ctx)
		op, ok := c.ops[ctx]
		if !ok || op.node != n.id {
			continue
		}
		delete(c.ops, ctx)
		c.busy[op.client] = false
		c.history = append(c.history, porcupine.Operation{
			ClientId: op.client, Input: kvInput{Get: true, Key: op.key},
			Output: n.kv[op.key], Call: op.call, Return: c.tick(),
		})
	}
}

func (c *simCluster) startClientOps() {
	for cl := 0; cl < c.opts.clients; cl++ {
		if c.busy[cl] || c.rng.Float64() >= c.opts.clientP {
			continue
		}
		ups := c.upNodes()
		if len(ups) == 0 {
			return
		}
		n := ups[c.rng.IntN(len(ups))]
		if c.rng.IntN(3) != 0 {
			if l := c.leader(); l != nil {
				n = l
			}
		}
		c.opSeq++
		op := &clientOp{
			client: cl, id: fmt.Sprintf("c%d-%d", cl, c.opSeq), node: n.id,
			key: fmt.Sprintf("k%d", c.rng.IntN(3)), started: c.now,
		}
		op.isGet = c.rng.IntN(2) == 0
		op.call = c.tick()
		var err error
		if op.isGet {
			err = n.core.ReadIndex([]byte(op.id))
		} else {
			op.value = fmt.Sprintf("v%d", c.opSeq)
			err = n.core.Propose([]byte("p|" + op.id + "|" + op.key + "|" + op.value))
		}
		if err != nil {
			continue // refused outright: no effect, not in the history
		}
		c.ops[op.id] = op
		c.busy[cl] = true
		c.process(n)
	}
}

// members returns the ids the current leader's config names.
func (c *simCluster) members(l *simNode) (voters, learners []uint64) {
	cs := l.core.ConfState()
	return cs.Voters, cs.Learners
}

func (c *simCluster) maybeChangeMembership() {
	l := c.leader()
	if l == nil {
		return
	}
	voters, learners := c.members(l)
	if l.core.trk.Joint() {
		return
	}
	if c.opts.diskLossP > 0 && !c.restored(l) {
		// A careful operator changes nothing else while a voter that
		// lost its disk is not restored: each change (say, retiring a
		// voter) spends the fault budget the restoration needs.
		return
	}
	var cc ConfChange
	switch {
	case len(learners) > 0:
		// Promote a learner that has caught up (§4.2.1).
		id := learners[0]
		pr := l.core.trk.Progress[id]
		if pr == nil || pr.Match+5 < l.core.log.lastIndex() {
			return
		}
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: id}}
	case len(voters) > c.opts.nodes && c.rng.IntN(2) == 0:
		// Demote a voter to learner through a joint configuration (it
		// keeps voting in the outgoing half until the joint is left).
		id := voters[c.rng.IntN(len(voters))]
		cc.Transition = ConfChangeTransitionJointImplicit
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddLearner, NodeID: id}}
	case len(voters) > c.opts.nodes:
		// Back to size: remove a voter (sometimes the leader itself).
		id := voters[c.rng.IntN(len(voters))]
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeRemoveNode, NodeID: id}}
	case c.rng.IntN(2) == 0:
		// Joint consensus: replace a voter with a fresh node at once.
		old := voters[c.rng.IntN(len(voters))]
		id := c.addNode()
		// The operator learns the new node's incarnation before adding
		// it (raftnode asks the node), so it counts from the start.
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: id, Incarnation: c.nodes[id].disk.Incarnation()}, {Type: ConfChangeRemoveNode, NodeID: old}}
		if c.rng.IntN(2) == 0 {
			cc.Transition = ConfChangeTransitionJointImplicit
		}
	default:
		id := c.addNode()
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddLearner, NodeID: id, Incarnation: c.nodes[id].disk.Incarnation()}}
	}
	_ = l.core.ProposeConfChange(cc)
	c.process(l)
}

func (c *simCluster) addNode() uint64 {
	id := c.nextID
	c.nextID++
	c.start(c.newNode(id))
	return id
}

// retire stops nodes that a node's applied (hence committed) config no
// longer names, as an operator would, so they do not linger as campaigners;
// with zombieP, some linger all the same, as stale peers.
func (c *simCluster) retire(before, after ConfState) {
	still := map[uint64]bool{}
	for _, l := range [][]uint64{after.Voters, after.VotersOutgoing, after.Learners, after.LearnersNext} {
		for _, id := range l {
			still[id] = true
		}
	}
	for _, l := range [][]uint64{before.Voters, before.VotersOutgoing, before.Learners, before.LearnersNext} {
		for _, id := range l {
			if n := c.nodes[id]; n != nil && !still[id] && !n.removed {
				n.removed = true
				if n.up && c.opts.zombieP > 0 && c.rng.Float64() < c.opts.zombieP {
					c.tracef("node %d removed, runs on as a stale peer", n.id)
					n.zombie = true
					continue
				}
				if n.up {
					c.crash(n)
				}
			}
		}
	}
}

func (c *simCluster) chaos() {
	if c.rng.Float64() < c.opts.partitionP {
		c.changePartition()
	}
	if c.opts.diskLossP > 0 && c.rng.Float64() < c.opts.diskLossP {
		c.loseDisk()
	}
	if c.rng.Float64() < c.opts.crashP {
		ups := c.upNodes()
		if len(ups) > 0 {
			c.crash(ups[c.rng.IntN(len(ups))])
		}
	}
	for _, id := range c.sortedIDs() {
		n := c.nodes[id]
		if !n.up && !n.removed && c.rng.Float64() < 0.05 {
			c.start(n)
		}
	}
	if c.rng.Float64() < c.opts.confChangeP {
		c.maybeChangeMembership()
	}
	if c.rng.Float64() < c.opts.transferP {
		if l := c.leader(); l != nil {
			voters, _ := c.members(l)
			_ = l.core.TransferLeadership(voters[c.rng.IntN(len(voters))])
			c.process(l)
		}
	}
}

// loseDisk takes a node's disk away: wiped (the node comes back empty,
// with a new incarnation) or damaged (it lost some of its newest entries,
// which its storage detects, so it comes back with a new incarnation). The
// node may be up (it dies) or down. Only disks the cluster can restore by
// itself are lost (mayLoseDisk): safety must hold whatever is lost, but a
// majority without its disks can never elect again, which the liveness
// check would rightly report.
func (c *simCluster) loseDisk() {
	ids := c.sortedIDs()
	n := c.nodes[ids[c.rng.IntN(len(ids))]]
	if n.removed || !c.mayLoseDisk(n) {
		return
	}
	if n.up {
		c.crash(n)
	}
	if c.err != nil {
		return
	}
	if c.rng.IntN(2) == 0 {
		c.tracef("node %d loses its disk", n.id)
		n.disk = c.emptyDisk(n.id)
		n.model = diskModel{first: 1}
		c.disk.Wipes++
		return
	}
	before := n.disk.Incarnation()
	d, err := n.disk.Damage(c.rng)
	if err != nil {
		c.failf("node %d: disk unusable after damage: %v", n.id, err)
		return
	}
	n.disk = d
	c.tracef("node %d disk damaged: inc %x -> %x", n.id, before, d.Incarnation())
	c.disk.Damaged++
	got, err := c.diskView(d)
	if err != nil {
		c.failf("node %d unreadable after damage: %v", n.id, err)
		return
	}
	if d.Incarnation() == before {
		// Nothing it may have acknowledged may be missing.
		if !got.matches(&n.model) {
			c.failf("node %d lost acknowledged state to disk damage but kept its incarnation %x", n.id, before)
		}
		return
	}
	n.model = got.model()
}

// mayLoseDisk reports whether the cluster can restore n if its disk goes:
// a leader exists with no configuration change under way, every member is
// up and has applied the leader's configuration (a laggard still counting
// votes in an older one, say a joint one whose outgoing voters the
// simulation already retired, would need more than a minority), and
// without n the configuration keeps a majority of voters whose disks it
// counts.
func (c *simCluster) mayLoseDisk(n *simNode) bool {
	l := c.leader()
	if l == nil || l.core.trk.Joint() || l.core.pendingConfIndex > l.core.log.applied {
		return false
	}
	for _, id := range l.core.trk.IDs() {
		m := c.nodes[id]
		if m == nil || !m.up || m.core.confIndex != l.core.confIndex {
			return false
		}
	}
	cfg := l.core.trk.Config
	if _, voter := cfg.Voters[0][n.id]; !voter {
		return true
	}
	live := 0
	for id := range cfg.Voters[0] {
		if m := c.nodes[id]; id != n.id && m != nil && !m.removed && cfg.Counts(id, m.disk.Incarnation()) {
			live++
		}
	}
	return live >= len(cfg.Voters[0])/2+1
}

// awaitRestored: once healed, every voter that lost its disk must be a
// voter again, counted with its new incarnation, without any operator
// step (and every other member keeps its place).
func (c *simCluster) awaitRestored() error {
	deadline := c.now + c.opts.livenessTick
	for c.now < deadline && c.err == nil {
		if l := c.leader(); l != nil && c.restored(l) {
			return nil
		}
		c.step()
	}
	if c.err != nil {
		return c.err
	}
	var st []string
	if l := c.leader(); l != nil {
		cs := l.core.ConfState()
		st = append(st, fmt.Sprintf("leader %d config %+v", l.id, cs))
		for _, id := range c.sortedIDs() {
			if n := c.nodes[id]; !n.removed {
				st = append(st, fmt.Sprintf("%d: inc %x progress %v", id, n.disk.Incarnation(), l.core.trk.Progress[id]))
			}
		}
	}
	return fmt.Errorf("liveness: members not restored within %d ticks of healing: %s", c.opts.livenessTick, strings.Join(st, "; "))
}

// restored reports whether l's configuration restores everyone: nobody
// waits in AutoPromote and every voter counts the disk its node has now.
func (c *simCluster) restored(l *simNode) bool {
	cfg := l.core.trk.Config
	if len(cfg.AutoPromote) > 0 || cfg.Joint() {
		return false
	}
	for id := range cfg.Voters[0] {
		if n := c.nodes[id]; n == nil || !cfg.Counts(id, n.disk.Incarnation()) {
			return false
		}
	}
	return true
}
