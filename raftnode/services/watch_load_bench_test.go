package services

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// timedWatcher counts the events it is sent; with sample set it also
// records, for every event, how long after its put was issued it
// arrived (the put's index is the key's suffix, its issue time in
// issued).
type timedWatcher struct {
	n      atomic.Int64
	calls  atomic.Int64
	sample bool
	issued []atomic.Int64 // unix nanoseconds, by put index
	mu     sync.Mutex
	lat    []time.Duration
}

func (w *timedWatcher) Events(_ context.Context, call schema.Watcher_events) error {
	l, err := call.Args().Events()
	if err != nil {
		return err
	}
	w.n.Add(int64(l.Len()))
	w.calls.Add(1)
	if !w.sample {
		return nil
	}
	now := time.Now().UnixNano()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := 0; i < l.Len(); i++ {
		kvs, err := l.At(i).Kv()
		if err != nil {
			return err
		}
		key, err := kvs.Key()
		if err != nil {
			return err
		}
		idx, err := strconv.Atoi(string(key[len("key/"):]))
		if err != nil || idx <= 0 || idx >= len(w.issued) {
			return fmt.Errorf("unexpected key %q", key)
		}
		w.lat = append(w.lat, time.Duration(now-w.issued[idx].Load()))
	}
	return nil
}

func (w *timedWatcher) Closed(context.Context, schema.Watcher_closed) error { return nil }

// loadResult is one run of runWatchLoad.
type loadResult struct {
	putsPerSec       float64
	putP50, putP99   time.Duration
	delP50, delP99   time.Duration // from a put's issue to a sampled watcher's receipt
	drain            time.Duration // from the last put's answer to every watcher having every event
	deliveriesPerSec float64
	cpuPerPut        time.Duration // the process's CPU time (node, watchers, writers) per put
	eventsPerCall    float64
}

// runWatchLoad runs puts puts, paced at rate per second (0: as fast as
// 64 writers go), through a fresh one-node cluster's write path with
// watchers watchers of every key (in-process Watcher capabilities; the
// first sampled of them record delivery latencies), and waits until
// every watcher got every put.
func runWatchLoad(b *testing.B, puts, rate, watchers, sampled, conns int, wcfg watch.Config) loadResult {
	sv, ctx := singleNode(b, func(c *Config) { c.Watch = wcfg })
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	kvs := []schema.KV{k}
	if conns > 0 {
		kvs = remoteKVs(b, ctx, k, conns)
	}
	issued := make([]atomic.Int64, puts+1)
	ws := make([]*timedWatcher, watchers)
	for i := range ws {
		ws[i] = &timedWatcher{sample: i < sampled, issued: issued}
		w := schema.Watcher_ServerToClient(ws[i])
		f, rel := kvs[i%len(kvs)].Watch(ctx, func(p schema.KV_watch_Params) error {
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
	const writers = 64
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
	lat := make([]time.Duration, puts+1)
	cpu0 := processCPU()
	t0 := time.Now()
	for wi := 0; wi < writers; wi++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); ; seq++ {
				i := next.Add(1)
				if i > int64(puts) {
					return
				}
				at := time.Now()
				if rate > 0 {
					at = t0.Add(time.Duration(i) * time.Second / time.Duration(rate))
					time.Sleep(time.Until(at)) // pacing the load, not synchronising
				}
				issued[i].Store(time.Now().UnixNano())
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
	elapsed := time.Since(t0)
	if b.Failed() {
		b.FailNow()
	}
	// Every watcher kept up (none was closed as too slow) and gets every
	// put: the fan-out was not skipped.
	if got := sv.watches.NumWatchers(); got != watchers {
		b.Fatalf("%d of %d watchers left", got, watchers)
	}
	t1 := time.Now()
	deadline := t1.Add(5 * time.Minute)
	for _, w := range ws {
		for w.n.Load() < int64(puts) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // polling a benchmark's end
		}
		if w.n.Load() != int64(puts) {
			b.Fatalf("a watcher got %d of %d events", w.n.Load(), puts)
		}
	}
	r := loadResult{putsPerSec: float64(puts) / elapsed.Seconds(), drain: time.Since(t1)}
	r.cpuPerPut = (processCPU() - cpu0) / time.Duration(puts)
	var calls int64
	for _, w := range ws {
		calls += w.calls.Load()
	}
	if calls > 0 {
		r.eventsPerCall = float64(puts*watchers) / float64(calls)
	}
	r.deliveriesPerSec = float64(puts*watchers) / time.Since(t0).Seconds()
	slices.Sort(lat[1:])
	r.putP50, r.putP99 = lat[1+(puts-1)*50/100], lat[1+(puts-1)*99/100]
	var dl []time.Duration
	for _, w := range ws[:sampled] {
		dl = append(dl, w.lat...)
	}
	if len(dl) > 0 {
		slices.Sort(dl)
		r.delP50, r.delP99 = dl[(len(dl)-1)*50/100], dl[(len(dl)-1)*99/100]
	}
	return r
}

// BenchmarkWatchersUnderWriteLoad is issue 16's performance target: a
// one-node cluster takes puts at a fixed rate (rate=10000: 10k writes/s)
// or as fast as 64 writers go (open), once with no watchers and then
// with N watchers of every key, b.N puts each run, with the hub's calls
// paced at calls per second (-1: not paced). It reports both runs'
// puts/s and their ratio (the target: ≥ 0.8 at 1,000 watchers and 10k
// writes/s), the puts' p99 latency from their scheduled time, the
// delivery latency of events to 10 sampled watchers (from the put's
// issue to the watcher's receipt), p50 and p99, and the process's CPU
// time per put in both runs (until every watcher has every event): on a
// shared machine the figure that load elsewhere moves least. The two
// runs are made back to back so that load from elsewhere moves both.
// remoteKVs serves k on conns loopback TCP connections (go-capnp's rpc,
// as a client library's connection) and returns the client side of each.
func remoteKVs(b *testing.B, ctx context.Context, k schema.KV, conns int) []schema.KV {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var out []schema.KV
	for i := 0; i < conns; i++ {
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		server := capnprpc.NewConn(capnprpc.NewStreamTransport(sc), &capnprpc.Options{BootstrapClient: capnp.Client(k.AddRef())})
		client := capnprpc.NewConn(capnprpc.NewStreamTransport(cc), nil)
		remote := schema.KV(client.Bootstrap(ctx))
		b.Cleanup(func() {
			remote.Release()
			client.Close()
			server.Close()
		})
		out = append(out, remote)
	}
	return out
}

// BenchmarkWatchersOverConnections is BenchmarkWatchersUnderWriteLoad's
// default run with the watchers behind loopback TCP connections (the
// watchers are served by go-capnp connections in the same process, so
// their side's reading is on the same cores too).
func BenchmarkWatchersOverConnections(b *testing.B) {
	for _, n := range []int{100, 1000} {
		for _, conns := range []int{1, 10} {
			b.Run(fmt.Sprintf("rate=10000/watchers=%d/conns=%d", n, conns), func(b *testing.B) {
				benchWatchLoad(b, 10000, n, conns, watch.Config{})
			})
		}
	}
}

func BenchmarkWatchersUnderWriteLoad(b *testing.B) {
	for _, rate := range []int{10000, 0} {
		for _, n := range []int{100, 1000} {
			for _, calls := range []int{watch.DefaultCallsPerSecond, 20000, -1} {
				name := fmt.Sprintf("rate=%d/watchers=%d/calls=%d", rate, n, calls)
				if rate == 0 {
					name = fmt.Sprintf("open/watchers=%d/calls=%d", n, calls)
				}
				wcfg := watch.Config{CallsPerSecond: calls}
				b.Run(name, func(b *testing.B) { benchWatchLoad(b, rate, n, 0, wcfg) })
			}
		}
	}
}

func benchWatchLoad(b *testing.B, rate, n, conns int, wcfg watch.Config) {
	base := runWatchLoad(b, b.N, rate, 0, 0, 0, wcfg)
	with := runWatchLoad(b, b.N, rate, n, min(n, 10), conns, wcfg)
	b.ReportMetric(base.putsPerSec, "puts/s-0w")
	b.ReportMetric(with.putsPerSec, "puts/s")
	b.ReportMetric(with.putsPerSec/base.putsPerSec, "ratio")
	b.ReportMetric(float64(base.putP99.Microseconds()), "put-p99-µs-0w")
	b.ReportMetric(float64(with.putP99.Microseconds()), "put-p99-µs")
	b.ReportMetric(float64(with.delP50.Microseconds()), "deliv-p50-µs")
	b.ReportMetric(float64(with.delP99.Microseconds()), "deliv-p99-µs")
	b.ReportMetric(float64(with.drain.Milliseconds()), "drain-ms")
	b.ReportMetric(with.deliveriesPerSec, "deliveries/s")
	b.ReportMetric(with.eventsPerCall, "events/call")
	b.ReportMetric(float64(base.cpuPerPut.Nanoseconds())/1e3, "cpu-µs/put-0w")
	b.ReportMetric(float64(with.cpuPerPut.Nanoseconds())/1e3, "cpu-µs/put")
}
