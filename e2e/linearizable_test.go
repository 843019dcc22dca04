package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capraft/capraft/e2e/history"
)

// TestLinearizableUnderFaults: many clients do put, get and
// compare-and-swap on a few keys while, in a seeded order, the leader is
// killed and restarted, cut off by a partition and healed, and paused
// (SIGSTOP) and resumed, a node (leader or follower) loses its disk and
// comes back empty or has a byte of its log flipped while stopped, plus
// two more faults drawn from those and the same on a follower.
// The recorded history must be linearizable (porcupine), with operations
// that failed recorded as pending forever.
func TestLinearizableUnderFaults(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	e.waitLeader(e.c.IDs(), 10*time.Second)

	const (
		nClients = 12
		maxOps   = 3000 // per client
	)
	keys := []string{"a", "b", "c", "d", "e"}
	opTimeouts := []time.Duration{300 * time.Millisecond, time.Second, opTimeout}
	addrs := e.c.Addrs()
	var shared []kvClient
	for i := range addrs {
		// Rotate the endpoints so the clients start on different nodes
		// and followers forward too.
		rot := append(append([]string(nil), addrs[i:]...), addrs[:i]...)
		shared = append(shared, e.client(rot...))
	}

	rec := history.NewRecorder()
	var (
		nextPid     atomic.Int64
		healed      atomic.Bool
		okAfterHeal atomic.Int64
		wg          sync.WaitGroup
	)
	nextPid.Store(nClients)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for g := 0; g < nClients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(e.seed + int64(g) + 1))
			cl := shared[g%len(shared)]
			pid := g                    // porcupine process: a new one after an unknown outcome, as in Jepsen
			seen := map[string][]byte{} // last value this client saw per key
			for i := 0; i < maxOps && ctx.Err() == nil; i++ {
				key := keys[r.Intn(len(keys))]
				// Some operations get little time, so that faults leave
				// writes with an unknown outcome in the history.
				octx, cancel := context.WithTimeout(context.Background(), opTimeouts[r.Intn(len(opTimeouts))])
				var err error
				known := true
				switch x := r.Intn(10); {
				case x < 4:
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
						known = false
					}
				case x < 7:
					val := fmt.Sprintf("%d.%d", g, i)
					call := rec.Begin(pid, history.Input{Kind: history.Put, Key: key, Value: val})
					if _, err = cl.Put(octx, key, []byte(val)); err == nil {
						call.Return(history.Output{})
					} else {
						call.Fail()
						known = false
						pid = int(nextPid.Add(1) - 1)
					}
				default:
					val := fmt.Sprintf("%d.%d", g, i)
					expect, ok := seen[key]
					in := history.Input{Kind: history.CAS, Key: key, Value: val, Expect: string(expect), ExpectAbsent: !ok}
					call := rec.Begin(pid, in)
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
						known = false
						pid = int(nextPid.Add(1) - 1)
					}
				}
				cancel()
				if known && healed.Load() {
					okAfterHeal.Add(1)
				}
				if err != nil {
					backoff(ctx)
				}
			}
		}(g)
	}

	// The nemesis: a fixed set of faults in a seeded order. The pauses
	// between faults are the load's running time, not synchronisation.
	run := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	// Links get a little seeded jitter throughout, so that messages
	// between nodes do not arrive in lock-step.
	e.c.Mesh().SetDelay(0, 3*time.Millisecond)
	run(1500 * time.Millisecond)
	disk := []string{"wipe-leader", "wipe-follower", "corrupt-leader", "corrupt-follower"}
	faults := []string{"kill-leader", "partition-leader", "pause-leader", disk[e.rng.Intn(len(disk))]}
	extra := []string{"kill-leader", "partition-leader", "pause-leader", "kill-follower", "partition-follower", "pause-follower", "wipe-follower", "corrupt-follower"}
	for i := 0; i < 2; i++ {
		faults = append(faults, extra[e.rng.Intn(len(extra))])
	}
	e.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	t.Logf("nemesis plan: %v", faults)
	for _, f := range faults {
		e.injectFault(nil, f, run)
		run(time.Second)
	}
	e.waitLeader(e.c.IDs(), 15*time.Second)
	healed.Store(true)
	// The cluster must serve again once the faults are over.
	e.waitFor(15*time.Second, "operations answered after the faults", func() (bool, string) {
		n := okAfterHeal.Load()
		return n >= 300, fmt.Sprintf("%d answered", n)
	})
	stop()
	wg.Wait()

	st := rec.Stats()
	t.Logf("history: %d operations (%d pending forever), %d failed reads dropped; %d answered after the last heal",
		st.Ops, st.Unknown, st.Dropped, okAfterHeal.Load())
	if st.Ops-st.Unknown < 1000 {
		t.Fatalf("too few answered operations to check anything (%d)", st.Ops-st.Unknown)
	}
	start := time.Now()
	res := rec.Check(60 * time.Second)
	t.Logf("porcupine: %s in %v", res.Verdict, time.Since(start).Round(time.Millisecond))
	if res.Verdict == porcupine.Ok {
		// Negative control: the same history plus one stale read must be
		// rejected, or this check could not have failed.
		mutated, found := history.WithStaleRead(rec.Operations())
		if !found {
			t.Fatal("no key was overwritten in sequence: the history cannot show a stale read")
		}
		switch v := porcupine.CheckOperationsTimeout(history.Model, mutated, 30*time.Second); v {
		case porcupine.Illegal:
		case porcupine.Unknown:
			t.Logf("negative control inconclusive: porcupine did not finish within 30s")
		default:
			t.Fatalf("the history plus a stale read checks as %s, want Illegal", v)
		}
	}
	if res.Verdict == porcupine.Ok && os.Getenv("E2E_VIS") == "" {
		return
	}
	dir, err := os.MkdirTemp("", "capraft-porcupine-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "history.html")
	if err := res.Visualize(path); err != nil {
		t.Fatal(err)
	}
	switch res.Verdict {
	case porcupine.Ok:
		t.Logf("visualization: %s", path)
	case porcupine.Illegal:
		t.Fatalf("history is NOT linearizable (seed %d); visualization: %s", e.seed, path)
	default:
		t.Fatalf("porcupine gave up (%s) after 60s (seed %d); visualization: %s", res.Verdict, e.seed, path)
	}
}
