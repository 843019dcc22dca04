package watch

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// countingWatcher counts what it is sent.
type countingWatcher struct {
	events atomic.Int64
	upTo   atomic.Uint64
}

func (w *countingWatcher) Events(_ context.Context, call schema.Watcher_events) error {
	l, err := call.Args().Events()
	if err != nil {
		return err
	}
	w.events.Add(int64(l.Len()))
	w.upTo.Store(call.Args().UpTo())
	return nil
}

func (w *countingWatcher) Closed(context.Context, schema.Watcher_closed) error { return nil }

// putEntries returns n entries of one put each (16-byte keys, 32-byte
// values), after an entry opening session 1.
func putEntries(n int) [][]byte {
	open := kv.Command{Kind: kv.CmdOpenSession}
	out := [][]byte{open.AppendBinary(nil)}
	for i := 0; i < n; i++ {
		c := kv.Command{Kind: kv.CmdBatch, Session: 1, Ops: []kv.WriteOp{{
			Seq: uint64(i + 1), Type: kv.OpPut, Key: fmt.Appendf(nil, "key/%012d", i), Value: make([]byte, 32),
		}}}
		out = append(out, c.AppendBinary(nil))
	}
	return out
}

// startWatchers starts n watches of every key on a hub over s.
func startWatchers(b *testing.B, s *kv.Store, n int) (*Hub, []*countingWatcher) {
	h := NewHub(s, Config{})
	b.Cleanup(h.Close)
	ws := make([]*countingWatcher, n)
	for i := range ws {
		ws[i] = new(countingWatcher)
		if _, _, err := h.Watch(schema.Watcher_ServerToClient(ws[i]), Request{From: 1}, nil); err != nil {
			b.Fatal(err)
		}
	}
	return h, ws
}

// waitAll waits until every watcher is up to date with rev.
func waitAll(b *testing.B, ws []*countingWatcher, rev uint64) {
	deadline := time.Now().Add(5 * time.Minute)
	for _, w := range ws {
		for w.upTo.Load() < rev {
			if time.Now().After(deadline) {
				b.Fatalf("watcher up to %d of %d", w.upTo.Load(), rev)
			}
			time.Sleep(time.Millisecond) // polling a benchmark's end, not synchronising a test
		}
	}
}

// BenchmarkWatchFanout: b.N puts, one per entry, applied to a store while
// N watchers of every key receive them through in-process Watcher
// capabilities (Cap'n Proto's local calls, no network). events/s is what
// all watchers together received per second of wall time, until the last
// was up to date; cpu-ns/event the process's CPU time (applying,
// fanning out, and the watchers' handlers) per event delivered, which
// load elsewhere on the machine moves less.
func BenchmarkWatchFanout(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			s := kv.New(kv.Config{})
			entries := putEntries(b.N)
			_, ws := startWatchers(b, s, n)
			b.ResetTimer()
			cpu0 := processCPU()
			for i, e := range entries {
				s.Apply(uint64(i+1), e)
			}
			waitAll(b, ws, uint64(b.N))
			cpu := processCPU() - cpu0
			b.StopTimer()
			var total int64
			for _, w := range ws {
				total += w.events.Load()
			}
			if total != int64(n*b.N) {
				b.Fatalf("%d events delivered, want %d", total, n*b.N)
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
			if cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(total), "cpu-ns/event")
			}
		})
	}
}

// BenchmarkApplyPutWithWatchers: the apply loop's cost per put with 0
// and 100 watchers of every key consuming at the same time on the same
// cores. apply-cpu-ns/put is the CPU time of the applying thread (the
// goroutine locked to it; Linux), which scheduling noise does not move;
// apply-ns/put its wall time in Store.Apply, which includes being
// preempted by the watchers; ns/op includes waiting for the watchers to
// finish, so it is the whole system's.
func BenchmarkApplyPutWithWatchers(b *testing.B) {
	for _, n := range []int{0, 100} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			s := kv.New(kv.Config{})
			entries := putEntries(b.N)
			_, ws := startWatchers(b, s, n)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var inApply time.Duration
			b.ResetTimer()
			cpu0 := threadCPU()
			for i, e := range entries {
				t0 := time.Now()
				s.Apply(uint64(i+1), e)
				inApply += time.Since(t0)
			}
			cpu := threadCPU() - cpu0
			b.ReportMetric(float64(inApply.Nanoseconds())/float64(b.N), "apply-ns/put")
			if cpu > 0 {
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "apply-cpu-ns/put")
			}
			waitAll(b, ws, uint64(b.N))
		})
	}
}
