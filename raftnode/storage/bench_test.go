package storage

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

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

// BenchmarkAppendFsync compares durable appends through the store with the
// physical limit: a raw loop that pwrites the same number of 256-byte
// records as one buffer and fdatasyncs, per batch. One iteration = one batch
// = one fsync. Compare the records/s metric.
func BenchmarkAppendFsync(b *testing.B) {
	parent := benchDir(b)
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("raw/batch=%d", batch), func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(parent, fmt.Sprintf("raw-%d", batch)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, batch*benchEntrySize)
			var off int64
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
				off += int64(len(buf))
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
		b.Run(fmt.Sprintf("wal/batch=%d", batch), func(b *testing.B) {
			s, err := Open(filepath.Join(parent, fmt.Sprintf("wal-%d", batch)), Options{NodeID: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			data := make([]byte, benchEntrySize)
			ents := make([]raft.Entry, batch)
			var next uint64 = 1
			b.SetBytes(int64(batch * benchEntrySize))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for k := range ents {
					ents[k] = raft.Entry{Index: next + uint64(k), Term: 1, Data: data}
				}
				if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: next - 1}, ents, nil); err != nil {
					b.Fatal(err)
				}
				next += uint64(batch)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkRecovery measures Open on a log of $CAPRAFT_BENCH_RECOVERY_BYTES
// bytes of 256-byte entries (default 64 MiB; set 1073741824 for the 1 GiB
// case). It reports MB/s of log recovered.
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
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
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
