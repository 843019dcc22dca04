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
// or tearing what was not synced, and restarts from what the disk kept;
// frozen processes (time and the network go on); leadership transfers;
// snapshot transfers cut midway; the loss of a node's whole disk (it
// comes back empty and the cluster restores it); membership changes (a
// member removed, then added back with an empty disk); slow disks (a
// write's fsync takes time, during which the node waits and what it
// sends or answers after the write is held back, and power may fail:
// slowdisk.go); clocks that jump forward or run fast.
//
// Clients (client.go) write through sessions, retrying with the same
// sequence number until the outcome is known (exactly-once; a write no
// attempt of which may have applied is retried under a new one), compare
// and swap, and read linearizably (ReadBarrier) or serializably; a write
// that reaches a follower is forwarded to its leader (forward.go).
//
// Checks (check.go): linearizability of the client history (porcupine,
// the model of e2e/history); every read returns the state of the log
// prefix its replica had applied; every replica's final state holds
// every acknowledged write (final reads of every key at every replica
// join the history); replicas agree on the result of every applied index
// and hold equal states at equal applied index; exactly-once (a session
// write retried returns the result of its one application, and no client
// operation is applied under two sequence numbers); at most one leader
// per term, and each holds every entry applied in earlier terms; liveness (after healing, a write commits within
// Options.Liveness, every node that lost its disk or was removed is a
// counted voter again, and the replicas converge).
package nodesim

import (
	"container/heap"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
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
	// Think is the longest a client waits between two operations;
	// ValueSize pads the values written (0: short values).
	Think     time.Duration
	ValueSize int
	// SessionTTL is the key-value store's (0: its default, longer than
	// a run): a short one makes sessions expire under faults.
	SessionTTL time.Duration
	// SnapshotEntries makes the nodes snapshot often; TrailingEntries is
	// the log they keep behind a snapshot (small: followers then need
	// snapshots).
	SnapshotEntries, TrailingEntries uint64
	// DamageSnapP is the chance, while the network is lossy, that a
	// snapshot transfer has a bit flipped on the way;
	// SkipTransportChecksum leaves the end-to-end check of a transfer's
	// size and checksum to the receiving driver alone (the real
	// transport checks too).
	DamageSnapP           float64
	SkipTransportChecksum bool
	// SlowDiskP is the chance that a node's disk is slow: each write
	// takes MinFsync to MaxFsync, during which the node waits (and power
	// may fail, with the chance FsyncCrashP per write: slowdisk.go).
	SlowDiskP, FsyncCrashP float64
	MinFsync, MaxFsync     time.Duration
	// ClockJumpP is the chance, every FaultEvery of chaos, that a node's
	// clock jumps forward by up to MaxClockJump; DriftP the chance that
	// a node's clock runs fast, by up to MaxDrift (0.1: 10%).
	ClockJumpP, DriftP float64
	MaxClockJump       time.Duration
	MaxDrift           float64
	// Trace, if set, receives every event (and the drivers' logs).
	Trace io.Writer

	// bugs break the simulated clients or disks on purpose, to show
	// that the checkers fail (checkers_can_fail_test.go).
	bugs simBugs
}

// simBugs are deliberate bugs of the clients and the disks.
type simBugs struct {
	// readWithoutBarrier serves linearizable reads without waiting for
	// the read barrier.
	readWithoutBarrier bool
	// ackFailedWrites takes a write that failed (not applied, or with an
	// unknown outcome) for acknowledged.
	ackFailedWrites bool
	// walNoSync drops the log's fsync: nodes acknowledge what a crash
	// can lose.
	walNoSync bool
	// watchResumesLate resumes a watch on another node one revision
	// after the one it needed; watchResumesEarly one before (a gap, a
	// duplicate).
	watchResumesLate, watchResumesEarly bool
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
		SlowDiskP: 0.3, FsyncCrashP: 0.003, MinFsync: 500 * time.Microsecond, MaxFsync: 15 * time.Millisecond,
		ClockJumpP: 0.005, DriftP: 0.3, MaxClockJump: 3 * electionTimeout, MaxDrift: 0.2,
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
	Delivered, Dropped, Duplicated  int
	Crashes, ArmedCrashes, Restarts int
	Partitions, Pauses, Transfers   int
	DiskLosses, Removals            int
	SnapshotsSent, SnapshotsFailed  int
	SnapshotsDamaged, DamageRefused int
	// SpuriousDemotions counts voters a leader demoted although their
	// storage was never replaced (see watchDemotions).
	SpuriousDemotions                  int
	Acked, Unknown, Reads, FailedReads int
	SerializableReads, Forwarded       int
	SlowWrites, FsyncCrashes           int
	ClockJumps                         int
	Leaders                            int
	MaxApplied                         uint64
	// WatchEvents counts the changes the simulated watches read;
	// WatchResumes the times one moved to another node; WatchRelists
	// the times one found its revision compacted on every node up;
	// WatchChecked the events checked at the end (watches.go).
	WatchEvents, WatchResumes, WatchRelists, WatchChecked int
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
	// nextReplicaCheck is when the replicas are compared next (and the
	// simulated watches read).
	nextReplicaCheck time.Time
	watches          []*simWatch
	cmdID            uint64 // the last command id proposed
	opID             uint64 // the last client operation's id
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
		watches: newWatches(),
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

// setup creates the nodes, bootstraps the cluster and starts them.
func (c *cluster) setup() error {
	var incs []raft.MemberIncarnation
	addrs := map[uint64]string{}
	for i := range c.opts.Nodes {
		n := &node{c: c, id: uint64(i + 1), fs: c.newDisk()}
		n.slowDisk = c.rng.Float64() < c.opts.SlowDiskP
		if c.rng.Float64() < c.opts.DriftP {
			n.drift = c.rng.Float64() * c.opts.MaxDrift
		}
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
			c.watchDemotions()
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
			if t, ok := n.clock.Next(); ok && t.Add(-n.skew).Before(next) {
				next = t.Add(-n.skew)
			}
			for _, b := range n.bg {
				if b.at.Before(next) && !n.paused() {
					next = b.at
				}
			}
			if n.armed && n.crashBy.Before(next) {
				next = n.crashBy
			}
			if n.paused() && n.frozenUntil().Before(next) {
				next = n.frozenUntil()
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
			n.clock.AdvanceTo(t.Add(n.skew))
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
		c.completeFsync(n)
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
	c.stepMembership()
	if !c.now.Before(c.nextReplicaCheck) {
		c.checkReplicas()
		c.stepWatches()
		c.nextReplicaCheck = c.now.Add(replicaCheckEvery)
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
				// A slow write freezes it mid-settle.
				if n.paused() || !n.d.Step() {
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
