// Package nodesim runs clusters of whole nodes under deterministic
// simulation: each node is the real driver (stepped, on a virtual clock),
// the real key-value state machine and the real storage on a file system
// that loses what was not synced when it crashes (crashfs), connected by
// a simulated network that drops, duplicates, delays (hence reorders) and
// partitions, with simulated clients whose history is checked. One seed
// drives every choice, and everything runs on one goroutine: a seed
// replays event for event (Result.TraceHash says so).
//
// The scheduler advances virtual time from event to event: the nodes'
// timers (ticks, commit announcements), deliveries, background work
// (snapshot files, written at a step of their own), client actions and
// faults. At each instant it delivers what is due, then steps every node
// until none has anything left to do (settle).
//
// Faults: message loss, duplication and delay; partitions (leader
// isolated, random splits, one node deaf, two halves joined by a bridge
// node) that change and heal; crashes, at once or inside the next few
// writes (the node then stops on the failed write and crashes), losing
// or tearing what was not synced; restarts from what the disk kept.
//
// Checks: linearizability of the client history (porcupine, the model of
// e2e/history); serializable and linearizable reads return the state of a
// prefix of the log; every replica's final state holds every
// acknowledged write (final reads of every key at every replica join the
// history); replicas agree on the result of every applied index;
// exactly-once (a session write retried returns the result of its one
// application); at most one leader per term; liveness (after healing, a
// write commits within Options.Liveness).
package nodesim

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	mrand "math/rand"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
)

// Options shape one simulated run.
type Options struct {
	// Nodes is the cluster's size (voters).
	Nodes int
	// Clients issue operations one at a time each, on Keys keys.
	Clients, Keys int
	// Chaos is how long (virtual) faults and client load go on; Liveness
	// bounds, after healing, how long a write may take to commit.
	Chaos, Liveness time.Duration
	// DropP and DupP are the chances that a message is lost or
	// duplicated; messages take MinDelay to MaxDelay to arrive.
	DropP, DupP        float64
	MinDelay, MaxDelay time.Duration
	// CrashP, PartitionP, PauseP and TransferP are the chances, every
	// FaultEvery of chaos, that a node crashes, that the partition
	// changes, that a node's process freezes (for up to MaxPause: its
	// loop, background work and callbacks stop while its clock and the
	// network go on), and that the leader hands leadership over.
	CrashP, PartitionP, PauseP, TransferP float64
	FaultEvery                            time.Duration
	MaxPause                              time.Duration
	// DiskLossP is the chance, every FaultEvery of chaos, that a node
	// loses its disk (it crashes and restarts empty, a new incarnation
	// of its storage), whenever the cluster can restore it by itself: no
	// other node is being restored and the rest count as a majority.
	DiskLossP float64
	// ConfChangeP is the chance, every FaultEvery of chaos, that the
	// leader removes a member (which is added back later: membership.go).
	ConfChangeP float64
	// Think is the longest a client waits between two operations.
	Think time.Duration
	// SnapshotEntries makes the nodes snapshot often; TrailingEntries is
	// the log they keep behind a snapshot (small: followers then need
	// snapshots).
	SnapshotEntries, TrailingEntries uint64
	// Trace, if set, receives every event (and the drivers' logs).
	Trace io.Writer

	// bugs break the simulated clients on purpose, to show the checkers
	// fail (checkers_test.go).
	bugs clientBugs
}

// clientBugs are deliberate client bugs.
type clientBugs struct {
	// readWithoutBarrier serves linearizable reads without waiting for
	// the read barrier.
	readWithoutBarrier bool
	// ackFailedWrites takes a write that failed (not applied, or with an
	// unknown outcome) for acknowledged.
	ackFailedWrites bool
}

// DefaultOptions returns the options of an n-node run.
func DefaultOptions(n int) Options {
	return Options{
		Nodes: n, Clients: 4, Keys: 3,
		Chaos: 3 * time.Second, Liveness: 3 * time.Second,
		DropP: 0.05, DupP: 0.02, MinDelay: time.Millisecond, MaxDelay: 8 * time.Millisecond,
		CrashP: 0.01, PartitionP: 0.01, PauseP: 0.01, TransferP: 0.005,
		FaultEvery: 10 * time.Millisecond, MaxPause: 300 * time.Millisecond,
		DiskLossP: 0.002, ConfChangeP: 0.002,
		Think:           30 * time.Millisecond,
		SnapshotEntries: 40, TrailingEntries: 8,
	}
}

// The drivers' timing: ticks of 10ms, elections after 10-20 ticks,
// heartbeats every 2.
const (
	heartbeatInterval = 20 * time.Millisecond
	electionTimeout   = 100 * time.Millisecond
	requestTimeout    = 500 * time.Millisecond
)

// epoch is where the virtual clocks start.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Result summarizes a run that passed its checks.
type Result struct {
	// TraceHash is a hash of every event: equal for runs of one seed.
	TraceHash uint64
	// Events counts the events; Elapsed is the virtual time simulated.
	Events  int
	Elapsed time.Duration
	Stats   Stats
}

// Stats counts what a run did.
type Stats struct {
	Delivered, Dropped, Duplicated     int
	Crashes, ArmedCrashes, Restarts    int
	Partitions, Pauses, Transfers      int
	DiskLosses, Removals               int
	SnapshotsSent, SnapshotsFailed     int
	Acked, Unknown, Reads, FailedReads int
	SerializableReads                  int
	Leaders                            int
	MaxApplied                         uint64
}

// Run simulates one seed under opts and checks it.
func Run(seed int64, opts Options) (Result, error) {
	c := newCluster(seed, opts)
	err := c.run()
	if err == nil {
		err = c.err
	}
	res := Result{TraceHash: c.trace.Sum64(), Events: c.events, Elapsed: c.now.Sub(epoch), Stats: c.stats}
	return res, err
}

// cluster is one simulated run.
type cluster struct {
	seed  int64
	opts  Options
	rng   *rand.Rand
	now   time.Time
	nodes []*node // by id-1
	net   netQueue
	seq   uint64             // network event order, for ties
	cut   map[[2]uint64]bool // directed links that lose everything
	// lossy is false once healed: no drops, duplicates or crashes.
	lossy bool
	// dirty: the simulator handed a driver work during settle.
	dirty bool

	trace  hash.Hash64
	events int
	stats  Stats
	err    error

	leaders map[uint64]uint64 // term -> leader (election safety)
	checker checker
	clients []*client
	// transfers are the snapshot transfers under way (snapshot.go).
	transfers []*transfer
	hclock    int64 // the history's event clock
	// sameInstant counts the scheduler's turns at the current instant.
	sameInstant int
	// nextReplicaCheck is when the replicas are compared next.
	nextReplicaCheck time.Time
	cmdID            uint64 // the last command id proposed
}

func newCluster(seed int64, opts Options) *cluster {
	return &cluster{
		seed: seed, opts: opts,
		rng:     rand.New(rand.NewPCG(uint64(seed), 0x6e6f646573696d)), // "nodesim"
		now:     epoch,
		cut:     map[[2]uint64]bool{},
		lossy:   true,
		trace:   fnv.New64a(),
		leaders: map[uint64]uint64{},
		checker: newChecker(),
	}
}

// event records one event in the trace (and prints it when tracing).
func (c *cluster) event(format string, args ...any) {
	c.events++
	line := fmt.Sprintf(format, args...)
	fmt.Fprintf(c.trace, "%d %s\n", c.now.Sub(epoch), line)
	if c.opts.Trace != nil {
		fmt.Fprintf(c.opts.Trace, "%9.3fms %s\n", float64(c.now.Sub(epoch))/float64(time.Millisecond), line)
	}
}

func (c *cluster) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("at %v: %s", c.now.Sub(epoch), fmt.Sprintf(format, args...))
		c.event("FAIL %v", c.err)
	}
}

// between returns a duration in [lo, hi].
func (c *cluster) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(c.rng.Int64N(int64(hi-lo)+1))
}

// node is one simulated node: its disk survives crashes, the rest is
// rebuilt at every start.
type node struct {
	c     *cluster
	id    uint64
	fs    *crashfs.FS
	store *storage.Store
	kv    *kv.Store
	d     *driver.Driver
	clock *Clock
	up    bool
	// epoch counts the node's starts: what an earlier run of it sent or
	// was sent is ignored.
	epoch int
	// bg is the background work its driver started, run at a later
	// instant.
	bg []bgTask
	// crashBy: a crash is armed inside its next writes; it crashes by
	// then at the latest. downUntil: when it restarts.
	crashBy, downUntil time.Time
	armed              bool
	// pausedUntil: the process is frozen until then.
	pausedUntil time.Time
	// m is its membership (membership.go).
	m membership
}

// paused reports whether n's process is frozen now.
func (n *node) paused() bool { return n.c.now.Before(n.pausedUntil) }

type bgTask struct {
	at time.Time
	fn func()
}

// openStore opens n's data directory on its crash-simulating disk.
func (n *node) openStore() error {
	s, err := storage.Open("/data", storage.Options{
		NodeID: n.id, FS: n.fs, SegmentSize: 16 << 10, Prealloc: wal.PreallocSync,
		TrailingEntries: n.c.opts.TrailingEntries,
		Rand:            mrand.New(mrand.NewSource(n.c.rng.Int64())),
	})
	if err != nil {
		return err
	}
	n.store = s
	return nil
}

// start builds the node's driver over what its disk holds and starts it.
func (n *node) start(boot *raft.Snapshot) error {
	c := n.c
	n.epoch++
	n.kv = kv.New(kv.Config{})
	n.clock = NewClock(c.now)
	n.bg = nil
	var logger hclog.Logger
	if c.opts.Trace != nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("n%d", n.id), Output: c.opts.Trace, Level: hclog.Debug,
			TimeFn: func() time.Time { return n.clock.Now() }})
	}
	epoch := n.epoch
	d, err := driver.New(driver.Config{
		ID: n.id, Storage: n.store, Machine: n.kv.Machine(),
		Transport: &transport{c: c, from: n.id, epoch: epoch},
		DataDir:   fmt.Sprintf("n%d", n.id), Bootstrap: boot,
		HeartbeatInterval: heartbeatInterval, ElectionTimeout: electionTimeout, RequestTimeout: requestTimeout,
		SnapshotEntries: c.opts.SnapshotEntries, SnapshotBytes: 1 << 20,
		Seed:   c.rng.Uint64(),
		Logger: logger,
		OnApplied: func(index uint64, res statemachine.Result, replayed bool) {
			c.checker.applied(c, n.id, index, res)
		},
		Clock: n.clock,
		Go: func(f func()) {
			// Written at a later instant: the loop goes on meanwhile.
			n.bg = append(n.bg, bgTask{at: c.now.Add(c.between(0, 20*time.Millisecond)), fn: f})
		},
		Stepped: true,
	})
	if err != nil {
		return fmt.Errorf("node %d: start: %w", n.id, err)
	}
	n.d = d
	n.up = true
	d.Start()
	c.event("node %d starts (epoch %d, incarnation %016x, applied %d)", n.id, n.epoch, n.store.Incarnation(), n.kv.AppliedIndex())
	return nil
}

// crash cuts the node's power: its driver is gone (nothing it held in
// memory survives, nothing it would have answered is answered) and its
// disk keeps what was synced, and maybe part of what was not.
func (c *cluster) crash(n *node, why string) {
	c.stats.Crashes++
	c.event("node %d crashes (%s)", n.id, why)
	c.abortTransfers(n)
	n.up, n.armed = false, false
	n.d, n.store, n.clock, n.bg = nil, nil, nil, nil
	n.fs.Crash(mrand.New(mrand.NewSource(c.rng.Int64())))
	n.downUntil = c.now.Add(c.between(20*time.Millisecond, 400*time.Millisecond))
}

// restart reopens a crashed node's disk and starts it: a crash never
// needs a repair.
func (c *cluster) restart(n *node) {
	c.stats.Restarts++
	if err := n.openStore(); err != nil {
		c.failf("node %d does not reopen its storage after a crash: %v", n.id, err)
		return
	}
	if err := n.start(nil); err != nil {
		c.failf("%v", err)
	}
}

// setup creates the nodes, bootstraps the cluster and starts them.
func (c *cluster) setup() error {
	var incs []raft.MemberIncarnation
	addrs := map[uint64]string{}
	for i := range c.opts.Nodes {
		n := &node{c: c, id: uint64(i + 1), fs: crashfs.New()}
		n.fs.SetDirectIO(c.rng.IntN(2) == 0)
		if err := n.openStore(); err != nil {
			return fmt.Errorf("node %d: open storage: %w", n.id, err)
		}
		c.nodes = append(c.nodes, n)
		incs = append(incs, raft.MemberIncarnation{ID: n.id, Incarnation: n.store.Incarnation()})
		addrs[n.id] = fmt.Sprintf("n%d", n.id)
	}
	boot := driver.BootstrapSnapshot(incs, addrs)
	for _, n := range c.nodes {
		if err := n.start(&boot); err != nil {
			return err
		}
	}
	for i := range c.opts.Clients {
		c.clients = append(c.clients, &client{id: i, nextAt: c.now.Add(c.between(0, c.opts.Think))})
	}
	return nil
}

// run simulates the chaos, heals, checks liveness, lets the clients
// finish and checks everything.
func (c *cluster) run() error {
	if err := c.setup(); err != nil {
		return err
	}
	chaosEnd := c.now.Add(c.opts.Chaos)
	nextFault := c.now.Add(c.opts.FaultEvery)
	for c.err == nil && c.now.Before(chaosEnd) {
		next := c.nextEvent(chaosEnd)
		if nextFault.Before(next) {
			next = nextFault
		}
		if err := c.progress(next); err != nil {
			return err
		}
		c.advanceTo(next)
		if !c.now.Before(nextFault) {
			c.faults()
			nextFault = c.now.Add(c.opts.FaultEvery)
		}
		c.afterInstant()
	}
	if c.err != nil {
		return c.err
	}
	c.heal()
	if err := c.awaitLiveness(); err != nil {
		return err
	}
	if err := c.finishClients(); err != nil {
		return err
	}
	return c.finalChecks()
}

// maxInstantTurns bounds how often the scheduler may stay at one
// instant: something due that is never consumed would spin forever.
const maxInstantTurns = 10_000

// progress fails when the scheduler has stayed at the same instant for
// too long.
func (c *cluster) progress(next time.Time) error {
	if next.After(c.now) {
		c.sameInstant = 0
		return nil
	}
	c.sameInstant++
	if c.sameInstant > maxInstantTurns {
		return fmt.Errorf("the simulation makes no progress at %v: something due is never consumed", c.now.Sub(epoch))
	}
	return nil
}

// nextEvent returns the time of the next thing to happen, at most limit.
func (c *cluster) nextEvent(limit time.Time) time.Time {
	next := limit
	for _, n := range c.nodes {
		if n.up {
			if t, ok := n.clock.Next(); ok && t.Before(next) {
				next = t
			}
			for _, b := range n.bg {
				if b.at.Before(next) && !n.paused() {
					next = b.at
				}
			}
			if n.armed && n.crashBy.Before(next) {
				next = n.crashBy
			}
			if n.paused() && n.pausedUntil.Before(next) {
				next = n.pausedUntil
			}
		} else if n.m.out && !n.m.readding {
			if n.m.readdAt.Before(next) {
				next = n.m.readdAt
			}
		} else if n.downUntil.Before(next) {
			next = n.downUntil
		}
	}
	if len(c.net) > 0 && c.net[0].at.Before(next) {
		next = c.net[0].at
	}
	for _, cl := range c.clients {
		if t := cl.wakeAt(); !t.IsZero() && t.Before(next) {
			next = t
		}
	}
	if next.Before(c.now) {
		next = c.now
	}
	return next
}

// advanceTo moves time to t: the nodes' timers fire, due messages and
// background work are delivered and run, crashed nodes restart.
func (c *cluster) advanceTo(t time.Time) {
	c.now = t
	for _, n := range c.nodes {
		if n.up {
			n.clock.AdvanceTo(t)
		}
	}
	for range 1 << 20 {
		if len(c.net) == 0 || c.net[0].at.After(t) {
			break
		}
		ev := heap.Pop(&c.net).(*netEvent)
		c.deliver(ev)
	}
	for _, n := range c.nodes {
		if !n.up {
			if !n.downUntil.After(t) && c.err == nil && (!n.m.out || n.m.readding) {
				c.restart(n)
			}
			continue
		}
		if n.armed && !n.crashBy.After(t) {
			c.crash(n, "armed crash point")
			continue
		}
		// Background work in the order it became due (none while the
		// process is frozen).
		for range 1 << 10 {
			if n.paused() {
				break
			}
			i := slices.IndexFunc(n.bg, func(b bgTask) bool { return !b.at.After(t) })
			if i < 0 || !n.up {
				break
			}
			b := n.bg[i]
			n.bg = slices.Delete(n.bg, i, i+1)
			b.fn()
		}
	}
}

// afterInstant runs the clients and settles the nodes.
func (c *cluster) afterInstant() {
	c.settle()
	c.checkLeaders()
	c.stepMembership()
	if !c.now.Before(c.nextReplicaCheck) {
		c.checkReplicas()
		c.nextReplicaCheck = c.now.Add(replicaCheckEvery)
	}
}

// replicaCheckEvery is how often the replicas' states are compared.
const replicaCheckEvery = 50 * time.Millisecond

// checkReplicas checks that replicas that applied the same log prefix
// hold the same state.
func (c *cluster) checkReplicas() {
	byApplied := map[uint64]*node{}
	for _, n := range c.nodes {
		if !n.up {
			continue
		}
		a := n.kv.AppliedIndex()
		o, ok := byApplied[a]
		if !ok {
			byApplied[a] = n
			continue
		}
		if x, y := dumpStore(o.kv), dumpStore(n.kv); x != y {
			c.failf("replicas %d and %d applied through %d but differ:\n%s\n%s", o.id, n.id, a, x, y)
			return
		}
	}
}

// settle steps every node until none has anything left to do at this
// instant, running the clients between rounds.
func (c *cluster) settle() {
	for range 10_000 {
		c.dirty = false
		for _, n := range c.nodes {
			if !n.up || n.paused() {
				continue
			}
			for range 10_000 {
				if !n.d.Step() {
					break
				}
			}
			if n.d.Stopped() {
				if errors.Is(n.d.Err(), driver.ErrRemoved) {
					c.removedStop(n)
					continue
				}
				if n.armed {
					c.crash(n, fmt.Sprintf("stopped on the armed crash: %v", n.d.Err()))
					continue
				}
				c.failf("node %d stopped: %v", n.id, n.d.Err())
				return
			}
		}
		c.runClients()
		if !c.dirty || c.err != nil {
			return
		}
	}
	c.failf("the nodes do not settle")
}

// checkLeaders checks election safety: at most one leader per term.
func (c *cluster) checkLeaders() {
	for _, n := range c.nodes {
		if !n.up || !n.d.IsLeader() {
			continue
		}
		st, err := n.d.Status(context.Background())
		if err != nil {
			continue
		}
		if st.Role != raft.StateLeader {
			continue
		}
		if prev, ok := c.leaders[st.Term]; ok {
			if prev != n.id {
				c.failf("election safety: nodes %d and %d both lead term %d", prev, n.id, st.Term)
			}
			continue
		}
		c.leaders[st.Term] = n.id
		c.stats.Leaders++
		c.event("node %d leads term %d (commit %d, applied %d)", n.id, st.Term, st.Commit, st.Applied)
	}
}

// faults draws this interval's faults.
func (c *cluster) faults() {
	if !c.lossy {
		return
	}
	if c.rng.Float64() < c.opts.PartitionP {
		c.changePartition()
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
			n.fs = crashfs.New()
			n.fs.SetDirectIO(c.rng.IntN(2) == 0)
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
	}
}

// run simulates until cond holds or limit passes; it reports whether
// cond held.
func (c *cluster) runUntil(limit time.Time, cond func() bool) bool {
	for c.err == nil {
		if cond() {
			return true
		}
		if !c.now.Before(limit) {
			return false
		}
		next := c.nextEvent(limit)
		if err := c.progress(next); err != nil {
			c.failf("%v", err)
			return false
		}
		c.advanceTo(next)
		c.afterInstant()
	}
	return false
}

// awaitLiveness: once healed, a write commits within Options.Liveness,
// and every node applies it.
func (c *cluster) awaitLiveness() error {
	start := c.now
	limit := c.now.Add(c.opts.Liveness)
	var done bool
	var index uint64
	var attempt int
	var retryAt time.Time
	ok := c.runUntil(limit, func() bool {
		if done {
			for _, n := range c.nodes {
				if !n.up || n.kv.AppliedIndex() < index {
					return false
				}
			}
			return true
		}
		if c.now.Before(retryAt) {
			return false
		}
		l := c.leader()
		if l == nil {
			return false
		}
		attempt++
		a := attempt
		retryAt = c.now.Add(requestTimeout)
		c.dirty = true
		c.event("liveness write %d to node %d", a, l.id)
		cmd := kv.Command{Kind: kv.CmdOpenSession, ID: 1<<63 | uint64(a), Time: c.now.UnixNano()}
		l.d.Propose(cmd.AppendBinary(nil), func(r driver.Result) {
			if a != attempt || done || r.Err != nil {
				return
			}
			if ap, ok := r.Value.(*kv.Applied); ok {
				done, index = true, ap.Session
			}
		})
		return false
	})
	if c.err != nil {
		return c.err
	}
	if !ok {
		var st []string
		for _, n := range c.nodes {
			if !n.up {
				st = append(st, fmt.Sprintf("%d: down", n.id))
				continue
			}
			s, err := n.d.Status(context.Background())
			if err != nil {
				st = append(st, fmt.Sprintf("%d: %v", n.id, err))
				continue
			}
			st = append(st, fmt.Sprintf("%d: role %d term %d lead %d commit %d applied %d", n.id, s.Role, s.Term, s.Lead, s.Commit, s.Applied))
		}
		return fmt.Errorf("liveness: no write committed and applied everywhere within %v of healing (committed: %v): %s",
			c.opts.Liveness, done, strings.Join(st, "; "))
	}
	c.event("liveness: write applied everywhere at index %d after %v", index, c.now.Sub(start))
	return nil
}

// transport is one node's simulated driver.Transport.
type transport struct {
	c     *cluster
	from  uint64
	epoch int
}

// Send puts copies of msgs on the network.
func (t *transport) Send(msgs []raft.Message) {
	for i := range msgs {
		t.c.send(t.from, t.epoch, copyMessage(msgs[i]))
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
func (q *netQueue) Push(x any)   { *q = append(*q, x.(*netEvent)) }
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

// u64 encodes v for map keys and hashes.
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

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
