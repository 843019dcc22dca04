package nodesim

import (
	mrand "math/rand"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// Slow disks. The driver writes each Ready with one synchronous Save, on
// its loop: while the fsync takes its time, the process waits, and what
// the driver does after the write (send the acknowledgements and votes
// that promise it, answer the reads and writes it releases) happens when
// the write completes. A node whose disk is slow (Options.SlowDiskP)
// therefore freezes after each Save for a while (its fsync), and the
// simulator holds back what the driver sent or answered after the Save
// until then. What left before the Save (a leader's appends, which may
// go out beside its own write) is not held. Power may fail during a slow
// fsync (Options.FsyncCrashP): the write tears and the node crashes,
// and only what left before the write is out.

// slowStore is a node's storage with Save timed by the simulator.
type slowStore struct {
	*storage.Store
	n *node
}

// Save persists rd's part like the store, then, on a slow disk, starts
// the fsync's wait (or fails the write half-way, power lost).
func (s slowStore) Save(hs raft.HardState, ents []raft.Entry, snap *raft.Snapshot) error {
	n, c := s.n, s.n.c
	if !n.slowDisk || !c.lossy || !n.up { // not while it starts (a bootstrap writes)
		return s.Store.Save(hs, ents, snap)
	}
	if !n.armed && c.rng.Float64() < c.opts.FsyncCrashP {
		// Power fails inside this write: the driver stops on its error
		// (settle then crashes the node).
		c.stats.FsyncCrashes++
		n.armed, n.crashBy = true, c.now
		n.fs.SetCrashAfter(int64(c.rng.IntN(3)), mrand.New(mrand.NewSource(c.rng.Int64())))
		c.event("node %d: power fails during its slow write", n.id)
		return s.Store.Save(hs, ents, snap)
	}
	err := s.Store.Save(hs, ents, snap)
	if err == nil {
		c.stats.SlowWrites++
		n.fsyncUntil = c.now.Add(c.between(c.opts.MinFsync, c.opts.MaxFsync))
	}
	return err
}

// holding reports whether n's process waits for a slow fsync: what it
// sends or answers now happens once the write completes.
func (n *node) holding() bool { return n.c.now.Before(n.fsyncUntil) }

// later returns fn, run at once unless n waits for a slow fsync, then
// once the write completes (never if the node crashes first).
func (c *cluster) later(n *node, fn func(driver.Result)) func(driver.Result) {
	epoch := n.epoch
	return func(r driver.Result) {
		if n.epoch == epoch && n.up && n.holding() {
			n.held = append(n.held, func() { fn(r) })
			return
		}
		fn(r)
	}
}

// laterErr is later for a read barrier's reply.
func (c *cluster) laterErr(n *node, fn func(error)) func(error) {
	g := c.later(n, func(r driver.Result) { fn(r.Err) })
	return func(err error) { g(driver.Result{Err: err}) }
}

// completeFsync ends n's slow write, if it is done: what was held back
// goes out.
func (c *cluster) completeFsync(n *node) {
	if len(n.held) == 0 || n.holding() {
		return
	}
	held := n.held
	n.held = nil
	c.dirty = true
	for _, fn := range held {
		fn()
	}
}

// driftClocks moves the clocks of the nodes that run fast ahead by
// their drift over one fault interval.
func (c *cluster) driftClocks() {
	for _, n := range c.nodes {
		if n.drift > 0 {
			n.skew += time.Duration(float64(c.opts.FaultEvery) * n.drift)
		}
	}
}

// jumpClock makes an up node's clock jump forward (the process was
// descheduled, the VM suspended): its timers fire late, at once.
func (c *cluster) jumpClock() {
	up := c.upNodes()
	if len(up) == 0 {
		return
	}
	n := up[c.rng.IntN(len(up))]
	j := c.between(time.Millisecond, c.opts.MaxClockJump)
	n.skew += j
	c.stats.ClockJumps++
	c.event("node %d: clock jumps %v forward (skew %v)", n.id, j, n.skew)
}
