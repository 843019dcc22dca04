package e2e

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTxnCounterAcrossALeaderKill: several clients, each through its own
// node, increment a counter with transactions guarded on its mod
// revision while the leader is killed with -9. Every transaction whose
// compare held counts once: the final value is at least the successful
// transactions and at most those plus the ones whose outcome is unknown
// (without unknown outcomes: exactly the successful ones).
func TestTxnCounterAcrossALeaderKill(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	old := e.waitLeader(e.c.IDs(), 10*time.Second)
	all := e.client(e.c.Addrs()...)
	ctx, cancel := opCtx()
	if _, err := all.Put(ctx, "txn-counter", []byte("0")); err != nil {
		t.Fatalf("init counter: %v", err)
	}
	cancel()

	var won, lost, unknown atomic.Int64
	var wg sync.WaitGroup
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	for _, id := range e.c.IDs() {
		eps := []string{e.c.Addr(id)} // its own node first, the others to fail over to
		for _, o := range e.others(id) {
			eps = append(eps, e.c.Addr(o))
		}
		cl := e.client(eps...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && cctx.Err() == nil; i++ {
				octx, cancel := opCtx()
				kv, err := cl.Get(octx, "txn-counter", false)
				cancel()
				if err != nil {
					backoff(cctx)
					continue
				}
				n, err := strconv.Atoi(string(kv.Value))
				if err != nil {
					t.Errorf("counter holds %q", kv.Value)
					return
				}
				octx, cancel = opCtx()
				ok, err := cl.TxnSet(octx, "txn-counter", kv.ModRevision, []byte(strconv.Itoa(n+1)))
				cancel()
				switch {
				case err != nil:
					unknown.Add(1)
					backoff(cctx)
				case ok:
					won.Add(1)
				default:
					lost.Add(1)
				}
			}
		}()
	}
	e.waitFor(15*time.Second, "transactions before the kill", func() (bool, string) {
		return won.Load() >= 50, strconv.FormatInt(won.Load(), 10)
	})
	if err := e.c.Kill(old); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader %d", old)
	e.waitLeader(e.others(old), 10*time.Second)
	before := won.Load()
	e.waitFor(15*time.Second, "transactions after the kill", func() (bool, string) {
		return won.Load() >= before+50, strconv.FormatInt(won.Load(), 10)
	})
	stop()
	wg.Wait()

	ctx, cancel = opCtx()
	defer cancel()
	kv, err := all.Get(ctx, "txn-counter", false)
	if err != nil {
		t.Fatalf("read counter: %v", err)
	}
	final, err := strconv.Atoi(string(kv.Value))
	if err != nil {
		t.Fatalf("counter holds %q", kv.Value)
	}
	w, u := int(won.Load()), int(unknown.Load())
	t.Logf("counter %d: %d transactions succeeded, %d lost the race, %d unknown", final, w, lost.Load(), u)
	if final < w || final > w+u {
		t.Fatalf("counter = %d, want between %d successful transactions and %d (+ unknown)", final, w, w+u)
	}
}
