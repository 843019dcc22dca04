package raftnode_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// snapReadFS counts the bytes read from snapshot files.
type snapReadFS struct {
	vfs.FS
	read atomic.Int64
}

func (fs *snapReadFS) Open(name string) (vfs.File, error) {
	f, err := fs.FS.Open(name)
	if err != nil || !strings.Contains(name, "/snap/") {
		return f, err
	}
	return &snapReadFile{File: f, fs: fs}, nil
}

type snapReadFile struct {
	vfs.File
	fs *snapReadFS
}

func (f *snapReadFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	f.fs.read.Add(int64(n))
	return n, err
}

// BenchmarkPutLatencyDuringSnapshotTransfer measures a client's put
// latency through the leader of a 3-node cluster (real fsyncs) while it
// streams a snapshot of 64 MiB to a follower far behind, and before (the
// follower down: the same quorum of two), and how many bytes of snapshot
// files the leader read for the transfer; unpaced with 1 MiB or 256 KiB
// writes, and with the defaults (paced). One iteration is the whole
// scenario: run it with -benchtime=1x. All three nodes share the
// machine's cores, so an unpaced transfer competes with the puts for CPU
// on both of its ends.
func BenchmarkPutLatencyDuringSnapshotTransfer(b *testing.B) {
	for _, tc := range []struct {
		name  string
		rate  int64
		chunk int
	}{
		{"unpaced/chunk=1MiB", -1, 1 << 20},
		{"unpaced/chunk=256KiB", -1, 256 << 10},
		{"default", 0, 0}, // 64 MiB/s, 256 KiB
	} {
		b.Run("state=64MiB/"+tc.name, func(b *testing.B) {
			for range b.N {
				benchPutDuringTransfer(b, 64<<20, tc.rate, tc.chunk)
			}
		})
	}
}

func benchPutDuringTransfer(b *testing.B, state int, rate int64, chunk int) {
	fss := map[uint64]*snapReadFS{}
	for id := uint64(1); id <= 3; id++ {
		fss[id] = &snapReadFS{FS: vfs.OS}
	}
	const valueSize = 4 << 10
	c := newTestClusterTB(b, 3, func(cfg *raftnode.Config) {
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 100*time.Millisecond, time.Second
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries = uint64(state/valueSize/4), 100
		cfg.WALSegmentSize = 4 << 20
		cfg.StorageKnobs = &storeknobs.Knobs{FS: fss[cfg.ID]}
		cfg.SnapshotRate, cfg.SnapshotChunk = rate, chunk
	})
	lead := c.leader()
	f := lead%3 + 1
	cl, err := client.New([]string{c.addrs[lead]})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c.stop(f)
	// Load the state with many writers.
	value := make([]byte, valueSize)
	keys := state / valueSize
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(keys); i = next.Add(1) {
				if _, err := cl.Put(ctx, fmt.Sprintf("k%07d", i), value); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// A snapshot of all of it (after the one that may be under way).
	if _, err := c.nodes[lead].Snapshot(ctx); err != nil {
		b.Fatal(err)
	}
	// One writer, one put at a time: its latencies before the transfer...
	small := make([]byte, 256)
	put := func(i int) time.Duration {
		start := time.Now()
		if _, err := cl.Put(ctx, fmt.Sprintf("p%d", i%1000), small); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	var before []time.Duration
	for i := range 2000 {
		before = append(before, put(i))
	}
	// ...and while the follower is caught up.
	read0 := fss[lead].read.Load()
	b.ResetTimer()
	start := time.Now()
	c.start(f)
	// "During" is while the leader streams: from the transfer's start
	// to its end (the follower's restart and its restore are not part
	// of it).
	var during []time.Duration
	var took time.Duration
	sent := func() raftnode.SnapshotSendStatsT { return raftnode.SnapshotSendStats(c.nodes[lead]) }
	s0 := sent()
	for i := 0; c.nodes[f].Status(ctx).SnapshotsInstalled == 0; i++ {
		if time.Since(start) > 5*time.Minute {
			b.Fatal("no snapshot installed within 5 minutes")
		}
		st := sent()
		streaming := st.Started > s0.Started && st.Finished+st.Failed == s0.Finished+s0.Failed
		t0 := time.Now()
		d := put(i)
		if streaming {
			during = append(during, d)
			took += time.Since(t0)
		}
	}
	b.StopTimer()
	read := fss[lead].read.Load() - read0
	p := func(d []time.Duration, q float64) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Microseconds()) / 1000
	}
	b.ReportMetric(p(before, 0.5), "p50-before-ms")
	b.ReportMetric(p(before, 0.99), "p99-before-ms")
	if len(during) > 0 {
		b.ReportMetric(p(during, 0.5), "p50-during-ms")
		b.ReportMetric(p(during, 0.99), "p99-during-ms")
	}
	b.ReportMetric(float64(len(during)), "puts-during")
	b.ReportMetric(took.Seconds(), "streaming-s")
	b.ReportMetric(time.Since(start).Seconds(), "restart-to-installed-s")
	b.ReportMetric(float64(read)/float64(1<<20), "leader-snap-MiB-read")
	b.ReportMetric(float64(newestSnapshotSize(b, c.dirs[lead]))/float64(1<<20), "snapshot-MiB")
}

// newestSnapshotSize is the size of the newest snapshot file in dir.
func newestSnapshotSize(b *testing.B, dir string) int64 {
	names, err := filepath.Glob(filepath.Join(dir, "snap", "*.snap"))
	if err != nil || len(names) == 0 {
		b.Fatalf("no snapshot in %s: %v", dir, err)
	}
	slices.Sort(names) // named by index, in hex of fixed width
	st, err := os.Stat(names[len(names)-1])
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}
