package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capraft/capraft/e2e/faultproxy"
	"github.com/capraft/capraft/e2e/history"
)

// TestSpreadReadsStayLinearizableThroughFollowersAcrossLeaderChanges:
// clients with read spreading on send their linearizable gets to every
// node (a follower asks the leader for a read index and answers from its
// own state) while they also put and compare-and-swap on a few keys, and
// the leader is killed and restarted, paused (SIGSTOP) and resumed, and
// cut off by a partition, in a seeded order. The history must be
// linearizable (porcupine). Then, with the cluster settled and only
// reads running, nodes that did not lead must have served some of them.
func TestSpreadReadsStayLinearizableThroughFollowersAcrossLeaderChanges(t *testing.T) {
	metricsAddrs := freeLoopbackAddrs(t, 3)
	nodeArgs := map[uint64][]string{}
	for i, a := range metricsAddrs {
		nodeArgs[uint64(i+1)] = []string{"--metrics-listen", a}
	}
	e := newEnv(t, envConfig{proxies: true, nodeArgs: nodeArgs})
	e.waitLeader(e.c.IDs(), 10*time.Second)

	const (
		nGoroutines = 9
		maxOps      = 3000 // per goroutine
	)
	keys := []string{"a", "b", "c", "d"}
	addrs := e.c.Addrs()
	var clients []kvClient
	for i := range addrs {
		rot := append(append([]string(nil), addrs[i:]...), addrs[:i]...)
		cl, err := newSpreadingKVClient(rot, e.token, e.tls)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cl.Close() })
		clients = append(clients, cl)
	}

	rec := history.NewRecorder()
	var (
		nextPid       atomic.Int64
		readsOnly     atomic.Bool  // phase 2: no more writes
		writesOnWay   atomic.Int64 // writes begun and not yet returned
		readsAnswered atomic.Int64 // answered gets once readsOnly was set
		wg            sync.WaitGroup
	)
	nextPid.Store(nGoroutines)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for g := range nGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(e.seed + int64(g) + 1))
			cl := clients[g%len(clients)]
			pid := g
			seen := map[string][]byte{}
			for i := 0; i < maxOps && ctx.Err() == nil; i++ {
				key := keys[r.Intn(len(keys))]
				octx, cancel := context.WithTimeout(context.Background(), opTimeout)
				x := r.Intn(10)
				if readsOnly.Load() {
					x = 0
				} else if x >= 6 {
					writesOnWay.Add(1)
				}
				var err error
				switch {
				case x < 6:
					call := rec.Begin(pid, history.Input{Kind: history.Get, Key: key})
					var kv keyValue
					kv, err = cl.Get(octx, key, false)
					switch {
					case err == nil:
						call.Return(history.Output{Found: true, Value: string(kv.Value)})
						seen[key] = kv.Value
					case isNotFound(err):
						call.Return(history.Output{})
						delete(seen, key)
						err = nil
					default:
						call.Fail()
					}
					if err == nil && readsOnly.Load() {
						readsAnswered.Add(1)
					}
				case x < 8:
					val := fmt.Sprintf("%d.%d", g, i)
					call := rec.Begin(pid, history.Input{Kind: history.Put, Key: key, Value: val})
					if _, err = cl.Put(octx, key, []byte(val)); err == nil {
						call.Return(history.Output{})
					} else {
						call.Fail()
						pid = int(nextPid.Add(1) - 1)
					}
				default:
					val := fmt.Sprintf("%d.%d", g, i)
					expect, ok := seen[key]
					call := rec.Begin(pid, history.Input{Kind: history.CAS, Key: key, Value: val, Expect: string(expect), ExpectAbsent: !ok})
					_, err = cl.CAS(octx, key, expect, []byte(val))
					switch {
					case err == nil:
						call.Return(history.Output{OK: true})
						seen[key] = []byte(val)
					case isCompareFailed(err):
						call.Return(history.Output{OK: false})
						err = nil
					default:
						call.Fail()
						pid = int(nextPid.Add(1) - 1)
					}
				}
				if x >= 6 {
					writesOnWay.Add(-1)
				}
				cancel()
				if err != nil {
					backoff(ctx)
				}
			}
		}()
	}

	// The nemesis: each fault moves the leadership. The pauses are the
	// load's running time, not synchronisation.
	run := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	e.c.Mesh().SetDelay(0, 2*time.Millisecond)
	run(time.Second)
	faults := []string{"kill", "pause", "partition"}
	e.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	t.Logf("nemesis plan (each on the leader): %v", faults)
	for _, f := range faults {
		leader := e.waitLeader(e.c.IDs(), 10*time.Second)
		switch f {
		case "kill":
			t.Logf("nemesis: kill -9 leader %d", leader)
			if err := e.c.Kill(leader); err != nil {
				t.Fatal(err)
			}
			run(1500 * time.Millisecond)
			rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := e.c.Restart(rctx, leader)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		case "pause":
			t.Logf("nemesis: SIGSTOP leader %d", leader)
			if err := e.c.Pause(leader); err != nil {
				t.Fatal(err)
			}
			run(1500 * time.Millisecond)
			if err := e.c.Resume(leader); err != nil {
				t.Fatal(err)
			}
		default:
			mode := []faultproxy.Mode{faultproxy.Refuse, faultproxy.Blackhole}[e.rng.Intn(2)]
			e.c.Mesh().SetMode(mode)
			t.Logf("nemesis: isolate leader %d (%v)", leader, mode)
			e.c.Mesh().Isolate(leader)
			run(2 * time.Second)
			e.c.Mesh().Heal()
		}
		run(time.Second)
	}

	// Phase 2: only reads, on a settled cluster. Once no write is on its
	// way (a follower forwards writes, which it would count as batches),
	// every batch a node serves is a read.
	leader := e.waitLeader(e.c.IDs(), 15*time.Second)
	e.waitConverged(e.c.IDs(), 15*time.Second)
	readsOnly.Store(true)
	e.waitFor(10*time.Second, "the writes on their way answered", func() (bool, string) {
		n := writesOnWay.Load()
		return n == 0, fmt.Sprintf("%d writes on their way", n)
	})
	before := e.batchesServed(metricsAddrs)
	start := readsAnswered.Load()
	e.waitFor(20*time.Second, "reads answered with writes stopped", func() (bool, string) {
		n := readsAnswered.Load() - start
		return n >= 600, fmt.Sprintf("%d answered", n)
	})
	after := e.batchesServed(metricsAddrs)
	leaderAfter := e.waitLeader(e.c.IDs(), 10*time.Second)
	stop()
	wg.Wait()

	followerReads := int64(0)
	for i := range after {
		id := uint64(i + 1)
		if id != leader && id != leaderAfter {
			followerReads += after[i] - before[i]
		}
	}
	t.Logf("read batches served per node with writes stopped: before %v, after %v (leader %d, then %d)", before, after, leader, leaderAfter)
	if followerReads == 0 {
		t.Errorf("no follower served a read batch with read spreading on (before %v, after %v; leader %d, then %d)", before, after, leader, leaderAfter)
	}

	st := rec.Stats()
	t.Logf("history: %d operations (%d pending forever), %d failed reads dropped", st.Ops, st.Unknown, st.Dropped)
	if st.Ops-st.Unknown < 1000 {
		t.Fatalf("too few answered operations to check anything (%d)", st.Ops-st.Unknown)
	}
	res := rec.Check(60 * time.Second)
	t.Logf("porcupine: %s", res.Verdict)
	switch res.Verdict {
	case porcupine.Ok:
	case porcupine.Illegal:
		t.Fatalf("history with reads spread over the followers is NOT linearizable (seed %d)", e.seed)
	default:
		t.Fatalf("porcupine gave up (%s) after 60s (seed %d)", res.Verdict, e.seed)
	}
}

// freeLoopbackAddrs returns n loopback addresses whose ports were free a
// moment ago (for the nodes' metrics listeners).
func freeLoopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return out
}

// batchesServed scrapes each node's metrics for the KV.batch calls it
// answered without error.
func (e *env) batchesServed(metricsAddrs []string) []int64 {
	e.t.Helper()
	out := make([]int64, len(metricsAddrs))
	for i, a := range metricsAddrs {
		var err error
		for range 50 { // a restarted node's listener may take a moment
			if out[i], err = scrapeBatches(a); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // polling a listener coming up
		}
		if err != nil {
			e.t.Fatalf("metrics of node %d at %s: %v", i+1, a, err)
		}
	}
	return out
}

// scrapeBatches reads capraft_client_request_duration_seconds_count for
// method batch, code ok, from the metrics endpoint at addr.
func scrapeBatches(addr string) (int64, error) {
	hc := http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "capraft_client_request_duration_seconds_count{") ||
			!strings.Contains(line, `method="batch"`) || !strings.Contains(line, `code="ok"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		return int64(v), nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, nil // no batch answered yet
}
