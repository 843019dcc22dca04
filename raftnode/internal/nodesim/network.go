package nodesim

import (
	"container/heap"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
)

// The simulated network: each node's driver.Transport, and the events
// that carry messages, snapshot transfers and their reports between nodes.

// transport is one node's simulated driver.Transport.
type transport struct {
	c     *cluster
	from  uint64
	epoch int
}

// Send puts copies of msgs on the network (once its slow write is
// done, if its node waits for one: slowdisk.go).
func (t *transport) Send(msgs []raft.Message) {
	n := t.c.nodes[t.from-1]
	for i := range msgs {
		m := copyMessage(msgs[i])
		if n.epoch == t.epoch && n.up && n.holding() {
			n.held = append(n.held, func() { t.c.send(t.from, t.epoch, m) })
			continue
		}
		t.c.send(t.from, t.epoch, m)
	}
}

// SetPeer and RemovePeer: the simulated network knows every node.
func (t *transport) SetPeer(uint64, string) {}

// RemovePeer does nothing (see SetPeer).
func (t *transport) RemovePeer(uint64) {}

// CancelSnapshots abandons this node's transfers under way.
func (t *transport) CancelSnapshots() {
	for _, ev := range t.c.net {
		if ev.kind == evSnap && ev.from == t.from {
			ev.cancelled = true
		}
	}
	for _, tr := range t.c.transfers {
		if tr.from == t.from {
			tr.cancelled = true
		}
	}
}

func copyMessage(m raft.Message) raft.Message {
	if len(m.Entries) > 0 {
		ents := make([]raft.Entry, len(m.Entries))
		for i, e := range m.Entries {
			e.Data = slices.Clone(e.Data)
			ents[i] = e
		}
		m.Entries = ents
	}
	if m.Snapshot != nil {
		sn := *m.Snapshot
		m.Snapshot = &sn
	}
	return m
}

// Network events.
const (
	evMsg       = iota // a message arrives
	evSnap             // a snapshot transfer starts
	evSnapChunk        // a snapshot transfer's next write
	evSnapDone         // a snapshot transfer's outcome reaches its sender
	evNotMember        // a receiver's NotMember word reaches the sender
	evFwd              // a write a follower forwards reaches the leader
	evFwdReply         // the leader's answer to a forwarded write reaches the follower
)

type netEvent struct {
	at        time.Time
	seq       uint64
	kind      int
	from, to  uint64
	epoch     int // the sender's, when it sent
	msg       raft.Message
	err       error
	nm        driver.NotMember
	cancelled bool
	tr        *transfer // evSnapChunk
	index     uint64    // evSnapDone: the snapshot's
	fwd       *forwarded
	res       driver.Result // evFwdReply: the leader's answer
}

// netQueue is a heap of network events by time, then order of sending.
type netQueue []*netEvent

func (q netQueue) Len() int { return len(q) }

func (q netQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}

func (q netQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }

func (q *netQueue) Push(x any) { *q = append(*q, x.(*netEvent)) }

func (q *netQueue) Pop() any {
	old := *q
	ev := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return ev
}

func (c *cluster) schedule(ev *netEvent, delay time.Duration) {
	c.seq++
	ev.seq = c.seq
	ev.at = c.now.Add(delay)
	heap.Push(&c.net, ev)
}

func (c *cluster) delay() time.Duration { return c.between(c.opts.MinDelay, c.opts.MaxDelay) }

// send puts m on the network: lost, duplicated and delayed at random
// while the network is lossy; a snapshot message starts a transfer.
func (c *cluster) send(from uint64, epoch int, m raft.Message) {
	if m.Type == raft.MsgSnap {
		c.schedule(&netEvent{kind: evSnap, from: from, to: m.To, epoch: epoch, msg: m}, c.delay())
		return
	}
	if c.lossy && c.rng.Float64() < c.opts.DropP {
		c.stats.Dropped++
		return
	}
	c.schedule(&netEvent{kind: evMsg, from: from, to: m.To, epoch: epoch, msg: m}, c.delay())
	if c.lossy && c.rng.Float64() < c.opts.DupP {
		c.stats.Duplicated++
		c.schedule(&netEvent{kind: evMsg, from: from, to: m.To, epoch: epoch, msg: copyMessage(m)}, c.delay())
	}
}

// current returns node id if it is up in the given epoch.
func (c *cluster) current(id uint64, epoch int) *node {
	if id == 0 || id > uint64(len(c.nodes)) {
		return nil
	}
	n := c.nodes[id-1]
	if !n.up || n.epoch != epoch {
		return nil
	}
	return n
}

// reachable returns node to if it is up and from can reach it.
func (c *cluster) reachable(from, to uint64) *node {
	if to == 0 || to > uint64(len(c.nodes)) || c.cut[[2]uint64{from, to}] {
		return nil
	}
	if n := c.nodes[to-1]; n.up {
		return n
	}
	return nil
}

func (c *cluster) deliver(ev *netEvent) {
	switch ev.kind {
	case evMsg:
		to := c.reachable(ev.from, ev.to)
		if to == nil {
			c.stats.Dropped++
			// Sometimes the sender's transport notices.
			if ev.msg.Type == raft.MsgApp && c.rng.IntN(4) == 0 {
				if from := c.current(ev.from, ev.epoch); from != nil {
					from.d.ReportUnreachable(ev.to)
				}
			}
			return
		}
		c.stats.Delivered++
		c.event("deliver %d>%d %v t%d i%d/%d c%d n%d", ev.from, ev.to, ev.msg.Type, ev.msg.Term, ev.msg.Index, ev.msg.LogTerm, ev.msg.Commit, len(ev.msg.Entries))
		from, toID, epoch := ev.from, ev.to, ev.epoch
		to.d.Deliver([]raft.Message{ev.msg}, func(nm *driver.NotMember, err error) {
			if nm != nil {
				c.schedule(&netEvent{kind: evNotMember, from: toID, to: from, epoch: epoch, nm: *nm}, c.delay())
			}
		})
	case evNotMember:
		if n := c.current(ev.to, ev.epoch); n != nil && !c.cut[[2]uint64{ev.from, ev.to}] {
			n.d.ReportNotMember(ev.from, ev.nm)
		}
	case evFwd, evFwdReply:
		c.deliverForwarded(ev)
	case evSnap:
		c.startTransfer(ev)
	case evSnapChunk:
		c.transferChunk(ev.tr)
	case evSnapDone:
		if from := c.current(ev.from, ev.epoch); from != nil {
			index := ev.index
			if ev.msg.Snapshot != nil {
				index = ev.msg.Snapshot.Index
			}
			from.d.ReportSnapshot(ev.to, index, ev.err)
		}
	}
}
