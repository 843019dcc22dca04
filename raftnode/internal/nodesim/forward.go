package nodesim

import (
	"errors"

	"github.com/capraft/capraft/raftnode/driver"
)

// Forwarding through followers, as the key-value service does it
// (raftnode/services: execute, forward): a write that reaches a follower
// which knows a leader is handed to that leader over the network; the
// leader proposes it to its own driver, or answers ErrNotLeader if it no
// longer leads (a forwarded write is never handed on again); the answer
// travels back to the follower, which answers the client. Either leg
// may be lost or cut: a call lost after it was sent has an unknown
// outcome (the follower says so), and a follower that crashed answers
// nothing (the client's attempt times out).
//
// The services themselves are not run: their request layer waits on the
// wall clock (time.AfterFunc, timers in the leader-call loop), runs the
// hand-over on goroutines and forwards over Cap'n Proto capabilities,
// none of which a single-threaded simulation on a virtual clock can
// drive without a clock and transport seam in the services. What is
// simulated here is the protocol they follow, over the real drivers.

// forwarded is a write on its way to the leader and back.
type forwarded struct {
	data  []byte
	reply func(driver.Result) // the follower's answer to its client
	// fromEpoch is the follower's epoch, toEpoch the leader's.
	fromEpoch, toEpoch int
}

// errForwardLost is the follower's answer when its call to the leader
// failed after it was sent: the write may or may not have been applied.
var errForwardLost = errors.Join(driver.ErrOutcomeUnknown, errors.New("the call to the leader was lost"))

// propose hands a client's write to node n: proposed there if n leads
// or knows no leader (its driver answers), forwarded to the leader n
// knows otherwise.
func (c *cluster) propose(n *node, data []byte, reply func(driver.Result)) {
	lead := n.d.Leader()
	if n.d.IsLeader() || lead == 0 || lead == n.id {
		n.d.Propose(data, reply)
		return
	}
	c.stats.Forwarded++
	c.event("node %d forwards a write to node %d", n.id, lead)
	c.forwardLeg(&netEvent{kind: evFwd, from: n.id, to: lead, epoch: n.epoch, fwd: &forwarded{data: data, reply: reply, fromEpoch: n.epoch}})
}

// forwardLeg puts one leg of a forwarded write on the network, lost at
// random while the network is lossy.
func (c *cluster) forwardLeg(ev *netEvent) {
	if c.lossy && c.rng.Float64() < c.opts.DropP {
		ev.err = errForwardLost
	}
	c.schedule(ev, c.delay())
}

func (c *cluster) deliverForwarded(ev *netEvent) {
	f := ev.fwd
	follower := c.current(ev.from, f.fromEpoch)
	if ev.kind == evFwdReply {
		follower = c.current(ev.to, f.fromEpoch)
	}
	if follower == nil {
		return // the follower crashed: its client hears nothing
	}
	if ev.err != nil || c.cut[[2]uint64{ev.from, ev.to}] {
		c.event("forwarded write %d>%d lost", ev.from, ev.to)
		c.dirty = true
		f.reply(driver.Result{Err: errForwardLost})
		return
	}
	if ev.kind == evFwdReply {
		c.dirty = true
		f.reply(ev.res)
		return
	}
	l := c.reachable(ev.from, ev.to)
	if l == nil {
		// Refused before it was sent (the leader cannot be reached):
		// nothing happened.
		c.dirty = true
		f.reply(driver.Result{Err: driver.ErrNotLeader})
		return
	}
	back := c.later(l, func(r driver.Result) {
		c.forwardLeg(&netEvent{kind: evFwdReply, from: l.id, to: follower.id, epoch: l.epoch, fwd: f, res: r})
	})
	if !l.d.IsLeader() {
		back(driver.Result{Err: driver.ErrNotLeader})
		return
	}
	c.dirty = true
	l.d.Propose(f.data, back)
}
