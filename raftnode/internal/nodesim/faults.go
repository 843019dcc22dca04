package nodesim

import (
	"context"
	"fmt"
	mrand "math/rand"
	"strings"
	"time"
)

// The faults the chaos draws, and healing.

// faults draws this interval's faults.
func (c *cluster) faults() {
	if !c.lossy {
		return
	}
	if c.rng.Float64() < c.opts.PartitionP {
		c.changePartition()
	}
	c.driftClocks()
	if c.rng.Float64() < c.opts.ClockJumpP {
		c.jumpClock()
	}
	if c.rng.Float64() < c.opts.PauseP {
		if up := c.upNodes(); len(up) > 0 {
			n := up[c.rng.IntN(len(up))]
			if !n.paused() {
				c.stats.Pauses++
				n.pausedUntil = c.now.Add(c.between(time.Millisecond, c.opts.MaxPause))
				c.event("node %d freezes until %v", n.id, n.pausedUntil.Sub(epoch))
			}
		}
	}
	if c.rng.Float64() < c.opts.TransferP {
		if l := c.leader(); l != nil && !l.paused() {
			// A cancelled context: the transfer starts on the loop
			// (a stepped driver runs the task at once) and the call
			// returns without waiting for its end.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err := l.d.TransferLeadership(ctx, 0)
			c.stats.Transfers++
			c.dirty = true
			c.event("node %d hands leadership over: %v", l.id, err)
		}
	}
	if c.rng.Float64() < c.opts.DiskLossP {
		if up := c.upNodes(); len(up) > 0 && c.mayLoseDisk() {
			n := up[c.rng.IntN(len(up))]
			c.stats.DiskLosses++
			c.crash(n, "disk lost")
			n.fs = c.newDisk()
		}
	}
	if c.rng.Float64() < c.opts.ConfChangeP {
		c.proposeRemoval()
	}
	if c.rng.Float64() < c.opts.CrashP {
		up := c.upNodes()
		if len(up) == 0 {
			return
		}
		n := up[c.rng.IntN(len(up))]
		if n.armed {
			return
		}
		n.pausedUntil = time.Time{}
		if c.rng.IntN(2) == 0 {
			c.crash(n, "power loss")
			return
		}
		// Power fails inside one of its next writes: the write tears,
		// the driver stops on the error, and the node crashes.
		c.stats.ArmedCrashes++
		n.armed = true
		n.crashBy = c.now.Add(c.between(time.Millisecond, 50*time.Millisecond))
		k := int64(c.rng.IntN(6))
		n.fs.SetCrashAfter(k, mrand.New(mrand.NewSource(c.rng.Int64())))
		c.event("node %d: crash armed after %d writes", n.id, k)
	}
}

func (c *cluster) upNodes() []*node {
	var up []*node
	for _, n := range c.nodes {
		if n.up {
			up = append(up, n)
		}
	}
	return up
}

func (c *cluster) leader() *node {
	for _, n := range c.nodes {
		if n.up && n.d.IsLeader() {
			return n
		}
	}
	return nil
}

// changePartition replaces the partition with a new one (or none).
func (c *cluster) changePartition() {
	c.stats.Partitions++
	clear(c.cut)
	ids := make([]uint64, len(c.nodes))
	for i := range ids {
		ids[i] = uint64(i + 1)
	}
	cutBoth := func(a, b uint64) { c.cut[[2]uint64{a, b}], c.cut[[2]uint64{b, a}] = true, true }
	var what string
	switch c.rng.IntN(5) {
	case 0:
		what = "healed"
	case 1:
		what = "leader isolated"
		if l := c.leader(); l != nil {
			for _, id := range ids {
				if id != l.id {
					cutBoth(l.id, id)
				}
			}
		}
	case 2:
		what = "random split"
		for i, a := range ids {
			for _, b := range ids[i+1:] {
				if c.rng.IntN(2) == 0 {
					cutBoth(a, b)
				}
			}
		}
	case 3:
		victim := ids[c.rng.IntN(len(ids))]
		what = fmt.Sprintf("node %d deaf", victim)
		for _, id := range ids {
			if id != victim {
				c.cut[[2]uint64{id, victim}] = true
			}
		}
	case 4:
		bridge := ids[c.rng.IntN(len(ids))]
		what = fmt.Sprintf("bridged by node %d", bridge)
		for i, a := range ids {
			for j, b := range ids {
				if a != bridge && b != bridge && i%2 != j%2 {
					c.cut[[2]uint64{a, b}] = true
				}
			}
		}
	}
	var links []string
	for _, a := range ids {
		for _, b := range ids {
			if c.cut[[2]uint64{a, b}] {
				links = append(links, fmt.Sprintf("%d>%d", a, b))
			}
		}
	}
	c.event("partition: %s [%s]", what, strings.Join(links, " "))
}

// heal ends the chaos: the network is whole and reliable, crashed nodes
// restart, armed crashes are disarmed.
func (c *cluster) heal() {
	c.lossy = false
	clear(c.cut)
	c.event("healed")
	for _, n := range c.nodes {
		n.pausedUntil = time.Time{}
		if n.armed {
			// The crash point may still be armed in the file system:
			// crash now rather than at a random later write.
			c.crash(n, "armed crash point, at healing")
		}
		if !n.up && (!n.m.out || n.m.readding) {
			c.restart(n)
		}
		if n.m.out && !n.m.readding {
			n.m.readdAt = c.now
		}
		if n.m.learner {
			n.m.promoteAt = c.now
		}
	}
}

// mayLoseDisk reports whether a node may lose its disk now (see
// allCounted).
func (c *cluster) mayLoseDisk() bool {
	_, st, ok := c.leaderConfig()
	return ok && c.allCounted(st)
}

// restored reports whether every node is a voter again, counted with the
// storage it has (those that lost their disk were restored).
func (c *cluster) restored() bool {
	l := c.leader()
	if l == nil {
		return false
	}
	st, err := l.d.Status(context.Background())
	if err != nil || len(st.Config.Voters) != len(c.nodes) || len(st.Config.Learners) > 0 {
		return false
	}
	for _, m := range c.nodes {
		if inc, ok := st.Config.IncarnationOf(m.id); !m.up || !ok || inc != m.store.Incarnation() {
			return false
		}
	}
	return true
}
