package raft_test

import (
	"fmt"
	"io"
	mrand "math/rand"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// The core's simulation (sim_test.go) over the durable storage: every
// node's disk is a storage.Store on its own crashfs, so a crash drops or
// tears whatever was not fsynced, and may strike inside a Save, a
// snapshot, a compaction or the recovery itself. The simulator checks that
// each recovered disk holds everything the node acknowledged (see
// sim_disk_test.go) on top of its usual checkers. This lives in package
// raft_test because raftnode/storage imports raftnode/raft.

// durableDisk is a raft.SimDisk over storage.Store and crashfs.
type durableDisk struct {
	*storage.Store
	id  uint64
	fs  vfs.FS      // what the store writes through
	cf  *crashfs.FS // the crash simulator underneath
	env *diskEnv
}

// diskEnv is what the disks of one simulation share: the source of their
// incarnations (seeded, so that runs replay: incarnations travel in
// configuration entries, whose size shapes the messages) and counters of
// the damage done to them.
type diskEnv struct {
	incs  io.Reader
	stats damageStats
}

// damageStats counts Damage calls: how the disk was stopped, what was
// damaged, and what the store made of it on reopening.
type damageStats struct {
	Calls, CleanStops                         int
	Flips, Cuts, Removals, Snapshots, Markers int
	// Outcomes: repaired (new incarnation), moved aside and started
	// empty, incarnation kept although something was damaged, nothing
	// damaged (no segment or snapshot the fault could hit).
	Repaired, Quarantined, Kept, Untouched int
}

// Small segments: crashfs holds every byte in memory (each preallocated
// segment costs its full size), and small ones make rollover and the
// deletion of compacted segments happen in every run.
func openDurable(d *durableDisk, repair bool) (*storage.Store, error) {
	return storage.Open("/data", storage.Options{
		NodeID: d.id, SegmentSize: 4 << 10, Knobs: &storeknobs.Knobs{FS: d.fs, Prealloc: wal.PreallocSync},
		Repair: repair, Rand: d.env.incs,
	})
}

// newDurableDisk returns a disk factory; wrap, if set, sits between the
// store and crashfs (to break the storage on purpose). direct lets the
// WAL write with (modelled) O_DIRECT|O_DSYNC, as real nodes do on a disk
// that allows it; otherwise it writes and fsyncs. Every disk it makes (a
// wiped disk is a new one) gets a new incarnation.
func newDurableDisk(wrap func(*crashfs.FS) vfs.FS, direct bool) func(uint64) raft.SimDisk {
	return newDurableDiskEnv(wrap, direct, &diskEnv{incs: mrand.New(mrand.NewSource(1))})
}

func newDurableDiskEnv(wrap func(*crashfs.FS) vfs.FS, direct bool, env *diskEnv) func(uint64) raft.SimDisk {
	return func(id uint64) raft.SimDisk {
		cf := crashfs.New()
		cf.SetDirectIO(direct)
		var fs vfs.FS = cf
		if wrap != nil {
			fs = wrap(cf)
		}
		d := &durableDisk{id: id, fs: fs, cf: cf, env: env}
		s, err := openDurable(d, false)
		if err != nil {
			panic(err) // an empty in-memory directory must open
		}
		d.Store = s
		return d
	}
}

// reopened is d with a newly opened store.
func (d *durableDisk) reopened(s *storage.Store) *durableDisk {
	return &durableDisk{Store: s, id: d.id, fs: d.fs, cf: d.cf, env: d.env}
}

// crashRand derives crashfs's (math/rand) source from the simulation's.
func crashRand(rng *rand.Rand) *mrand.Rand { return mrand.New(mrand.NewSource(rng.Int64())) }

// ArmCrash makes power fail within the next few file-system calls: in
// the write or fsync of a Save, a segment rollover or preallocation, or
// a snapshot's file and directory updates.
func (d *durableDisk) ArmCrash(rng *rand.Rand) {
	// Mostly the write or the fsync of the log (a Save's first two
	// calls), sometimes further in.
	n := rng.IntN(2)
	if rng.IntN(4) == 0 {
		n = rng.IntN(8)
	}
	d.cf.SetCrashAfter(int64(n), crashRand(rng))
}

// Crash abandons the store (no Close: the process died), loses power and
// opens the directory again; sometimes power fails again during recovery.
// A crash must never need a repair: the store opens without Repair.
func (d *durableDisk) Crash(rng *rand.Rand) (raft.SimDisk, error) {
	r := crashRand(rng)
	d.cf.Crash(r)
	if rng.IntN(4) == 0 {
		d.cf.SetCrashAfter(int64(rng.IntN(6)), r)
		_, _ = openDurable(d, false) // may fail, or finish before the crash point
		d.cf.Crash(r)
	}
	s, err := openDurable(d, false)
	if err != nil {
		return nil, err
	}
	return d.reopened(s), nil
}

// Incarnation implements raft.SimDisk.
func (d *durableDisk) Incarnation() uint64 { return d.Store.Incarnation() }

// Damage implements raft.SimDisk: the node stops (cleanly, or by a power
// failure), one or two faults hit its powered-off disk (bytes flipped in a
// log segment, a segment cut short or lost, the snapshots corrupted, the
// clean-stop marker damaged), and it restarts with Repair, as a node with
// peers does: the store repairs the log to its valid prefix, or moves
// everything aside and starts empty, with a new incarnation; or, having
// lost nothing, keeps its incarnation. The simulator then checks that a store that kept its
// incarnation lost nothing.
//
// After a power failure, the store cannot tell a torn final record from a
// damaged one, nor a lost suffix from a log that was never longer (see
// package storage): those faults are only done to cleanly stopped disks.
// A corrupt newest snapshot is only done when no older one is left: with
// one, the store falls back to it and keeps its incarnation, losing
// nothing, which the simulator's disk comparison (same snapshot) would
// report as a loss.
func (d *durableDisk) Damage(rng *rand.Rand) (raft.SimDisk, error) {
	st := &d.env.stats
	st.Calls++
	clean := rng.IntN(2) == 0
	if clean {
		st.CleanStops++
		if err := d.Store.Close(); err != nil {
			return nil, fmt.Errorf("clean stop: %w", err)
		}
	} else {
		d.cf.Crash(crashRand(rng))
	}
	harmed := false
	for k := 1 + rng.IntN(2); k > 0; k-- {
		harmed = d.damageOnce(rng, clean) || harmed
	}
	s, err := openDurable(d, true)
	if err != nil {
		return nil, err
	}
	switch rec := s.Recovery(); {
	case rec.Quarantine != "":
		st.Quarantined++
	case rec.Repaired:
		st.Repaired++
	case harmed:
		st.Kept++
	default:
		st.Untouched++
	}
	return d.reopened(s), nil
}

const walPath, snapPath = "/data/wal", "/data/snap"

// files lists the paths in dir whose names end in suffix.
func (d *durableDisk) files(dir, suffix string) []string {
	names, _ := d.cf.List(dir)
	var out []string
	for _, n := range names {
		if strings.HasSuffix(n, suffix) {
			out = append(out, dir+"/"+n)
		}
	}
	return out
}

// damageOnce does one fault to the powered-off disk (clean: it was
// stopped cleanly) and reports whether it found something to damage.
func (d *durableDisk) damageOnce(rng *rand.Rand, clean bool) bool {
	st := &d.env.stats
	segs := d.files(walPath, ".wal")
	if len(segs) == 0 {
		return false
	}
	last := segs[len(segs)-1]
	older := segs[:len(segs)-1] // after a crash only these may be cut or lost
	if clean {
		older = segs
	}
	switch k := rng.IntN(10); {
	case k < 5:
		p, marker := segs[rng.IntN(len(segs))], false
		if clean && rng.IntN(4) == 0 {
			if ms := d.files(walPath, "clean-stop"); len(ms) > 0 {
				p, marker = ms[0], true
			}
		}
		b, _ := d.cf.ReadFile(p)
		var lo, hi int64 // flip in [0, len) outside [lo, hi): after a crash, the final record
		if !clean && p == last {
			lo, hi = finalRecord(b)
		}
		n := int64(len(b)) - (hi - lo)
		if n <= 0 {
			return false
		}
		off := rng.Int64N(n)
		if off >= lo {
			off += hi - lo
		}
		if d.cf.FlipBits(p, off, byte(1+rng.IntN(255))) != nil {
			return false
		}
		st.Flips++
		if marker {
			st.Markers++
		}
	case k < 7:
		if len(older) == 0 {
			return false
		}
		p := older[rng.IntN(len(older))]
		if b, _ := d.cf.ReadFile(p); len(b) == 0 || d.cf.TruncateFile(p, rng.Int64N(int64(len(b)))) != nil {
			return false
		}
		st.Cuts++
	case k < 9:
		if len(older) == 0 {
			return false
		}
		p := older[rng.IntN(len(older))]
		if clean && rng.IntN(2) == 0 {
			p = last // the newest segment, lost
		}
		if d.cf.RemoveFile(p) != nil {
			return false
		}
		st.Removals++
	default:
		// Every snapshot, or the older ones (never the newest alone: see
		// Damage). Names sort oldest first.
		snaps := d.files(snapPath, ".snap")
		if len(snaps) > 1 && rng.IntN(2) == 0 {
			snaps = snaps[:len(snaps)-1]
		}
		for _, p := range snaps {
			if b, _ := d.cf.ReadFile(p); len(b) > 0 {
				d.cf.FlipBits(p, rng.Int64N(int64(len(b))), byte(1+rng.IntN(255)))
			}
		}
		if len(snaps) == 0 {
			return false
		}
		st.Snapshots++
	}
	return true
}

// finalRecord returns where the last record of a WAL segment's bytes
// starts and ends ([0, 0) if none decodes).
func finalRecord(b []byte) (lo, hi int64) {
	for off := 0; off < len(b); {
		_, n, err := wal.DecodeRecord(b[off:], 1<<30)
		if err != nil {
			break
		}
		lo, hi = int64(off), int64(off+n)
		off += n
	}
	return lo, hi
}

// durableConfigs are the simulator configurations run over the durable
// storage, with their default seed counts (-seeds overrides them).
var durableConfigs = []struct {
	name  string
	seeds int
}{
	{"n=3", 180},
	{"n=5", 110},
	{"n=7", 40},
	{"n=5,very-lossy", 40},
	{"n=5,crashy,no-prevote", 110},
	{"n=3,disk-loss", 30},
	{"n=5,disk-loss", 30},
	{"n=5,disk-loss,lossy,no-prevote", 20},
}

// TestSimulationOnDurableStorage runs the core's simulation with every
// node on storage.Store over crashfs: state machine safety, leader
// completeness, linearizability and liveness must hold, and every node
// killed at any moment must come back with everything it acknowledged.
// Odd seeds write the log with direct I/O, even seeds with fsync.
//
// Run more seeds: go test ./raftnode/raft -run TestSimulationOnDurableStorage -seeds=5000
// Replay one:     go test ./raftnode/raft -run 'TestSimulationOnDurableStorage/n=3$' -seed=N -v
func TestSimulationOnDurableStorage(t *testing.T) {
	for _, dc := range durableConfigs {
		t.Run(dc.name, func(t *testing.T) {
			for _, seed := range raft.SimSeeds(dc.seeds) {
				if err := raft.RunSimulation(seed, dc.name, newDurableDisk(nil, seed%2 != 0)); err != nil {
					t.Fatalf("seed %d: %v\nreplay: go test ./raftnode/raft -run 'TestSimulationOnDurableStorage/%s$' -seed=%d -v", seed, err, dc.name, seed)
				}
			}
		})
	}
}

// noSyncFS is a broken file system: fsync of the log's segment files does
// nothing, so what a node acknowledged may be only in the page cache when
// power fails. (Snapshots and directories are still synced, so recovery
// itself succeeds and the loss must be noticed by the simulation.)
type noSyncFS struct{ *crashfs.FS }

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error { return nil }

func (fs noSyncFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".wal") {
		return f, err
	}
	return noSyncFile{f}, nil
}

func (fs noSyncFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.wrap(name, f, err)
}

func (fs noSyncFS) OpenRW(name string) (vfs.File, error) {
	f, err := fs.FS.OpenRW(name)
	return fs.wrap(name, f, err)
}

// TestSimulationOnDurableStorageCatchesLostFsync: the durable simulation
// must be able to fail. With the log's fsync dropped, a crash loses
// acknowledged writes, which the recovery check must report within a
// bounded number of seeds.
func TestSimulationOnDurableStorageCatchesLostFsync(t *testing.T) {
	requireLossCaught(t, newDurableDisk(func(cf *crashfs.FS) vfs.FS { return noSyncFS{cf} }, false), "a log that never fsyncs")
}

// requireLossCaught runs n=3 simulations over a broken disk until the
// recovery check reports lost acknowledged state, and fails the test if
// 200 seeds go by without it.
func requireLossCaught(t *testing.T, broken func(uint64) raft.SimDisk, what string) {
	t.Helper()
	for seed := int64(0); seed < 200; seed++ {
		err := raft.RunSimulation(seed, "n=3", broken)
		if err != nil && strings.Contains(err.Error(), "lost acknowledged state") {
			t.Logf("%s caught at seed %d: %v", what, seed, err)
			return
		}
		if err != nil {
			t.Logf("seed %d failed otherwise: %v", seed, err)
		}
	}
	t.Fatalf("no crash check noticed %s in 200 seeds", what)
}

// lostDirectFS is a broken file system whose "direct" writes are plain
// buffered writes that nothing syncs: what a node acknowledged may be
// only in the page cache when power fails.
type lostDirectFS struct{ *crashfs.FS }

func (fs lostDirectFS) OpenDirect(name string) (vfs.DirectWriter, error) {
	d, err := fs.FS.OpenDirect(name)
	if err != nil {
		return nil, err // not enabled: the WAL falls back to fsync
	}
	d.Close()
	return fs.FS.OpenRW(name)
}

// TestSimulationOnDurableStorageCatchesLostDirectWrite: the same for the
// direct path. With the log's direct writes not durable, a crash loses
// acknowledged writes, which the recovery check must report.
func TestSimulationOnDurableStorageCatchesLostDirectWrite(t *testing.T) {
	requireLossCaught(t, newDurableDisk(func(cf *crashfs.FS) vfs.FS { return lostDirectFS{cf} }, true), "a log whose direct writes are not durable")
}

// TestSimulationOnDurableStorageExercisesCrashes guards against a
// simulation that stops crashing the storage where it hurts: across a few
// seeds, crashes must land inside writes, and the write in flight must
// sometimes be lost and sometimes survive.
func TestSimulationOnDurableStorageExercisesCrashes(t *testing.T) {
	var total raft.SimStats
	for seed := int64(0); seed < 40; seed++ {
		st, err := raft.RunSimulationStats(seed, "n=5,crashy,no-prevote", newDurableDisk(nil, seed%2 != 0))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		total.Crashes += st.Crashes
		total.MidWrite += st.MidWrite
		total.LostWrites += st.LostWrites
		total.PartialWrites += st.PartialWrites
		total.KeptWrites += st.KeptWrites
	}
	t.Logf("%+v", total)
	if total.Crashes < 100 || total.LostWrites == 0 || total.KeptWrites == 0 {
		t.Fatalf("durable simulation too gentle: %+v", total)
	}
}

// TestSimulationOnDurableStorageExercisesDamage guards the damage the
// durable simulation does: across a few seeds of a disk-loss
// configuration, disks must be wiped and damaged in every way, after clean
// stops and after power failures, and the store must have repaired some
// (new incarnation), moved some aside and started empty, and kept its
// incarnation for others (damage that lost nothing), with the simulator
// checking each outcome.
func TestSimulationOnDurableStorageExercisesDamage(t *testing.T) {
	env := &diskEnv{incs: mrand.New(mrand.NewSource(1))}
	var total raft.SimStats
	for seed := int64(0); seed < 150; seed++ {
		st, err := raft.RunSimulationStats(seed, "n=5,disk-loss", newDurableDiskEnv(nil, seed%2 != 0, env))
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		total.Wipes += st.Wipes
		total.Damaged += st.Damaged
	}
	d := env.stats
	t.Logf("wipes=%d damaged=%d %+v", total.Wipes, total.Damaged, d)
	if total.Wipes < 5 || total.Damaged != d.Calls || d.CleanStops == 0 || d.CleanStops == d.Calls ||
		d.Flips == 0 || d.Cuts == 0 || d.Removals == 0 || d.Snapshots == 0 || d.Markers == 0 ||
		d.Repaired == 0 || d.Quarantined == 0 || d.Kept == 0 {
		t.Fatalf("durable disk damage too gentle: wipes=%d damaged=%d %+v", total.Wipes, total.Damaged, d)
	}
}

// forgetfulDisk is a broken store: after damage it keeps reporting the
// incarnation it had before, as a store that repaired itself without
// taking a new one would.
type forgetfulDisk struct {
	*durableDisk
	inc uint64
}

func (f *forgetfulDisk) Incarnation() uint64 { return f.inc }

func (f *forgetfulDisk) Crash(rng *rand.Rand) (raft.SimDisk, error) {
	d, err := f.durableDisk.Crash(rng)
	if err != nil {
		return nil, err
	}
	return &forgetfulDisk{d.(*durableDisk), f.inc}, nil
}

func (f *forgetfulDisk) Damage(rng *rand.Rand) (raft.SimDisk, error) {
	d, err := f.durableDisk.Damage(rng)
	if err != nil {
		return nil, err
	}
	return &forgetfulDisk{d.(*durableDisk), f.inc}, nil
}

// TestSimulationOnDurableStorageCatchesDamageUnderTheOldIncarnation: the
// damage the durable disks take must really lose acknowledged state: a
// store that kept its incarnation through it is caught by the simulator's
// check within a bounded number of seeds.
func TestSimulationOnDurableStorageCatchesDamageUnderTheOldIncarnation(t *testing.T) {
	durable := newDurableDisk(nil, false)
	broken := func(id uint64) raft.SimDisk {
		d := durable(id).(*durableDisk)
		return &forgetfulDisk{d, d.Incarnation()}
	}
	for seed := int64(0); seed < 300; seed++ {
		err := raft.RunSimulation(seed, "n=5,disk-loss", broken)
		if err != nil && strings.Contains(err.Error(), "kept its incarnation") {
			t.Logf("caught at seed %d: %v", seed, err)
			return
		}
		if err != nil {
			t.Logf("seed %d failed otherwise: %v", seed, err)
		}
	}
	t.Fatal("no check noticed a damaged store keeping its incarnation in 300 seeds")
}
