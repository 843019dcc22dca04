package transport

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
)

// BenchmarkMsgApp measures MsgApp calls per second over loopback, each
// carrying 64 entries of 256 B, with 1, 16 and 64 calls in flight. The
// peer's handler answers at once (no fsync). Run with -benchtime=3s or
// more; the box has 2 shared cores, so compare runs made together.
func BenchmarkMsgApp(b *testing.B) {
	for _, window := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			const entries, size = 64, 256
			ps := startPeer(b, 2, benchHandler{}, "")
			var delivered atomic.Int64
			rec := newRecorder()
			tr := newTestTransport(b, rec, func(c *Config) {
				c.Window = window
				c.Deliver = func(raft.Message) { delivered.Add(1) }
			})
			tr.SetPeer(2, ps.addr)
			m := appMsg(2, 0, entries, size, rand.New(rand.NewPCG(1, 2)))
			batch := make([]raft.Message, 64)
			for i := range batch {
				batch[i] = m
			}
			// Warm up: connect.
			tr.Send(batch[:1])
			deadline := time.Now().Add(10 * time.Second)
			for delivered.Load() < 1 {
				if time.Now().After(deadline) {
					b.Fatal("no connection")
				}
				time.Sleep(time.Millisecond)
			}
			delivered.Store(0)
			b.SetBytes(entries * size)
			b.ResetTimer()
			start := time.Now()
			cpu0 := cpuTime()
			sent := 0
			deadline = time.Now().Add(5 * time.Minute)
			for int(delivered.Load()) < b.N {
				if time.Now().After(deadline) {
					b.Fatalf("stalled at %d of %d", delivered.Load(), b.N)
				}
				if sent < b.N && tr.Stats(2).Queued < 4*window+64 {
					n := min(len(batch), b.N-sent)
					tr.Send(batch[:n])
					sent += n
					continue
				}
				time.Sleep(20 * time.Microsecond)
			}
			elapsed := time.Since(start)
			cpu := cpuTime() - cpu0
			b.StopTimer()
			if st := tr.Stats(2); st.Dropped != 0 || st.Failures != 0 {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(b.N*entries)/elapsed.Seconds(), "entries/s")
			// Both ends run in this process: CPU per call is the cost of a
			// sender and a receiver together, and does not depend on what
			// else the shared machine runs.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/call")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchHandler answers every MsgApp at once.
type benchHandler struct{}

func (benchHandler) Handle(_ context.Context, m raft.Message) (raft.Message, bool, error) {
	return raft.Message{Type: raft.MsgAppResp, From: m.To, To: m.From, Term: m.Term, Index: m.Index + uint64(len(m.Entries))}, true, nil
}
