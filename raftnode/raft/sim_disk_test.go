package raft

import (
	"fmt"
	"math/rand/v2"
)

// The simulator's disk. By default each node's disk is a MemoryStorage
// (what it holds is exactly what survives a crash); the external test
// package (sim_storage_test.go) plugs in the durable storage over a
// crash-injecting file system through simOptions.newDisk, which is why the
// names here are exported: package raft_test cannot import raftnode/storage
// into package raft without a cycle.
//
// Whatever the disk, the simulator keeps a model of what the node has made
// durable (diskModel) and checks two things: every acknowledgement a node
// sends is covered by the model (checkAcks), and after every crash the
// recovered disk equals the model, or the model plus a prefix of the write
// that was in flight (checkRecovered). Together: a node killed at any
// moment comes back with everything it acknowledged.

// SimDisk is a node's disk in the simulation: the Storage the core reads
// plus the writes the simulated driver makes.
type SimDisk interface {
	Storage
	// Save makes one Ready durable: snap (nil if none), then ents, then
	// hs (skipped if empty).
	Save(hs HardState, ents []Entry, snap *Snapshot) error
	// CreateSnapshot records an application snapshot at the applied index.
	CreateSnapshot(index uint64, cs ConfState, data []byte) error
	// Compact discards log entries up to index (at most the snapshot's).
	Compact(index uint64) error
	// SnapshotMeta is the newest snapshot's metadata; ok is false if none.
	SnapshotMeta() (meta SnapshotMeta, ok bool)
	// LoadSnapshot returns the newest snapshot, data and all (what the
	// simulated drivers restore from and send).
	LoadSnapshot() (Snapshot, error)
	// ArmCrash makes power fail during the next write call (its outcome
	// drawn from rng); the simulator then calls Crash.
	ArmCrash(rng *rand.Rand)
	// Crash loses power and reboots: it returns the disk as recovered.
	// All crash decisions come from rng, so a seed replays exactly.
	Crash(rng *rand.Rand) (SimDisk, error)
	// Incarnation is the storage's incarnation (Config.Incarnation).
	Incarnation() uint64
	// Damage corrupts or loses part of a powered-off disk (drawn from
	// rng) and recovers it as a restarting node would: a disk that lost
	// anything it may have acknowledged must come back with a new
	// incarnation.
	Damage(rng *rand.Rand) (SimDisk, error)
}

// RunSimulation runs one seed of the simulation configuration named
// config (a name from simConfigs, e.g. "n=3") with each node's disk made by
// newDisk, called once per node when the node is created. It returns the
// first violation. Exported for package raft_test.
func RunSimulation(seed int64, config string, newDisk func(id uint64) SimDisk) error {
	for _, sc := range simConfigs {
		if sc.name == config {
			opts := sc.opts()
			opts.newDisk = newDisk
			return runSim(seed, opts)
		}
	}
	return fmt.Errorf("no simulation configuration %q", config)
}

// SimStats counts what the disks went through in one simulation run.
type SimStats struct {
	Crashes       int // crashes checked against the model
	MidWrite      int // of which with a write in flight; that write was
	LostWrites    int // lost,
	PartialWrites int // kept in part (some of its records),
	KeptWrites    int // or kept whole
	Wipes         int // disks lost whole
	Damaged       int // disks damaged (Damage)
}

// RunSimulationStats is RunSimulation that also reports SimStats.
func RunSimulationStats(seed int64, config string, newDisk func(id uint64) SimDisk) (SimStats, error) {
	for _, sc := range simConfigs {
		if sc.name == config {
			opts := sc.opts()
			opts.newDisk = newDisk
			c := newSimCluster(seed, opts)
			err := c.run()
			return c.disk, err
		}
	}
	return SimStats{}, fmt.Errorf("no simulation configuration %q", config)
}

// SimSeeds returns the seeds a simulation test runs: the one given with
// -seed, else -seeds of them (def if unset). Exported for package raft_test.
func SimSeeds(def int) []int64 { return simSeeds(def) }

// memDisk is the default disk. It needs no randomness, so the seeds of
// the memory-disk simulation replay exactly as before SimDisk existed.
type memDisk struct {
	*MemoryStorage
	armed bool   // the next Save loses its HardState
	inc   uint64 // incarnation
}

func newMemDisk(inc uint64) *memDisk { return &memDisk{MemoryStorage: NewMemoryStorage(), inc: inc} }

func (d *memDisk) Incarnation() uint64 { return d.inc }

// Damage loses the newest entries (at least one, if there are any, and
// possibly all since the snapshot) and, as storage that detects the loss
// would, takes a new incarnation. The hard state is kept, with its commit
// index clamped to what is left.
func (d *memDisk) Damage(rng *rand.Rand) (SimDisk, error) {
	ms := d.MemoryStorage
	ms.mu.Lock()
	defer ms.mu.Unlock()
	d.armed = false
	// Entries up to the snapshot stay: the snapshot holds their effect.
	keep := max(ms.snapshot.Meta.Index, ms.ents[0].Index) - ms.ents[0].Index + 1
	if n := uint64(len(ms.ents)) - keep; n > 0 {
		ms.ents = ms.ents[:uint64(len(ms.ents))-1-rng.Uint64N(n)]
	}
	ms.hs.Commit = min(ms.hs.Commit, ms.lastIndex())
	d.inc = rng.Uint64() | 1
	return d, nil
}

func (d *memDisk) Save(hs HardState, ents []Entry, snap *Snapshot) error {
	if snap != nil && !snap.IsEmpty() {
		if err := d.ApplySnapshot(*snap); err != nil {
			return fmt.Errorf("apply snapshot: %w", err)
		}
	}
	if err := d.Append(ents); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	if d.armed {
		return nil // crash: entries written, HardState not
	}
	if !hs.IsEmpty() {
		d.SetHardState(hs)
	}
	return nil
}

func (d *memDisk) CreateSnapshot(index uint64, cs ConfState, data []byte) error {
	_, err := d.MemoryStorage.CreateSnapshot(index, cs, data)
	return err
}

func (d *memDisk) LoadSnapshot() (Snapshot, error) { return d.Snapshot() }

func (d *memDisk) SnapshotMeta() (SnapshotMeta, bool) {
	s, _ := d.Snapshot()
	return s.Meta, s.Meta.Index > 0
}

func (d *memDisk) ArmCrash(*rand.Rand) { d.armed = true }

func (d *memDisk) Crash(*rand.Rand) (SimDisk, error) {
	d.armed = false
	return d, nil
}

// diskModel is what a node's disk must hold: the result of every write
// that returned. terms[k] is the term of entry first+k.
type diskModel struct {
	hs       HardState
	snap     SnapshotMeta
	hasSnap  bool
	first    uint64
	terms    []uint64
	inFlight []diskModel // states after each record of an unfinished write
}

func (m *diskModel) last() uint64 { return m.first + uint64(len(m.terms)) - 1 }

func (m *diskModel) term(i uint64) (uint64, bool) {
	if i >= m.first && i <= m.last() {
		return m.terms[i-m.first], true
	}
	if m.hasSnap && i == m.snap.Index {
		return m.snap.Term, true
	}
	return 0, false
}

func (m diskModel) clone() diskModel {
	m.terms = append([]uint64(nil), m.terms...)
	m.inFlight = nil
	return m
}

// applySnap mirrors Store.Save with a snapshot: the log is kept if it
// holds the snapshot's entry, and restarts after it otherwise.
func (m *diskModel) applySnap(s SnapshotMeta) {
	if t, ok := m.term(s.Index); !ok || t != s.Term {
		m.first, m.terms = s.Index+1, nil
	}
	m.snap, m.hasSnap = s, true
}

func (m *diskModel) applyEntry(e Entry) {
	switch {
	case e.Index < m.first:
		// Covered by the snapshot (MemoryStorage skips it).
	case e.Index <= m.last()+1:
		m.terms = append(m.terms[:e.Index-m.first], e.Term)
	default:
		panic(fmt.Sprintf("model: append %d after last %d", e.Index, m.last()))
	}
}

// save applies Save(hs, ents, snap) to the model.
func (m *diskModel) save(hs HardState, ents []Entry, snap *Snapshot) {
	if snap != nil && !snap.IsEmpty() {
		m.applySnap(snap.Meta)
	}
	for _, e := range ents {
		m.applyEntry(e)
	}
	if !hs.IsEmpty() {
		m.hs = hs
	}
}

// saves returns the states after each record of Save(hs, ents, snap):
// states[0] is the state before it, the last one the state after it.
func (m *diskModel) saves(hs HardState, ents []Entry, snap *Snapshot) []diskModel {
	cur := m.clone()
	states := []diskModel{cur.clone()}
	if snap != nil && !snap.IsEmpty() {
		cur.applySnap(snap.Meta)
		states = append(states, cur.clone())
	}
	for _, e := range ents {
		cur.applyEntry(e)
		states = append(states, cur.clone())
	}
	if !hs.IsEmpty() {
		cur.hs = hs
		states = append(states, cur.clone())
	}
	return states
}

// checkAcks: every message sent after persisting promises something the
// disk holds: a vote (term and vote durable), an append acknowledgement
// (entries up to its Index durable), and never a term ahead of the disk.
func (c *simCluster) checkAcks(n *simNode, msgs []Message) {
	m := &n.model
	for _, msg := range msgs {
		switch {
		case msg.PreVote:
			continue // pre-votes use a future term and change nothing durable
		case msg.Term > m.hs.Term:
			c.failf("node %d sent %s in term %d but its disk holds term %d", n.id, msg.Type, msg.Term, m.hs.Term)
		case msg.Term < m.hs.Term:
			// Stepped past that term before persisting (messages arrive
			// between Ready and Advance): the durable higher term already
			// rules out another vote or a truncation in the old one.
			continue
		case msg.Type == MsgVoteResp && msg.Granted && m.hs.Vote != msg.To:
			c.failf("node %d granted its vote to %d in term %d but its disk holds vote %d in term %d", n.id, msg.To, msg.Term, m.hs.Vote, m.hs.Term)
		case msg.Type == MsgAppResp && !msg.Reject && msg.Index > m.last() && !(m.hasSnap && msg.Index <= m.snap.Index):
			c.failf("node %d acknowledged entries through %d but its disk holds only through %d", n.id, msg.Index, m.last())
		}
	}
}

// checkRecovered compares a node's disk after a crash with the model: it
// must be the model itself, or, if a write was in flight, the model after
// some prefix of that write's records (snapshot, entries, hard state).
func (c *simCluster) checkRecovered(n *simNode) {
	m := &n.model
	cands := m.inFlight
	if cands == nil {
		cands = []diskModel{*m}
	}
	got, err := c.diskView(n.disk)
	if err != nil {
		c.failf("node %d unreadable after crash: %v", n.id, err)
		return
	}
	c.disk.Crashes++
	if len(cands) > 1 {
		c.disk.MidWrite++
	}
	for i := range cands {
		if got.matches(&cands[i]) {
			switch {
			case len(cands) == 1:
			case i == 0:
				c.disk.LostWrites++
			case i < len(cands)-1:
				c.disk.PartialWrites++
			default:
				c.disk.KeptWrites++
			}
			*m = cands[i].clone()
			return
		}
	}
	want := cands[len(cands)-1]
	c.failf("node %d lost acknowledged state in a crash: recovered hs=%+v snap=%d/%d last=%d, want hs=%+v snap=%d/%d last=%d (or a prefix of the write in flight)",
		n.id, got.hs, got.snap.Index, got.snap.Term, got.last, want.hs, want.snap.Index, want.snap.Term, want.last())
}

// diskState is what a recovered disk holds, read through its interface.
type diskState struct {
	hs    HardState
	snap  SnapshotMeta
	last  uint64
	terms map[uint64]uint64 // above the snapshot
}

func (c *simCluster) diskView(d SimDisk) (diskState, error) {
	var s diskState
	var err error
	if s.hs, _, err = d.InitialState(); err != nil {
		return s, err
	}
	s.snap, _ = d.SnapshotMeta()
	if s.last, err = d.LastIndex(); err != nil {
		return s, err
	}
	s.terms = map[uint64]uint64{}
	for i := s.snap.Index + 1; i <= s.last; i++ {
		if s.terms[i], err = d.Term(i); err != nil {
			return s, fmt.Errorf("term of %d: %w", i, err)
		}
	}
	return s, nil
}

// model is the diskModel of what the disk holds now.
func (s *diskState) model() diskModel {
	m := diskModel{hs: s.hs, snap: s.snap, hasSnap: s.snap.Index > 0, first: s.snap.Index + 1}
	for i := s.snap.Index + 1; i <= s.last; i++ {
		m.terms = append(m.terms, s.terms[i])
	}
	return m
}

func (s *diskState) matches(m *diskModel) bool {
	if s.snap.Index != m.snap.Index || s.snap.Term != m.snap.Term {
		return false
	}
	// The durable storage raises commit to the snapshot on recovery (a
	// snapshot is committed state); MemoryStorage does not.
	if s.hs.Term != m.hs.Term || s.hs.Vote != m.hs.Vote || max(s.hs.Commit, s.snap.Index) != max(m.hs.Commit, s.snap.Index) {
		return false
	}
	if s.last != max(m.last(), m.snap.Index) {
		return false
	}
	for i := s.snap.Index + 1; i <= s.last; i++ {
		if t, ok := m.term(i); !ok || t != s.terms[i] {
			return false
		}
	}
	return true
}
