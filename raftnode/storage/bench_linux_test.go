package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// benchDir is where benchmarks write: $CAPRAFT_BENCH_DIR (to measure a
// particular disk) or a temporary directory. Both the raw loop and the WAL
// run in the same directory in the same run, so they face the same disk.
func benchDir(b *testing.B) string {
	if d := os.Getenv("CAPRAFT_BENCH_DIR"); d != "" {
		d, err := os.MkdirTemp(d, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	return b.TempDir()
}

const benchEntrySize = 256

// BenchmarkAppendFsync compares durable appends through the store with raw
// loops that pwrite the same number of 256-byte records as one buffer and
// fdatasync:
//
//   - raw: appends to the end of a file (the loop the issue names);
//   - rawpre: overwrites a 64 MiB region that was zero-filled and synced
//     beforehand (what the WAL does with its preallocated segments: the
//     true physical limit of this disk for our write pattern).
//
// Each iteration does one batch of each, back to back in the same
// directory, timed separately, so on a shared, noisy machine all three see
// the same disk conditions. The store runs in both write modes (io=direct:
// O_DIRECT|O_DSYNC blocks, the default; io=buffered: pwrite+fdatasync).
// Metrics: records/s of each, the store's records/s as a percentage of each
// raw loop, and the process CPU time (user+system) per store Save.
func BenchmarkAppendFsync(b *testing.B) {
	parent := benchDir(b)
	for _, batch := range []int{1, 16, 256} {
		for _, io := range []string{"direct", "buffered"} {
			b.Run(fmt.Sprintf("batch=%d/io=%s", batch, io), func(b *testing.B) {
				benchAppendFsync(b, parent, batch, io == "buffered")
			})
		}
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchAppendFsync(b *testing.B, parent string, batch int, buffered bool) {
	name := fmt.Sprintf("%d-%v", batch, buffered)
	f, err := os.OpenFile(filepath.Join(parent, "raw-"+name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s, err := Open(filepath.Join(parent, "wal-"+name), Options{NodeID: 1, NoDirectIO: buffered})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if s.Stats().Direct == buffered {
		b.Fatalf("store writes with direct I/O=%v, want %v", s.Stats().Direct, !buffered)
	}
	pre, err := os.OpenFile(filepath.Join(parent, "rawpre-"+name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer pre.Close()
	const region = 64 << 20
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < region; off += int64(len(zeros)) {
		if _, err := pre.WriteAt(zeros, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := pre.Sync(); err != nil {
		b.Fatal(err)
	}
	raw := make([]byte, batch*benchEntrySize)
	var preOff int64
	data := make([]byte, benchEntrySize)
	ents := make([]raft.Entry, batch)
	var off int64
	var next uint64 = 1
	var rawTime, preTime, walTime, walCPU time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(raw, off); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		off += int64(len(raw))
		t1 := time.Now()
		c0 := cpuTime(b)
		for k := range ents {
			ents[k] = raft.Entry{Index: next + uint64(k), Term: 1, Data: data}
		}
		if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: next - 1}, ents, nil); err != nil {
			b.Fatal(err)
		}
		next += uint64(batch)
		walCPU += cpuTime(b) - c0
		t2 := time.Now()
		if preOff+int64(len(raw)) > region {
			preOff = 0
		}
		if _, err := pre.WriteAt(raw, preOff); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(pre.Fd())); err != nil {
			b.Fatal(err)
		}
		preOff += int64(len(raw))
		t3 := time.Now()
		rawTime += t1.Sub(t0)
		walTime += t2.Sub(t1)
		preTime += t3.Sub(t2)
	}
	rate := func(d time.Duration) float64 { return float64(b.N*batch) / d.Seconds() }
	b.ReportMetric(rate(rawTime), "raw-rec/s")
	b.ReportMetric(rate(preTime), "rawpre-rec/s")
	b.ReportMetric(rate(walTime), "wal-rec/s")
	b.ReportMetric(100*rate(walTime)/rate(rawTime), "wal/raw-%")
	b.ReportMetric(100*rate(walTime)/rate(preTime), "wal/rawpre-%")
	b.ReportMetric(float64(walCPU.Microseconds())/float64(b.N), "wal-cpu-µs/save")
}

// BenchmarkRecovery measures Open on a log of $CAPRAFT_BENCH_RECOVERY_BYTES
// bytes of 256-byte entries (default 64 MiB; set 1073741824 for the 1 GiB
// case). It reports MB/s of log recovered. CAPRAFT_BENCH_COLD=1 evicts the
// log's pages from the page cache (fadvise DONTNEED, only our files) before
// each Open, to measure recovery from the disk.
func BenchmarkRecovery(b *testing.B) {
	size := int64(64 << 20)
	if v := os.Getenv("CAPRAFT_BENCH_RECOVERY_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	dir := filepath.Join(benchDir(b), "recovery")
	s, err := Open(dir, Options{NodeID: 1})
	if err != nil {
		b.Fatal(err)
	}
	const perBatch = 4096
	data := make([]byte, benchEntrySize)
	ents := make([]raft.Entry, perBatch)
	var next uint64 = 1
	perEntry := int64(benchEntrySize + 13 + 17)
	for written := int64(0); written < size; written += perBatch * perEntry {
		for k := range ents {
			ents[k] = raft.Entry{Index: next + uint64(k), Term: 1, Data: data}
		}
		if err := s.Save(raft.HardState{Term: 1, Commit: next - 1}, ents, nil); err != nil {
			b.Fatal(err)
		}
		next += perBatch
	}
	s.Close()
	cold := os.Getenv("CAPRAFT_BENCH_COLD") == "1"
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cold {
			b.StopTimer()
			dropCache(b, filepath.Join(dir, "wal"))
			b.StartTimer()
		}
		s, err := Open(dir, Options{NodeID: 1})
		if err != nil {
			b.Fatal(err)
		}
		if last, _ := s.LastIndex(); last != next-1 {
			b.Fatalf("recovered %d entries, wrote %d", last, next-1)
		}
		s.Close()
	}
	b.ReportMetric(float64(next-1), "entries")
}

// countingFS counts file Syncs, to show how many Saves share an fsync.
type countingFS struct {
	vfs.FS
	syncs atomic.Int64
}

type countingFile struct {
	vfs.File
	c *countingFS
}

func (c *countingFS) Create(name string) (vfs.File, error) {
	f, err := c.FS.Create(name)
	return countingFile{f, c}, err
}

func (c *countingFS) OpenRW(name string) (vfs.File, error) {
	f, err := c.FS.OpenRW(name)
	return countingFile{f, c}, err
}

func (f countingFile) Sync() error {
	f.c.syncs.Add(1)
	return f.File.Sync()
}

// OpenDirect passes direct I/O through (so the benchmark measures the
// WAL's default mode) and counts each O_DSYNC write as one sync.
func (c *countingFS) OpenDirect(name string) (vfs.DirectWriter, error) {
	d, err := c.FS.(vfs.DirectFS).OpenDirect(name)
	return countingDirect{d, c}, err
}

type countingDirect struct {
	vfs.DirectWriter
	c *countingFS
}

func (d countingDirect) WriteAt(p []byte, off int64) (int, error) {
	d.c.syncs.Add(1)
	return d.DirectWriter.WriteAt(p, off)
}

// BenchmarkGroupCommit: 16 goroutines each Save a one-entry-sized hard
// state update concurrently (as many proposals arriving at once would); the
// WAL groups whatever is queued behind an fsync into the next one. Metrics:
// saves/s and saves per fsync.
func BenchmarkGroupCommit(b *testing.B) {
	fs := &countingFS{FS: vfs.OS}
	s, err := Open(filepath.Join(benchDir(b), "group"), Options{NodeID: 1, Knobs: &storeknobs.Knobs{FS: fs}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	base := fs.syncs.Load()
	var commit atomic.Uint64
	b.SetParallelism(8) // 8 x GOMAXPROCS(2) = 16 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: commit.Add(1)}, nil, nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
	b.ReportMetric(float64(b.N)/float64(fs.syncs.Load()-base), "saves/fsync")
}

// dropCache asks the kernel to drop the cached pages of every file in dir.
// The files are clean (fsynced), so the pages can be dropped.
func dropCache(b *testing.B, dir string) {
	names, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n.Name()))
		if err != nil {
			b.Fatal(err)
		}
		const fadvDontNeed = 4
		if _, _, e := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); e != 0 {
			b.Fatalf("fadvise %s: %v", n.Name(), e)
		}
		f.Close()
	}
}
