package raft

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

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
// and between sending a leader's early messages and persisting its Ready
// (the restarted node keeps exactly its MemoryStorage); messages arriving
// between Ready and Advance; membership changes (learner add + promotion,
// single-step removal including of the leader, joint replacement and
// demotion); leadership transfers; snapshots and compaction every few
// entries with small chunks, so InstallSnapshot happens often.
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
// history (porcupine, KV model), terms never behind the log, and
// liveness (after healing, a proposal is applied by every member within
// livenessTick ticks).

var (
	flagSeeds = flag.Int("seeds", 0, "simulation seeds per configuration (0 = default)")
	flagSeed  = flag.Int64("seed", -1, "replay exactly this simulation seed")
)

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
	bugs         testBugs
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
	disk    *MemoryStorage
	up      bool
	removed bool // permanently stopped after removal from the config
	kv      map[string]string
	applied uint64
	reads   map[string]uint64 // ReadIndex ctx -> confirmed index
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
	cut    map[[2]uint64]bool // directed links that drop everything
	down   map[uint64]bool    // scripted tests: disconnected nodes
	lossy  bool

	leaders map[uint64]uint64 // term -> leader (election safety)
	applied map[uint64]Entry  // index -> entry applied anywhere

	ops     map[string]*clientOp
	busy    map[int]bool
	history []porcupine.Operation
	opSeq   int

	msgCount int
	sawJoint int // config changes that left a node in a joint config
	demoted  int // learners that were voters (demotions observed)
	byType   [msgTypeEnd]int
	// payloadBytes counts entry payload bytes sent in AppendEntries.
	payloadBytes uint64
	err          error
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
	for _, id := range voters {
		disk := NewMemoryStorage()
		if err := disk.ApplySnapshot(BootstrapSnapshot(ConfState{Voters: voters})); err != nil {
			panic(err)
		}
		c.nodes[id] = &simNode{id: id, disk: disk}
		c.start(c.nodes[id])
	}
	return c
}

func (c *simCluster) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf("tick %d: "+format, append([]any{c.now}, args...)...)
	}
}

func (c *simCluster) coreConfig(id uint64, disk *MemoryStorage) Config {
	return Config{
		ID: id, Storage: disk, ElectionTick: 10, HeartbeatTick: 2,
		Seed:    c.rng.Uint64(),
		PreVote: c.opts.preVote, CheckQuorum: c.opts.checkQuorum,
		MaxSizePerMsg: 64, MaxEntriesPerMsg: c.opts.maxEntries, MaxInflightMsgs: 4,
		MaxUncommittedEntriesSize: 1024, MaxSnapshotChunk: 48,
		bugs: c.opts.bugs,
	}
}

// start boots (or reboots) a node from what its disk holds.
func (c *simCluster) start(n *simNode) {
	core, err := New(c.coreConfig(n.id, n.disk))
	if err != nil {
		c.failf("restart %d: %v", n.id, err)
		return
	}
	n.core, n.up = core, true
	n.kv = map[string]string{}
	n.reads = map[string]uint64{}
	snap, _ := n.disk.Snapshot()
	if len(snap.Data) > 0 {
		if err := json.Unmarshal(snap.Data, &n.kv); err != nil {
			c.failf("node %d: bad snapshot data: %v", n.id, err)
		}
	}
	n.applied = snap.Meta.Index
}

func (c *simCluster) crash(n *simNode) {
	n.up = false
	n.core = nil
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

func (c *simCluster) send(m Message) {
	c.msgCount++
	c.byType[m.Type]++
	c.payloadBytes += payloadSize(m.Entries)
	if from := c.nodes[m.From]; from == nil || !from.up {
		return
	}
	if c.lossy && c.rng.Float64() < c.opts.dropP {
		return
	}
	delay := 0
	if c.lossy && c.opts.maxDelay > 0 {
		delay = c.rng.IntN(c.opts.maxDelay + 1)
	}
	c.queue = append(c.queue, inflightMsg{m: m, at: c.now + delay})
	if c.lossy && c.rng.Float64() < c.opts.dupP {
		c.queue = append(c.queue, inflightMsg{m: m, at: c.now + c.rng.IntN(c.opts.maxDelay+2)})
	}
}

func (c *simCluster) deliver() {
	var due []Message
	rest := c.queue[:0]
	for _, im := range c.queue {
		if im.at <= c.now {
			due = append(due, im.m)
		} else {
			rest = append(rest, im)
		}
	}
	c.queue = rest
	c.rng.Shuffle(len(due), func(i, j int) { due[i], due[j] = due[j], due[i] })
	for _, m := range due {
		to := c.nodes[m.To]
		if to == nil || !to.up || c.cut[[2]uint64{m.From, m.To}] {
			continue
		}
		_ = to.core.Step(m)
		c.process(to)
	}
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
			c.checkNewLeader(n)
		}
		for _, m := range rd.Messages {
			c.send(m)
		}
		if c.lossy && c.rng.Float64() < c.opts.crashP/4 {
			c.crash(n) // lose this Ready's writes
			return
		}
		if !rd.Snapshot.IsEmpty() {
			if err := n.disk.ApplySnapshot(rd.Snapshot); err != nil {
				c.failf("node %d apply snapshot: %v", n.id, err)
			}
		}
		if err := n.disk.Append(rd.Entries); err != nil {
			c.failf("node %d append: %v", n.id, err)
		}
		if !rd.HardState.IsEmpty() {
			n.disk.SetHardState(rd.HardState)
		}
		for _, m := range rd.MessagesAfterPersist {
			c.send(m)
		}
		if !rd.Snapshot.IsEmpty() {
			n.kv = map[string]string{}
			if len(rd.Snapshot.Data) > 0 {
				_ = json.Unmarshal(rd.Snapshot.Data, &n.kv)
			}
			n.applied = rd.Snapshot.Meta.Index
		}
		for _, e := range rd.CommittedEntries {
			c.apply(n, e)
		}
		for _, rs := range rd.ReadStates {
			n.reads[string(rs.RequestCtx)] = rs.Index
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

func (c *simCluster) checkNewLeader(n *simNode) {
	term := n.core.term
	if prev, ok := c.leaders[term]; ok && prev != n.id {
		c.failf("election safety: nodes %d and %d both leader in term %d", prev, n.id, term)
		return
	}
	c.leaders[term] = n.id
	// Leader completeness: every applied entry is in the new leader's log.
	first := n.core.log.firstIndex()
	for idx, e := range c.applied {
		if idx < first {
			continue
		}
		t, err := n.core.log.term(idx)
		if err != nil || t != e.Term {
			c.failf("leader completeness: leader %d of term %d lacks applied entry %d/%d (has term %d, %v)", n.id, term, idx, e.Term, t, err)
			return
		}
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

func (c *simCluster) maybeSnapshot(n *simNode) {
	if c.opts.snapEvery == 0 {
		return
	}
	snap, _ := n.disk.Snapshot()
	if n.applied < snap.Meta.Index+c.opts.snapEvery {
		return
	}
	data, _ := json.Marshal(n.kv)
	if _, err := n.disk.CreateSnapshot(n.applied, n.core.ConfState(), data); err != nil {
		c.failf("node %d snapshot: %v", n.id, err)
		return
	}
	// Keep a few entries so lagging followers usually need no snapshot.
	if keep := uint64(4); n.applied > snap.Meta.Index+keep {
		_ = n.disk.Compact(n.applied - keep)
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
	for _, n := range c.upNodes() {
		if n.up { // processing another node may have retired this one
			n.core.Tick()
			c.process(n)
		}
	}
	c.deliver()
	for _, n := range c.upNodes() {
		c.process(n)
	}
	for id, op := range c.ops {
		if c.now-op.started > 60 {
			c.abandon(id)
		}
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
	case len(voters) > c.opts.nodes && c.rng.IntN(3) == 0:
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
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddVoter, NodeID: id}, {Type: ConfChangeRemoveNode, NodeID: old}}
		if c.rng.IntN(2) == 0 {
			cc.Transition = ConfChangeTransitionJointImplicit
		}
	default:
		id := c.addNode()
		cc.Changes = []ConfChangeSingle{{Type: ConfChangeAddLearner, NodeID: id}}
	}
	_ = l.core.ProposeConfChange(cc)
	c.process(l)
}

func (c *simCluster) addNode() uint64 {
	id := c.nextID
	c.nextID++
	n := &simNode{id: id, disk: NewMemoryStorage()}
	c.nodes[id] = n
	c.start(n)
	return id
}

// retire stops nodes that a node's applied (hence committed) config no
// longer names, as an operator would, so they do not linger as campaigners.
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
				if n.up {
					c.crash(n)
				}
			}
		}
	}
}

func (c *simCluster) changePartition() {
	ids := c.sortedIDs()
	clear(c.cut)
	switch c.rng.IntN(5) {
	case 0: // heal
	case 1: // isolate the leader
		if l := c.leader(); l != nil {
			for _, id := range ids {
				c.cut[[2]uint64{l.id, id}] = true
				c.cut[[2]uint64{id, l.id}] = true
			}
		}
	case 2: // random symmetric split
		for _, a := range ids {
			for _, b := range ids {
				if a < b && (a+b+uint64(c.now))%2 == 0 && c.rng.IntN(2) == 0 {
					c.cut[[2]uint64{a, b}] = true
					c.cut[[2]uint64{b, a}] = true
				}
			}
		}
	case 3: // asymmetric: someone can send but not receive
		victim := ids[c.rng.IntN(len(ids))]
		for _, id := range ids {
			c.cut[[2]uint64{id, victim}] = true
		}
	case 4: // bridge: two halves that only one node connects
		bridge := ids[c.rng.IntN(len(ids))]
		for i, a := range ids {
			for j, b := range ids {
				if a != bridge && b != bridge && i%2 != j%2 {
					c.cut[[2]uint64{a, b}] = true
				}
			}
		}
	}
}

func (c *simCluster) chaos() {
	if c.rng.Float64() < c.opts.partitionP {
		c.changePartition()
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

// awaitLiveness: once healed, a leader must emerge and a new proposal
// must be applied by every member within the bound.
func (c *simCluster) awaitLiveness() error {
	deadline := c.now + c.opts.livenessTick
	marker := fmt.Sprintf("m|%d", c.seed)
	var propID, propTerm uint64
	for c.now < deadline && c.err == nil {
		// (Re)propose whenever the leader we proposed to is gone.
		if l := c.leader(); l != nil && (l.id != propID || l.core.term != propTerm) {
			if l.core.Propose([]byte(marker)) == nil {
				propID, propTerm = l.id, l.core.term
				c.process(l)
			}
		}
		c.step()
		if c.allApplied(marker) {
			return c.err
		}
	}
	if c.err != nil {
		return c.err
	}
	var st []string
	for _, n := range c.upNodes() {
		s := n.core.Status()
		st = append(st, fmt.Sprintf("%d:%s t%d lead=%d commit=%d applied=%d last=%d", n.id, s.Role, s.Term, s.Lead, s.Commit, s.Applied, s.LastIndex))
	}
	return fmt.Errorf("liveness: no progress within %d ticks of healing: %s", c.opts.livenessTick, strings.Join(st, "; "))
}

func (c *simCluster) allApplied(marker string) bool {
	l := c.leader()
	if l == nil {
		return false
	}
	var idx uint64
	for i, e := range c.applied {
		if string(e.Data) == marker {
			idx = i
		}
	}
	if idx == 0 {
		return false
	}
	for id := range l.core.trk.Progress {
		n := c.nodes[id]
		if n == nil || !n.up || n.applied < idx {
			return false
		}
	}
	return true
}

// checkLogMatching: if two logs hold an entry with the same index and
// term, they are identical up to it (Log Matching Property).
func (c *simCluster) checkLogMatching() {
	type logView map[uint64]Entry
	views := map[uint64]logView{}
	for _, n := range c.upNodes() {
		v := logView{}
		first, last := n.core.log.firstIndex(), n.core.log.lastIndex()
		if last >= first {
			ents, err := n.core.log.entries(first, last+1, 1<<62)
			if err != nil {
				c.failf("node %d log unreadable: %v", n.id, err)
				return
			}
			for _, e := range ents {
				v[e.Index] = e
			}
		}
		views[n.id] = v
	}
	ids := make([]uint64, 0, len(views))
	for id := range views {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			va, vb := views[a], views[b]
			var top uint64
			for idx, e := range va {
				if f, ok := vb[idx]; ok && f.Term == e.Term && idx > top {
					top = idx
				}
			}
			for idx, e := range va {
				if f, ok := vb[idx]; ok && idx <= top {
					if f.Term != e.Term || string(f.Data) != string(e.Data) {
						c.failf("log matching: nodes %d and %d agree at %d but differ at %d", a, b, top, idx)
						return
					}
				}
			}
		}
	}
}

var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(kvInput).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.Get {
			return output.(string) == state.(string), state
		}
		return true, in.Value
	},
}

func (c *simCluster) checkLinearizable() error {
	for id := range c.ops {
		c.abandon(id)
	}
	res := porcupine.CheckOperationsTimeout(kvModel, c.history, 20*time.Second)
	switch res {
	case porcupine.Illegal:
		return fmt.Errorf("linearizability: client history of %d ops is not linearizable", len(c.history))
	case porcupine.Unknown:
		return errors.New("linearizability: checker timed out")
	}
	return nil
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

func (c *simCluster) countMsgs(t MessageType) int { return c.byType[t] }

// deliverEarly hands up to k queued messages for n to it right away (no
// matter their delay), while n has a Ready outstanding.
func (c *simCluster) deliverEarly(n *simNode, k int) {
	rest := c.queue[:0]
	for _, im := range c.queue {
		if k > 0 && im.m.To == n.id && !c.cut[[2]uint64{im.m.From, im.m.To}] {
			k--
			_ = n.core.Step(im.m)
			continue
		}
		rest = append(rest, im)
	}
	c.queue = rest
}

// checkReplicasAgree: nodes that applied the same prefix hold the same
// state, however they got there (entries, snapshots, restarts).
func (c *simCluster) checkReplicasAgree() {
	byApplied := map[uint64]*simNode{}
	for _, n := range c.upNodes() {
		if o, ok := byApplied[n.applied]; ok {
			if fmt.Sprint(o.kv) != fmt.Sprint(n.kv) {
				c.failf("replicas %d and %d applied through %d but hold %v and %v", o.id, n.id, n.applied, o.kv, n.kv)
				return
			}
			continue
		}
		byApplied[n.applied] = n
	}
}
