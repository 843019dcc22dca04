package services

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// countWatcher counts the events it is sent.
type countWatcher struct{ n atomic.Int64 }

func (w *countWatcher) Events(_ context.Context, call schema.Watcher_events) error {
	l, err := call.Args().Events()
	if err == nil {
		w.n.Add(int64(l.Len()))
	}
	return err
}

func (w *countWatcher) Closed(context.Context, schema.Watcher_closed) error { return nil }

// BenchmarkPutWithWatchers: puts through a one-node cluster's write path
// (proposal, log, fsync, apply), 32 writers at once, with 0 and 100
// watchers of every key on the node (in-process Watcher capabilities).
// ns/op is per put; compare puts/s between the two. The open runs write
// as fast as they can (fan-out and writes then share the cores); the
// paced ones schedule put i at start + i/rate and report the rate
// achieved and the p99 latency from each put's scheduled time (so a
// stall counts for every put it delays).
func BenchmarkPutWithWatchers(b *testing.B) {
	for _, rate := range []int{0, 1000, 5000} {
		for _, n := range []int{0, 100} {
			name := fmt.Sprintf("open/watchers=%d", n)
			if rate > 0 {
				name = fmt.Sprintf("rate=%d/watchers=%d", rate, n)
			}
			b.Run(name, func(b *testing.B) { benchPutWithWatchers(b, n, rate) })
		}
	}
}

func benchPutWithWatchers(b *testing.B, n, rate int) {
	{
		{
			sv, ctx := singleNode(b)
			k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
			defer k.Release()
			ws := make([]*countWatcher, n)
			for i := 0; i < n; i++ {
				ws[i] = new(countWatcher)
				w := schema.Watcher_ServerToClient(ws[i])
				f, rel := k.Watch(ctx, func(p schema.KV_watch_Params) error {
					if _, err := p.NewReq(); err != nil {
						return err
					}
					return p.SetWatcher(w)
				})
				res, err := f.Struct()
				if err != nil {
					b.Fatal(err)
				}
				handle := res.Handle().AddRef() // releasing it ends the watch
				defer handle.Release()
				rel()
			}
			const writers = 32
			sessions := make([]uint64, writers)
			for i := range sessions {
				a, err := sv.proposeCommand(ctx, kv.Command{Kind: kv.CmdOpenSession})
				if err != nil {
					b.Fatal(err)
				}
				sessions[i] = a.Session
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			lat := make([]time.Duration, b.N+1)
			b.ResetTimer()
			t0 := time.Now()
			for wi := 0; wi < writers; wi++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for seq := uint64(1); ; seq++ {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						at := time.Now()
						if rate > 0 {
							at = t0.Add(time.Duration(i) * time.Second / time.Duration(rate))
							time.Sleep(time.Until(at)) // pacing the load, not synchronising
						}
						cmd := kv.Command{Kind: kv.CmdBatch, Session: sessions[wi], Ops: []kv.WriteOp{{
							Seq: seq, Type: kv.OpPut, Key: fmt.Appendf(nil, "key/%012d", i), Value: make([]byte, 32),
						}}}
						if a, err := sv.proposeCommand(ctx, cmd); err != nil || a.Err != nil {
							b.Errorf("put: %v %v", err, a.Err)
							return
						}
						lat[i] = time.Since(at)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
			slices.Sort(lat[1:])
			b.ReportMetric(float64(lat[1+(b.N-1)*99/100].Microseconds()), "p99-µs")
			// Every watcher kept up (none was closed as too slow) and gets
			// every put: the fan-out was not skipped.
			if got := sv.watches.NumWatchers(); got != n {
				b.Fatalf("%d of %d watchers left", got, n)
			}
			deadline := time.Now().Add(2 * time.Minute)
			for _, w := range ws {
				for w.n.Load() < int64(b.N) && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond) // polling a benchmark's end
				}
				if w.n.Load() != int64(b.N) {
					b.Fatalf("a watcher got %d of %d events", w.n.Load(), b.N)
				}
			}
		}
	}
}
