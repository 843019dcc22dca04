package raft

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/anishathalye/porcupine"
)

// The deterministic simulator: N cores, a lossy network, crashes, and
// clients, all driven from one seed. Everything here is single-threaded;
// "time" is the tick counter (ElectionTick 10, HeartbeatTick 2).
//
// Faults, each drawn from the seed: message drop, duplication and delay
// (hence reordering); partitions that isolate the leader, split the
// cluster at random, cut one node's inbound links only (asymmetric), or
// leave two halves joined by a single bridge node; crashes at any tick
// and at every step of handling a Ready: after sending a leader's early
// messages, between writing entries and HardState, and after persisting
// but before acknowledging (the restarted node keeps exactly its
// MemoryStorage; over the durable storage, sim_storage_test.go, a crash
// keeps what was fsynced plus some prefix of the write in flight, and may
// also strike inside snapshotting and recovery); messages arriving
// between Ready and Advance; membership changes (learner add + promotion,
// single-step removal including of the leader, joint replacement and
// demotion); leadership transfers; snapshots and compaction every few
// entries with small chunks, so InstallSnapshot happens often.
//
// Stale and buggy peers, in the configurations that ask for them
// (sim_stale_test.go): removed nodes that keep running with what they last
// knew, snapshot chunks damaged on the way, and members that send
// TimeoutNow or read index answers although they do not lead.
//
// Clients issue Puts (through the log) and Gets (through ReadIndex, on
// leaders and followers) against a 3-key KV store. A Put whose outcome is
// unknown (node crashed, timed out) stays in the history as possibly
// applied.
//
// Checkers: election safety (one leader per term), leader completeness
// (a new leader holds every applied entry), state machine safety (one
// entry per index ever applied, applied in order, the same again after a
// restart), log matching (at the end), linearizability of the client
// history (porcupine, KV model), terms never behind the log, every
// acknowledgement covered by the disk and every disk holding after a
// crash all that it acknowledged (sim_disk_test.go), and liveness
// (after healing, a proposal is applied by every member within
// livenessTick ticks).

var (
	flagSeeds = flag.Int("seeds", 0, "simulation seeds per configuration (0 = default)")
	flagSeed  = flag.Int64("seed", -1, "replay exactly this simulation seed")
	flagTrace = flag.Bool("simtrace", false, "print the simulation's events (use with -seed)")
)

// tracef prints one simulation event when -simtrace is set.
func (c *simCluster) tracef(format string, args ...any) {
	if *flagTrace {
		fmt.Printf("t%-4d "+format+"\n", append([]any{c.now}, args...)...)
	}
}

// simOptions shape one simulated run.
type simOptions struct {
	nodes        int
	chaosTicks   int // ticks of faults before healing
	livenessTick int // bound on ticks after healing for progress
	dropP, dupP  float64
	maxDelay     int
	crashP       float64 // per tick: crash a node
	partitionP   float64 // per tick: change the partition
	confChangeP  float64 // per tick: attempt a membership change
	transferP    float64 // per tick: attempt a leadership transfer
	clientP      float64 // per tick per client: start an operation
	clients      int
	snapEvery    uint64 // applied entries between snapshots (0 = never)
	maxEntries   int    // entries per AppendEntries (default 4)
	preVote      bool
	checkQuorum  bool
	lazyCommit   bool // LazyCommit, announced at random moments
	bugs         testBugs
	// newDisk makes a node's disk; nil means MemoryStorage. Any other
	// disk also gets crashes inside snapshotting (see maybeSnapshot).
	newDisk func(id uint64) SimDisk
	// diskLossP is the chance per tick that a node loses its disk (it
	// comes back empty) or part of it (Damage), whenever the cluster can
	// still restore it by itself (see mayLoseDisk).
	diskLossP float64
	// zombieP is the chance that a node removed from the configuration
	// keeps running (a stale peer) instead of being stopped.
	zombieP float64
	// forgeP is the chance per tick, healed or not, that a buggy member
	// sends a node a TimeoutNow or a read index answer although it does
	// not lead it (see forge).
	forgeP float64
	// damageSnapP is the chance that a snapshot's data is damaged on the
	// way while the network is lossy (sim_snapshot_test.go).
	damageSnapP float64
	// receiverSkipsChecksum breaks the simulated snapshot receiver: it
	// hands its core a snapshot without checking the data against the
	// leader's checksum (checker self-test, simbugs_test.go).
	receiverSkipsChecksum bool
	// quietTicks, if set, is how long the healed cluster must then keep
	// its leader and term although stale and buggy peers go on (see
	// awaitQuiet).
	quietTicks int
}

func defaultSimOptions(n int) simOptions {
	return simOptions{
		nodes: n, chaosTicks: 250, livenessTick: 200,
		dropP: 0.05, dupP: 0.03, maxDelay: 3,
		crashP: 0.01, partitionP: 0.02, confChangeP: 0.01, transferP: 0.005,
		clientP: 0.3, clients: 4, maxEntries: 4, snapEvery: 12,
		preVote: true, checkQuorum: true,
	}
}

type simNode struct {
	id      uint64
	core    *Core
	disk    SimDisk
	model   diskModel // what disk must hold (sim_disk_test.go)
	up      bool
	removed bool // permanently stopped after removal from the config
	zombie  bool // removed, yet running on (zombieP)
	kv      map[string]string
	applied uint64
	reads   map[string]uint64 // ReadIndex ctx -> confirmed index
	// received holds the data of the snapshots this node's driver
	// received and handed its core (by index and term), as the real
	// receiver's files do until the core installs one.
	received map[[2]uint64][]byte
}

type inflightMsg struct {
	m  Message
	at int
}

type clientOp struct {
	client  int
	id      string
	node    uint64
	isGet   bool
	key     string
	value   string
	call    int64
	started int
}

type kvInput struct {
	Get   bool
	Key   string
	Value string
}

type simCluster struct {
	seed   int64
	opts   simOptions
	rng    *rand.Rand
	now    int
	clock  int64 // strictly increasing event clock for the history
	nodes  map[uint64]*simNode
	nextID uint64
	queue  []inflightMsg
	// transfers are the snapshot transfers under way (sim_snapshot_test.go).
	transfers []snapTransfer
	snaps     snapStats
	cut       map[[2]uint64]bool // directed links that drop everything
	down      map[uint64]bool    // scripted tests: disconnected nodes
	lossy     bool

	leaders map[uint64]uint64 // term -> leader (election safety)
	applied map[uint64]Entry  // index -> entry applied anywhere

	ops     map[string]*clientOp
	busy    map[int]bool
	history []porcupine.Operation
	opSeq   int

	incarnations uint64 // memory disks made so far
	restores     int    // AutoPromote learners a leader promoted

	msgCount int
	sawJoint int // config changes that left a node in a joint config
	disk     SimStats
	demoted  int // learners that were voters (demotions observed)
	byType   [msgTypeEnd]int
	// payloadBytes counts entry payload bytes sent in AppendEntries.
	payloadBytes uint64
	heard        heardStats // what stale and buggy peers got through
	// transferVotes counts vote requests of elections a TimeoutNow
	// started (leadership transfers the transferee acted on).
	transferVotes int
	err           error
}

func newSimCluster(seed int64, opts simOptions) *simCluster {
	c := &simCluster{
		seed: seed, opts: opts,
		rng:     rand.New(rand.NewPCG(uint64(seed), 0x5eed)),
		nodes:   map[uint64]*simNode{},
		cut:     map[[2]uint64]bool{},
		lossy:   true,
		leaders: map[uint64]uint64{},
		applied: map[uint64]Entry{},
		ops:     map[string]*clientOp{},
		busy:    map[int]bool{},
	}
	voters := make([]uint64, opts.nodes)
	for i := range voters {
		voters[i] = uint64(i + 1)
	}
	c.nextID = uint64(opts.nodes + 1)
	var incs []MemberIncarnation
	for _, id := range voters {
		n := c.newNode(id)
		incs = append(incs, MemberIncarnation{ID: id, Incarnation: n.disk.Incarnation()})
	}
	for _, id := range voters {
		n := c.nodes[id]
		bs := BootstrapSnapshot(ConfState{Voters: voters, Incarnations: incs})
		if err := n.disk.Save(HardState{}, nil, &bs); err != nil {
			panic(err)
		}
		n.model.applySnap(bs.Meta)
		c.start(n)
	}
	return c
}

// newNode creates a node with an empty disk (not started).
func (c *simCluster) newNode(id uint64) *simNode {
	n := &simNode{id: id, disk: c.emptyDisk(id), model: diskModel{first: 1}}
	c.nodes[id] = n
	return n
}

// emptyDisk makes a new, empty disk for node id. Memory disks get
// incarnations from a counter rather than the seed's random source, so
// seeds without disk faults replay as they did before incarnations.
func (c *simCluster) emptyDisk(id uint64) SimDisk {
	if c.opts.newDisk != nil {
		return c.opts.newDisk(id)
	}
	c.incarnations++
	return newMemDisk(c.incarnations<<8 | id)
}

func (c *simCluster) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("tick %d: "+format, append([]any{c.now}, args...)...)
	}
}

func (c *simCluster) coreConfig(id uint64, disk SimDisk) Config {
	return Config{
		ID: id, Storage: disk, ElectionTick: 10, HeartbeatTick: 2,
		Incarnation: disk.Incarnation(),
		Seed:        c.rng.Uint64(),
		PreVote:     c.opts.preVote, CheckQuorum: c.opts.checkQuorum,
		LazyCommit:    c.opts.lazyCommit,
		MaxSizePerMsg: 64, MaxEntriesPerMsg: c.opts.maxEntries, MaxInflightMsgs: 4,
		MaxUncommittedEntriesSize: 1024,
		bugs:                      c.opts.bugs,
	}
}

// verifySimSnapshot is the application's check of a received snapshot's
// data: it must decode (empty data is the bootstrap snapshot's).
func verifySimSnapshot(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	var kv map[string]string
	return json.Unmarshal(data, &kv)
}

// start boots (or reboots) a node from what its disk holds.
func (c *simCluster) start(n *simNode) {
	c.tracef("node %d starts (inc %x)", n.id, n.disk.Incarnation())
	core, err := New(c.coreConfig(n.id, n.disk))
	if err != nil {
		c.failf("restart %d: %v", n.id, err)
		return
	}
	n.core, n.up = core, true
	n.kv = map[string]string{}
	n.reads = map[string]uint64{}
	n.received = map[[2]uint64][]byte{}
	snap, err := n.disk.LoadSnapshot()
	if err != nil {
		c.failf("node %d: load snapshot: %v", n.id, err)
		return
	}
	if len(snap.Data) > 0 {
		if err := json.Unmarshal(snap.Data, &n.kv); err != nil {
			c.failf("node %d: bad snapshot data: %v", n.id, err)
		}
	}
	n.applied = snap.Meta.Index
}

// process runs the Ready loop of one node exactly as doc.go prescribes,
// with a chance to crash between sending early messages and persisting.
func (c *simCluster) process(n *simNode) {
	for n.up && c.err == nil && n.core.HasReady() {
		if n.core.term < n.core.log.lastTerm() {
			c.failf("node %d: term %d behind its last log term %d", n.id, n.core.term, n.core.log.lastTerm())
			return
		}
		rd := n.core.Ready()
		if rd.SoftState != nil && rd.SoftState.Role == StateLeader {
			c.tracef("node %d leads term %d (last %d/%d commit %d applied %d conf@%d %+v)", n.id, n.core.term, n.core.log.lastIndex(), n.core.log.lastTerm(), n.core.log.committed, n.core.log.applied, n.core.confIndex, n.core.ConfState())
			c.checkNewLeader(n)
		}
		for _, m := range rd.MessagesAfterPersist {
			if m.Type == MsgVoteResp && m.Granted && !m.PreVote {
				c.tracef("node %d (inc %x, last %d/%d) votes for %d in term %d", n.id, m.Incarnation, n.core.log.lastIndex(), n.core.log.lastTerm(), m.To, m.Term)
			}
		}
		// What leaves before persisting must hold against the disk as
		// it is: no term, vote or entry it does not have yet.
		c.checkAcks(n, rd.Messages)
		for _, m := range rd.Messages {
			c.send(m)
		}
		// Confirmed read indexes depend on nothing this Ready persists:
		// the driver serves the reads the state machine has reached
		// before the write (the rest after applying, below).
		for _, rs := range rd.ReadStates {
			n.reads[string(rs.RequestCtx)] = rs.Index
		}
		c.serveReads(n)
		if c.lossy && c.rng.Float64() < c.opts.crashP/4 {
			c.crash(n) // lose this Ready's writes
			return
		}
		var snap *Snapshot
		if !rd.Snapshot.IsEmpty() {
			// The core installs only what its driver received: the
			// data is the driver's, the metadata the core's.
			data, ok := n.received[[2]uint64{rd.Snapshot.Meta.Index, rd.Snapshot.Meta.Term}]
			if !ok {
				c.failf("node %d: its core installed snapshot %d/%d, whose data its driver never received", n.id, rd.Snapshot.Meta.Index, rd.Snapshot.Meta.Term)
				return
			}
			rd.Snapshot.Data = data
			clear(n.received)
			snap = &rd.Snapshot
		}
		midCrash := c.lossy && c.rng.Float64() < c.opts.crashP/8
		if !midCrash && c.opts.newDisk != nil && c.lossy {
			// A real disk is where crashes inside a write are interesting:
			// make them more frequent there (an extra draw, so the
			// memory-disk seeds replay as before).
			midCrash = c.rng.Float64() < c.opts.crashP/2
		}
		if midCrash {
			// Power fails during the write: MemoryStorage keeps the
			// entries but not the HardState; a real disk keeps some
			// prefix of what it was writing.
			n.model.inFlight = n.model.saves(rd.HardState, rd.Entries, snap)
			n.disk.ArmCrash(c.rng)
			_ = n.disk.Save(rd.HardState, rd.Entries, snap)
			c.crash(n)
			return
		}
		if err := n.disk.Save(rd.HardState, rd.Entries, snap); err != nil {
			c.failf("node %d save: %v", n.id, err)
			return
		}
		n.model.save(rd.HardState, rd.Entries, snap)
		if c.lossy && c.rng.Float64() < c.opts.crashP/8 {
			c.crash(n) // durable, but nothing acknowledged yet
			return
		}
		c.checkAcks(n, rd.MessagesAfterPersist)
		for _, m := range rd.MessagesAfterPersist {
			c.send(m)
		}
		if !rd.Snapshot.IsEmpty() {
			n.kv = map[string]string{}
			if len(rd.Snapshot.Data) > 0 {
				if err := json.Unmarshal(rd.Snapshot.Data, &n.kv); err != nil {
					c.failf("node %d installed snapshot %d, which does not decode: %v", n.id, rd.Snapshot.Meta.Index, err)
					return
				}
			}
			n.applied = rd.Snapshot.Meta.Index
		}
		for _, e := range rd.CommittedEntries {
			c.apply(n, e)
		}
		if c.lossy && c.rng.IntN(8) == 0 {
			// A driver keeps receiving while it persists: Step between
			// Ready and Advance.
			c.deliverEarly(n, 2)
		}
		confMayChange := !rd.Snapshot.IsEmpty()
		for i := range rd.CommittedEntries {
			confMayChange = confMayChange || rd.CommittedEntries[i].Type == EntryConfChange
		}
		var before ConfState
		if confMayChange {
			before = n.core.ConfState()
		}
		n.core.Advance()
		if confMayChange {
			after := n.core.ConfState()
			if n.core.state == StateLeader {
				c.tracef("leader %d config %+v", n.id, after)
				for _, id := range before.AutoPromote {
					if slices.Contains(after.Voters, id) {
						c.restores++
					}
				}
			}
			if len(after.VotersOutgoing) > 0 {
				c.sawJoint++
				c.demoted += len(after.LearnersNext)
			}
			if !slices.Equal(before.Voters, after.Voters) || !slices.Equal(before.Learners, after.Learners) || !slices.Equal(before.VotersOutgoing, after.VotersOutgoing) {
				c.retire(before, after)
			}
		}
		if !n.up {
			return
		}
		c.serveReads(n)
		c.maybeSnapshot(n)
	}
}

func (c *simCluster) apply(n *simNode, e Entry) {
	if e.Index != n.applied+1 {
		c.failf("node %d applied %d after %d (gap or repeat)", n.id, e.Index, n.applied)
		return
	}
	n.applied = e.Index
	// State machine safety: one entry per index, forever.
	if prev, ok := c.applied[e.Index]; ok {
		if prev.Term != e.Term || string(prev.Data) != string(e.Data) || prev.Type != e.Type {
			c.failf("state machine safety: index %d applied as %d/%q and %d/%q (node %d)", e.Index, prev.Term, prev.Data, e.Term, e.Data, n.id)
			return
		}
	} else {
		c.applied[e.Index] = e
	}
	if e.Type != EntryNormal || len(e.Data) == 0 {
		return
	}
	parts := strings.SplitN(string(e.Data), "|", 4)
	if parts[0] != "p" || len(parts) != 4 {
		return
	}
	n.kv[parts[2]] = parts[3]
	if op, ok := c.ops[parts[1]]; ok && op.node == n.id {
		delete(c.ops, op.id)
		c.busy[op.client] = false
		c.history = append(c.history, porcupine.Operation{
			ClientId: op.client, Input: kvInput{Key: op.key, Value: op.value},
			Call: op.call, Return: c.tick(),
		})
	}
}

func (c *simCluster) maybeSnapshot(n *simNode) {
	if c.opts.snapEvery == 0 {
		return
	}
	snap, _ := n.disk.SnapshotMeta()
	if n.applied < snap.Index+c.opts.snapEvery {
		return
	}
	data, _ := json.Marshal(n.kv)
	t, ok := n.model.term(n.applied)
	if !ok {
		c.failf("node %d applied %d, which its disk does not hold", n.id, n.applied)
		return
	}
	meta := SnapshotMeta{Index: n.applied, Term: t}
	// Only a disk other than MemoryStorage can crash inside snapshotting
	// (and draws for it): the memory-disk seeds replay as they always did.
	crashing := c.opts.newDisk != nil && c.lossy && c.rng.Float64() < c.opts.crashP/4
	if crashing {
		before, after := n.model.clone(), n.model.clone()
		after.snap, after.hasSnap = meta, true
		n.model.inFlight = []diskModel{before, after}
		n.disk.ArmCrash(c.rng)
	}
	err := n.disk.CreateSnapshot(n.applied, n.core.ConfState(), data)
	if err != nil && !crashing {
		c.failf("node %d snapshot: %v", n.id, err)
		return
	}
	if err == nil {
		n.model.snap, n.model.hasSnap = meta, true
		// Keep a few entries so lagging followers usually need no snapshot.
		if keep := uint64(4); n.applied > snap.Index+keep {
			_ = n.disk.Compact(n.applied - keep)
		}
	}
	if crashing {
		c.crash(n)
	}
}

func (c *simCluster) upNodes() []*simNode {
	var ns []*simNode
	for _, id := range c.sortedIDs() {
		if n := c.nodes[id]; n.up {
			ns = append(ns, n)
		}
	}
	return ns
}

func (c *simCluster) sortedIDs() []uint64 {
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (c *simCluster) leader() *simNode {
	var best *simNode
	for _, n := range c.upNodes() {
		if n.core.state == StateLeader && (best == nil || n.core.term > best.core.term) {
			best = n
		}
	}
	return best
}

// step runs one tick of the whole cluster.
func (c *simCluster) step() {
	c.now++
	if c.opts.forgeP > 0 && c.rng.Float64() < c.opts.forgeP {
		c.forge()
	}
	for _, n := range c.upNodes() {
		if n.up { // processing another node may have retired this one
			n.core.Tick()
			c.process(n)
		}
	}
	c.deliver()
	c.deliverTransfers()
	for _, n := range c.upNodes() {
		if n.up && c.opts.lazyCommit && n.core.CommitUnannounced() && c.rng.IntN(3) == 0 {
			// The driver announces a waiting commit index once it has
			// been idle for a while: here, at random.
			n.core.AnnounceCommit()
		}
		c.process(n)
	}
	for id, op := range c.ops {
		if c.now-op.started > 60 {
			c.abandon(id)
		}
	}
}

// run executes the whole scenario and returns the first violation.
func (c *simCluster) run() error {
	for c.now < c.opts.chaosTicks && c.err == nil {
		c.chaos()
		c.startClientOps()
		c.step()
	}
	if c.err != nil {
		return c.err
	}
	c.heal()
	if err := c.awaitLiveness(); err != nil {
		return err
	}
	if c.opts.diskLossP > 0 {
		if err := c.awaitRestored(); err != nil {
			return err
		}
	}
	if c.opts.quietTicks > 0 {
		if err := c.awaitQuiet(); err != nil {
			return err
		}
	}
	c.checkLogMatching()
	c.checkReplicasAgree()
	if c.err != nil {
		return c.err
	}
	return c.checkLinearizable()
}

func (c *simCluster) heal() {
	clear(c.cut)
	c.lossy = false
	for _, id := range c.sortedIDs() {
		if n := c.nodes[id]; !n.up && !n.removed {
			c.start(n)
		}
	}
}

// runSim runs one seed and returns the first violation found.
func runSim(seed int64, opts simOptions) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return newSimCluster(seed, opts).run()
}
