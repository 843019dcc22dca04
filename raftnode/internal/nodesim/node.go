package nodesim

import (
	"fmt"
	mrand "math/rand"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
)

// A simulated node: the real driver, key-value store and storage over a
// disk (crashfs) that outlives the process.

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
	// slowDisk: its disk's writes take time (slowdisk.go); fsyncUntil:
	// it waits for one until then, and held is what it sent or answered
	// after that write, released when it completes.
	slowDisk   bool
	fsyncUntil time.Time
	held       []func()
	// skew is how far its clock runs ahead of the simulation's (clock
	// jumps, drift); drift is how much faster it runs (0: exact).
	skew  time.Duration
	drift float64
	// m is its membership (membership.go).
	m membership
	// countedInc is the incarnation the leader last counted it as a
	// voter with; demoted: it is now a learner to be restored.
	countedInc uint64
	demoted    bool
	// countedBy is the leader and term whose configuration counted it.
	countedBy leaderTerm
}

// paused reports whether n's process is frozen now.
func (n *node) paused() bool { return n.c.now.Before(n.pausedUntil) || n.holding() }

// frozenUntil is when n's process runs again (see paused).
func (n *node) frozenUntil() time.Time {
	if n.fsyncUntil.After(n.pausedUntil) {
		return n.fsyncUntil
	}
	return n.pausedUntil
}

type bgTask struct {
	at time.Time
	fn func()
}

// openStore opens n's data directory on its crash-simulating disk.
func (n *node) openStore() error {
	s, err := storage.Open("/data", storage.Options{
		NodeID: n.id, Knobs: &storeknobs.Knobs{FS: n.c.fsOf(n.fs), Prealloc: wal.PreallocSync}, SegmentSize: 16 << 10,
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
	n.kv = kv.New(kv.Config{SessionTTL: c.opts.SessionTTL})
	n.clock = NewClock(c.now.Add(n.skew))
	n.bg = nil
	var logger hclog.Logger
	if c.opts.Trace != nil {
		logger = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("n%d", n.id), Output: c.opts.Trace, Level: hclog.Debug,
			TimeFn: func() time.Time { return n.clock.Now() }})
	}
	epoch := n.epoch
	d, err := driver.New(driver.Config{
		ID: n.id, Storage: slowStore{n.store, n}, Machine: n.kv.Machine(),
		Transport: &transport{c: c, from: n.id, epoch: epoch},
		DataDir:   fmt.Sprintf("n%d", n.id), Bootstrap: boot,
		HeartbeatInterval: heartbeatInterval, ElectionTimeout: electionTimeout, RequestTimeout: requestTimeout,
		SnapshotEntries: c.opts.SnapshotEntries, SnapshotBytes: 1 << 20,
		Seed:   c.rng.Uint64(),
		Logger: logger,
		OnApplied: func(index uint64, res statemachine.Result, replayed bool) {
			c.checker.applied(c, n, index, res)
		},
		// The moment it becomes leader (a stepped driver's Status runs
		// on its loop at once: this is its loop).
		OnLeading: func() { c.leading(n) },
		Clock:     n.clock,
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
	n.held, n.fsyncUntil = nil, time.Time{}
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

// newDisk returns an empty disk, with O_DIRECT or without (slow or not:
// the node's slowDisk).
func (c *cluster) newDisk() *crashfs.FS {
	fs := crashfs.New()
	fs.SetDirectIO(c.rng.IntN(2) == 0 && !c.opts.bugs.walNoSync)
	return fs
}

// fsOf is the file system a node's storage writes through: its disk, or
// with Options.bugs.walNoSync, its disk with the log's fsync dropped.
func (c *cluster) fsOf(fs *crashfs.FS) vfs.FS {
	if c.opts.bugs.walNoSync {
		return noSyncFS{fs}
	}
	return fs
}

// noSyncFS is a broken file system: fsync of the log's segment files does
// nothing, so what a node acknowledged may be only in the page cache when
// power fails (a driver that acknowledges before persisting looks the
// same from outside).
type noSyncFS struct{ *crashfs.FS }

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error { return nil }

func (fs noSyncFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".wal") {
		return f, err
	}
	return noSyncFile{f}, nil
}

// Create implements vfs.FS.
func (fs noSyncFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	return fs.wrap(name, f, err)
}

// OpenRW implements vfs.FS.
func (fs noSyncFS) OpenRW(name string) (vfs.File, error) {
	f, err := fs.FS.OpenRW(name)
	return fs.wrap(name, f, err)
}

// leaderTerm names one leader's reign.
type leaderTerm struct{ leader, term uint64 }
