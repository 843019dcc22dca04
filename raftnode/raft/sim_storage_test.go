package raft_test

import (
	mrand "math/rand"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/raftnode/storage/crashfs"
	"github.com/capraft/capraft/raftnode/storage/vfs"
	"github.com/capraft/capraft/raftnode/storage/wal"
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
	id uint64
	fs vfs.FS      // what the store writes through
	cf *crashfs.FS // the crash simulator underneath
}

// Small segments: crashfs holds every byte in memory (each preallocated
// segment costs its full size), and small ones make rollover and the
// deletion of compacted segments happen in every run.
func openDurable(id uint64, fs vfs.FS) (*storage.Store, error) {
	return storage.Open("/data", storage.Options{
		NodeID: id, FS: fs, SegmentSize: 4 << 10, Prealloc: wal.PreallocSync,
	})
}

// newDurableDisk returns a disk factory; wrap, if set, sits between the
// store and crashfs (to break the storage on purpose). direct lets the
// WAL write with (modelled) O_DIRECT|O_DSYNC, as real nodes do on a disk
// that allows it; otherwise it writes and fsyncs.
func newDurableDisk(wrap func(*crashfs.FS) vfs.FS, direct bool) func(uint64) raft.SimDisk {
	return func(id uint64) raft.SimDisk {
		cf := crashfs.New()
		cf.SetDirectIO(direct)
		var fs vfs.FS = cf
		if wrap != nil {
			fs = wrap(cf)
		}
		s, err := openDurable(id, fs)
		if err != nil {
			panic(err) // an empty in-memory directory must open
		}
		return &durableDisk{Store: s, id: id, fs: fs, cf: cf}
	}
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
func (d *durableDisk) Crash(rng *rand.Rand) (raft.SimDisk, error) {
	r := crashRand(rng)
	d.cf.Crash(r)
	if rng.IntN(4) == 0 {
		d.cf.SetCrashAfter(int64(rng.IntN(6)), r)
		_, _ = openDurable(d.id, d.fs) // may fail, or finish before the crash point
		d.cf.Crash(r)
	}
	s, err := openDurable(d.id, d.fs)
	if err != nil {
		return nil, err
	}
	return &durableDisk{Store: s, id: d.id, fs: d.fs, cf: d.cf}, nil
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

// Incarnation implements raft.SimDisk.
func (d *durableDisk) Incarnation() uint64 { return 0 }

// Damage implements raft.SimDisk.
func (d *durableDisk) Damage(rng *rand.Rand) (raft.SimDisk, error) { return d.Crash(rng) }
