package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testSeed returns the seed for a test's randomness, from $CLIENT_SEED or
// the clock, and logs it so a failure can be replayed.
func testSeed(t testing.TB) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CLIENT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CLIENT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d (rerun with CLIENT_SEED=%d)", seed, seed)
		}
	})
	return seed
}

// fakeCluster starts n fake nodes sharing one store.
func fakeCluster(t testing.TB, n int) (*fakeStore, []*fakeNode) {
	t.Helper()
	store := newFakeStore()
	nodes := make([]*fakeNode, n)
	for i := range nodes {
		nodes[i] = startFake(t, store, uint64(i+1))
	}
	return store, nodes
}

func addrs(nodes ...*fakeNode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.addr
	}
	return out
}

func newKVClient(t testing.TB, endpoints []string, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithDialTimeout(2 * time.Second), client.WithLogger(hclogFor(t))}, opts...)
	c, err := client.New(endpoints, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPutGetDeleteCASRange(t *testing.T) {
	_, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)

	rev, err := c.Put(ctx, "a", []byte("1"))
	if err != nil || rev != 1 {
		t.Fatalf("Put = %d, %v; want revision 1", rev, err)
	}
	kv, err := c.Get(ctx, "a")
	if err != nil || string(kv.Value) != "1" || kv.ModRevision != 1 || kv.CreateRevision != 1 || kv.Version != 1 || kv.Key != "a" {
		t.Fatalf("Get = %+v, %v", kv, err)
	}
	if kv, err := c.Get(ctx, "a", client.Serializable()); err != nil || string(kv.Value) != "1" {
		t.Fatalf("serializable Get = %+v, %v", kv, err)
	}
	rev, err = c.CompareAndSwap(ctx, "a", client.IfValue([]byte("1")), []byte("2"))
	if err != nil || rev != 2 {
		t.Fatalf("CAS on value = %d, %v", rev, err)
	}
	rev, err = c.CompareAndSwap(ctx, "a", client.IfModRevision(2), []byte("3"))
	if err != nil || rev != 3 {
		t.Fatalf("CAS on mod revision = %d, %v", rev, err)
	}
	if _, err := c.CompareAndSwap(ctx, "b", client.IfAbsent(), []byte("x")); err != nil {
		t.Fatalf("CAS if absent: %v", err)
	}
	if _, err := c.CompareAndDelete(ctx, "b", client.IfValue([]byte("x"))); err != nil {
		t.Fatalf("compare-and-delete: %v", err)
	}
	if _, err := c.Get(ctx, "b"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Get after compare-and-delete: %v", err)
	}
	for i := range 5 {
		if _, err := c.Put(ctx, fmt.Sprintf("p/%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("range does not end")
		}
		p, err := c.Range(ctx, "p/", 2, client.After(after))
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range p.KVs {
			keys = append(keys, kv.Key)
		}
		if !p.More {
			break
		}
		after = p.KVs[len(p.KVs)-1].Key
	}
	if fmt.Sprint(keys) != "[p/0 p/1 p/2 p/3 p/4]" {
		t.Fatalf("range pages gave %v", keys)
	}
	existed, _, err := c.Delete(ctx, "a")
	if err != nil || !existed {
		t.Fatalf("Delete = %v, %v", existed, err)
	}
	existed, _, err = c.Delete(ctx, "a")
	if err != nil || existed {
		t.Fatalf("second Delete = %v, %v; want not existed", existed, err)
	}
}

func TestTypedErrors(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)

	_, err := c.Get(ctx, "missing")
	if !errors.Is(err, client.ErrNotFound) || err.Error() != `get "missing": key not found` {
		t.Fatalf("Get missing: %v", err)
	}
	if _, err := c.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	_, err = c.CompareAndSwap(ctx, "k", client.IfValue([]byte("other")), []byte("v2"))
	var cf *client.CompareFailedError
	if !errors.Is(err, client.ErrCompareFailed) || !errors.As(err, &cf) || cf.Current == nil || string(cf.Current.Value) != "v1" || cf.Current.ModRevision != 1 {
		t.Fatalf("failed CAS: %v (%+v)", err, cf)
	}
	_, err = c.CompareAndSwap(ctx, "nope", client.IfModRevision(1), []byte("v2"))
	if !errors.As(err, &cf) || cf.Current != nil {
		t.Fatalf("failed CAS on a missing key: %v", err)
	}
	_, err = c.CompareAndSwap(ctx, "k", client.IfAbsent(), []byte("v2"))
	if !errors.Is(err, client.ErrCompareFailed) {
		t.Fatalf("IfAbsent on an existing key: %v", err)
	}
	if _, err := c.CompareAndSwap(ctx, "k", client.Compare{}, nil); err == nil {
		t.Fatal("CAS with no compare succeeded")
	}

	// Not retried: too large (refused before sending), invalid.
	before := store.batches.Load()
	_, err = c.Put(ctx, "big", make([]byte, fakeMaxValue+1))
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != client.CodeTooLarge {
		t.Fatalf("too large Put: %v", err)
	}
	if n := store.batches.Load() - before; n != 0 {
		t.Fatalf("too large Put made %d batch calls, want none (the client knows the limit)", n)
	}
	_, err = c.Put(ctx, "huge", make([]byte, 16<<20))
	if !errors.As(err, &se) || se.Code != client.CodeTooLarge || store.batches.Load()-before != 0 {
		t.Fatalf("Put over the message limit: %v (it must not be sent)", err)
	}
	_, err = c.Put(ctx, "", []byte("x"))
	if !errors.As(err, &se) || se.Code != client.CodeInvalidArgument {
		t.Fatalf("Put with empty key: %v", err)
	}
	if got := store.appliedWrites(); got != 1 {
		t.Fatalf("%d writes applied, want 1 (failed compares and rejected writes apply nothing)", got)
	}
}

func TestSingleOperationIsOneCall(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	if _, err := c.Get(ctx, "x"); !errors.Is(err, client.ErrNotFound) {
		t.Fatal(err)
	}
	if n := store.batches.Load(); n != 1 {
		t.Fatalf("first Get: %d batch calls, want 1", n)
	}
	if n := store.opens.Load(); n != 0 {
		t.Fatalf("a read opened %d sessions, want none", n)
	}
	if _, err := c.Put(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if b, o := store.batches.Load(), store.opens.Load(); b != 2 || o != 1 {
		t.Fatalf("first Put: %d batch calls and %d sessions so far, want 2 and 1", b, o)
	}
	for i := range 10 {
		if _, err := c.Put(ctx, "x", []byte("1")); err != nil {
			t.Fatal(err)
		}
		if n := store.batches.Load(); n != int64(3+i) {
			t.Fatalf("after %d more sequential puts: %d batch calls", i+1, n)
		}
	}
	if n := store.opens.Load(); n != 1 {
		t.Fatalf("%d sessions opened, want 1", n)
	}
}

func TestConcurrentOperationsAreCoalesced(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	// Each batch takes 1ms on the node, so callers pile up behind the
	// batches in flight, as they do behind a real commit.
	store.setFaults(func(int64) fault { return fault{kind: faultDelay, delay: time.Millisecond} })
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	const goroutines, perG = 64, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				key := fmt.Sprintf("g%d/%d", g, i)
				if _, err := c.Put(ctx, key, []byte(key)); err != nil {
					errs <- err
					return
				}
				if kv, err := c.Get(ctx, key); err != nil || string(kv.Value) != key {
					errs <- fmt.Errorf("get %s = %q, %v", key, kv.Value, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ops, batches := store.ops.Load(), store.batches.Load()
	t.Logf("%d operations in %d batch calls (%.1f per call, largest %d)", ops, batches, float64(ops)/float64(batches), store.maxBatch.Load())
	if ops != 2*goroutines*perG {
		t.Fatalf("node saw %d operations, want %d", ops, 2*goroutines*perG)
	}
	if ops < 4*batches {
		t.Fatalf("%d operations in %d batch calls: not coalesced", ops, batches)
	}
	if store.maxBatch.Load() > client.DefaultMaxBatch {
		t.Fatalf("a batch of %d operations, over the limit of %d", store.maxBatch.Load(), client.DefaultMaxBatch)
	}
	if got := store.appliedWrites(); got != goroutines*perG {
		t.Fatalf("%d writes applied, want %d", got, goroutines*perG)
	}
}

func TestBatchLimitIsRespected(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	store.setFaults(func(int64) fault { return fault{kind: faultDelay, delay: time.Millisecond} })
	c := newKVClient(t, addrs(nodes...), client.WithMaxBatch(3), client.WithMaxInFlight(1))
	ctx := ctx(t)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				if _, err := c.Get(ctx, fmt.Sprint(g, i)); !errors.Is(err, client.ErrNotFound) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if m := store.maxBatch.Load(); m != 3 {
		t.Fatalf("largest batch %d, want 3 (the limit, reached under load)", m)
	}
}

func TestRetryAfterDroppedConnectionDoesNotApplyTwice(t *testing.T) {
	for name, kind := range map[string]faultKind{"dropped after applying": faultDropAfter, "dropped before applying": faultDropBefore} {
		t.Run(name, func(t *testing.T) {
			store, nodes := fakeCluster(t, 1)
			c := newKVClient(t, addrs(nodes...))
			ctx := ctx(t)
			if _, err := c.Put(ctx, "warm", []byte("up")); err != nil { // opens the session: batch 1
				t.Fatal(err)
			}
			store.setFaults(func(n int64) fault {
				if n == 2 {
					return fault{kind: kind}
				}
				return fault{}
			})
			rev, err := c.Put(ctx, "k", []byte("v"))
			if err != nil {
				t.Fatalf("Put across a dropped connection: %v", err)
			}
			if rev != 2 {
				t.Fatalf("revision %d, want 2", rev)
			}
			if got := store.appliedWrites(); got != 2 {
				t.Fatalf("%d writes applied, want 2: the retry was applied again", got)
			}
			if store.batches.Load() != 3 {
				t.Fatalf("%d batch calls, want 3", store.batches.Load())
			}
			if store.opens.Load() != 1 {
				t.Fatalf("%d sessions opened, want 1: the retry must keep its session and seq", store.opens.Load())
			}
		})
	}
}

func TestConcurrentWritesSurviveDroppedConnectionsExactlyOnce(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	var rmu sync.Mutex
	store, nodes := fakeCluster(t, 2)
	store.setFaults(func(int64) fault {
		rmu.Lock()
		defer rmu.Unlock()
		switch rng.IntN(16) {
		case 0:
			return fault{kind: faultDropAfter}
		case 1:
			return fault{kind: faultDropBefore}
		case 2:
			return fault{kind: faultCode, code: schema.ErrorCode_outcomeUnknown}
		case 3:
			return fault{kind: faultCode, code: schema.ErrorCode_unavailable}
		case 4:
			return fault{kind: faultCode, code: schema.ErrorCode_shuttingDown}
		case 5:
			return fault{kind: faultCode, code: schema.ErrorCode_timeout}
		case 6:
			return fault{kind: faultDelay, delay: time.Duration(rng.IntN(3000)) * time.Microsecond}
		}
		return fault{}
	})
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	const goroutines, perG = 16, 25
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A counter advanced by compare-and-swap on its mod revision: a
			// CAS applied twice would make the next compare fail.
			counter := fmt.Sprintf("c%d", g)
			rev, err := c.CompareAndSwap(ctx, counter, client.IfAbsent(), []byte("0"))
			if err != nil {
				t.Errorf("create %s: %v", counter, err)
				return
			}
			for i := range perG {
				if _, err := c.Put(ctx, fmt.Sprintf("k%d-%d", g, i), []byte("v")); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				if rev, err = c.CompareAndSwap(ctx, counter, client.IfModRevision(rev), []byte(fmt.Sprint(i+1))); err != nil {
					t.Errorf("CAS %s to %d: %v", counter, i+1, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for g := range goroutines {
		if v, _ := store.value(fmt.Sprintf("c%d", g)); v != fmt.Sprint(perG) {
			t.Fatalf("counter c%d = %q, want %d", g, v, perG)
		}
	}
	if got := store.appliedWrites(); got != goroutines*(2*perG+1) {
		t.Fatalf("%d writes applied for %d writes", got, goroutines*(2*perG+1))
	}
	for g := range goroutines {
		for i := range perG {
			if v, ok := store.value(fmt.Sprintf("k%d-%d", g, i)); !ok || v != "v" {
				t.Fatalf("k%d-%d = %q, %v", g, i, v, ok)
			}
		}
	}
}

func TestFailover(t *testing.T) {
	t.Run("dead first endpoint", func(t *testing.T) {
		_, nodes := fakeCluster(t, 1)
		c := newKVClient(t, []string{deadAddr(t), nodes[0].addr})
		start := time.Now()
		if _, err := c.Put(ctx(t), "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Put took %v past a refusing endpoint", d)
		}
	})
	t.Run("node stops", func(t *testing.T) {
		store, nodes := fakeCluster(t, 2)
		c := newKVClient(t, addrs(nodes...))
		ctx := ctx(t)
		if _, err := c.Put(ctx, "k", []byte("1")); err != nil {
			t.Fatal(err)
		}
		nodes[0].stop()
		if _, err := c.Put(ctx, "k", []byte("2")); err != nil {
			t.Fatalf("Put after the first node stopped: %v", err)
		}
		if v, _ := store.value("k"); v != "2" {
			t.Fatalf("value %q", v)
		}
		info, err := c.Info(ctx)
		if err != nil || info.ID != 2 {
			t.Fatalf("connected to %+v, %v; want node 2", info, err)
		}
	})
	t.Run("unavailable node", func(t *testing.T) {
		store, nodes := fakeCluster(t, 2)
		// The first batch call, wherever it lands, answers unavailable.
		// Status names no leader, so the client does not move to one on
		// its own and only the failover decides where it ends up.
		store.mu.Lock()
		store.noLeader = true
		store.mu.Unlock()
		store.setFaults(func(int64) fault { return fault{} })
		c := newKVClient(t, addrs(nodes...))
		ctx := ctx(t)
		first := true
		store.setFaults(func(int64) fault {
			if first {
				first = false
				return fault{kind: faultCode, code: schema.ErrorCode_unavailable}
			}
			return fault{}
		})
		if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if info, err := c.Info(ctx); err != nil || info.ID != 2 {
			t.Fatalf("after unavailable from node 1, connected to %+v, %v; want node 2", info, err)
		}
	})
}

func TestRetriesEndWithTypedErrors(t *testing.T) {
	cases := []struct {
		name        string
		code        schema.ErrorCode
		write       bool
		unavailable bool
		unknown     bool
	}{
		{"unavailable read", schema.ErrorCode_unavailable, false, true, false},
		{"unavailable write", schema.ErrorCode_unavailable, true, true, false},
		{"shutting down write", schema.ErrorCode_shuttingDown, true, true, false},
		{"outcome unknown write", schema.ErrorCode_outcomeUnknown, true, false, true},
		{"timeout write", schema.ErrorCode_timeout, true, false, true},
		{"timeout read", schema.ErrorCode_timeout, false, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			store, nodes := fakeCluster(t, 1)
			c := newKVClient(t, addrs(nodes...))
			if _, err := c.Put(ctx(t), "warm", nil); err != nil {
				t.Fatal(err)
			}
			store.setFaults(func(int64) fault { return fault{kind: faultCode, code: tc.code} })
			octx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var err error
			if tc.write {
				_, err = c.Put(octx, "k", []byte("v"))
			} else {
				_, err = c.Get(octx, "k")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error %v does not wrap the deadline", err)
			}
			if client.IsUnavailable(err) != tc.unavailable {
				t.Errorf("IsUnavailable(%v) = %v", err, !tc.unavailable)
			}
			if errors.Is(err, client.ErrUnknownOutcome) != tc.unknown {
				t.Errorf("errors.Is(%v, ErrUnknownOutcome) = %v", err, !tc.unknown)
			}
			if n := store.batches.Load(); n < 3 {
				t.Errorf("only %d batch calls: not retried", n)
			}
		})
	}
}

func TestOutcomeUnknownIsRetriedToSuccess(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "warm", nil); err != nil {
		t.Fatal(err)
	}
	store.setFaults(func(n int64) fault {
		if n <= 3 {
			return fault{kind: faultCode, code: schema.ErrorCode_outcomeUnknown}
		}
		return fault{}
	})
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if store.appliedWrites() != 2 {
		t.Fatalf("%d writes applied", store.appliedWrites())
	}
}

func TestSessionExpiry(t *testing.T) {
	t.Run("fresh write is resent in a new session", func(t *testing.T) {
		store, nodes := fakeCluster(t, 1)
		c := newKVClient(t, addrs(nodes...))
		ctx := ctx(t)
		if _, err := c.Put(ctx, "a", nil); err != nil {
			t.Fatal(err)
		}
		store.setFaults(func(n int64) fault {
			if n == 2 {
				return fault{kind: faultExpire}
			}
			return fault{}
		})
		if _, err := c.Put(ctx, "b", []byte("v")); err != nil {
			t.Fatalf("Put after the session expired: %v", err)
		}
		if store.opens.Load() != 2 {
			t.Fatalf("%d sessions opened, want 2", store.opens.Load())
		}
		if v, ok := store.value("b"); !ok || v != "v" {
			t.Fatal("b not written")
		}
	})
	t.Run("retried write ends with unknown outcome", func(t *testing.T) {
		store, nodes := fakeCluster(t, 1)
		c := newKVClient(t, addrs(nodes...))
		ctx := ctx(t)
		if _, err := c.Put(ctx, "a", nil); err != nil {
			t.Fatal(err)
		}
		store.setFaults(func(n int64) fault {
			switch n {
			case 2:
				return fault{kind: faultDropAfter}
			case 3:
				return fault{kind: faultExpire}
			}
			return fault{}
		})
		_, err := c.Put(ctx, "b", []byte("v"))
		if !errors.Is(err, client.ErrUnknownOutcome) || !errors.Is(err, client.ErrSessionExpired) {
			t.Fatalf("Put retried into an expired session: %v; want unknown outcome and session expired", err)
		}
	})
}

func TestKeepAliveAndAckedBelow(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	store.ttlMillis = 60
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	for i := range 5 {
		if _, err := c.Put(ctx, "k", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	rpctest.Eventually(t, 5*time.Second, "keepalive on an idle session", func() bool { return store.keepAlives.Load() >= 2 })
	store.mu.Lock()
	defer store.mu.Unlock()
	for id, s := range store.sessions {
		// The 5th put carried ackedBelow 5: the first four results are forgotten.
		if s.acked != 5 || len(s.results) != 1 {
			t.Fatalf("session %d: acked %d, %d results kept; want 5 and 1", id, s.acked, len(s.results))
		}
	}
}

func TestContextEndsWaitingOperations(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	if _, err := c.Put(ctx(t), "warm", nil); err != nil {
		t.Fatal(err)
	}
	store.setFaults(func(int64) fault { return fault{kind: faultDelay, delay: 5 * time.Second} })
	octx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Put(octx, "k", []byte("v"))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Put returned after %v, its context ended at 50ms", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("Put: %v; want deadline exceeded and unknown outcome (it was sent)", err)
	}
	cctx, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = c.Get(cctx, "k")
	if !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("Get with a cancelled context: %v", err)
	}
}

func TestCloseWithOperationsInFlight(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	if _, err := c.Put(ctx(t), "warm", nil); err != nil {
		t.Fatal(err)
	}
	store.setFaults(func(int64) fault { return fault{kind: faultDelay, delay: 10 * time.Second} })
	before := store.batches.Load()
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			var err error
			if i%2 == 0 {
				_, err = c.Put(ctx(t), fmt.Sprint(i), nil)
			} else {
				_, err = c.Get(ctx(t), fmt.Sprint(i))
			}
			errs <- err
		}()
	}
	rpctest.Eventually(t, 5*time.Second, "batches in flight", func() bool { return store.batches.Load() > before })
	start := time.Now()
	c.Close()
	for range 20 {
		select {
		case err := <-errs:
			if !errors.Is(err, client.ErrClosed) {
				t.Errorf("operation cut by Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("an operation did not return after Close")
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close and the operations took %v", d)
	}
	if _, err := c.Put(ctx(t), "late", nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestUnreachableClusterIsUnavailable(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	c := newKVClient(t, []string{a, b})
	octx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Put(octx, "k", nil)
	if !client.IsUnavailable(err) || errors.Is(err, client.ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put to a dead cluster: %v", err)
	}
	want := `put "k": unavailable: cannot reach ` + a + `: connection refused; cannot reach ` + b + `: connection refused (gave up: context deadline exceeded;`
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q\nwant it to start %q", err, want)
	}
	_, err = c.Get(octx, "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get to a dead cluster: %v", err)
	}
}

func TestConcurrentFirstCallsShareOneDial(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Get(ctx, fmt.Sprint(i)); !errors.Is(err, client.ErrNotFound) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	nodes[0].mu.Lock()
	conns := len(nodes[0].conns)
	nodes[0].mu.Unlock()
	if conns != 1 {
		t.Fatalf("%d connections for 32 concurrent first calls, want 1", conns)
	}
	_ = store
}

func TestStatusAndAdmin(t *testing.T) {
	_, nodes := fakeCluster(t, 2)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	for i, n := range nodes {
		st, err := c.Status(ctx, n.addr)
		if err != nil {
			t.Fatal(err)
		}
		if st.ID != uint64(i+1) || st.Address != n.addr || st.Leader != 1 || st.Version != "fake" {
			t.Fatalf("status of %s: %+v", n.addr, st)
		}
		if want := map[int]string{0: "leader", 1: "follower"}[i]; st.Role != want {
			t.Fatalf("role %q, want %q", st.Role, want)
		}
	}
	if _, err := c.Status(ctx, deadAddr(t)); !client.IsUnavailable(err) {
		t.Fatalf("Status of a dead endpoint: %v", err)
	}
	if err := c.AddMember(ctx, 3, "127.0.0.1:1", true); err != nil {
		t.Fatal(err)
	}
	if err := c.AddMember(ctx, 3, "127.0.0.1:1", true); err == nil || !errors.As(err, new(*client.ServerError)) {
		t.Fatalf("adding a member twice: %v", err)
	}
	if err := c.PromoteMember(ctx, 3); err != nil {
		t.Fatal(err)
	}
	leader, members, err := c.Members(ctx)
	if err != nil || leader != 1 || len(members) != 3 || members[2].Learner || members[2].Address != "127.0.0.1:1" {
		t.Fatalf("Members = %d, %+v, %v", leader, members, err)
	}
	if err := c.RemoveMember(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if _, members, _ := c.Members(ctx); len(members) != 2 {
		t.Fatalf("members after remove: %+v", members)
	}
	if err := c.TransferLeadership(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if err := c.TransferLeadership(ctx, 99); err == nil {
		t.Fatal("transfer to a non-voter succeeded")
	}
	if idx, err := c.Snapshot(ctx); err != nil || idx == 0 {
		t.Fatalf("Snapshot = %d, %v", idx, err)
	}
}

// The real node serves the key-value store end to end: a single-node
// cluster answers a write and a linearizable read.
func TestKVOnARealNode(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newKVClient(t, []string{addr})
	if _, err := c.Put(ctx(t), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	kv, err := c.Get(ctx(t), "k")
	if err != nil || string(kv.Value) != "v" {
		t.Fatalf("Get = %+v, %v", kv, err)
	}
}

// silentEndpoint accepts connections and never says a word: a TLS
// handshake with it hangs until the dial timeout.
func silentEndpoint(t *testing.T) string {
	addr, _ := silentEndpointCounting(t)
	return addr
}

// silentEndpointCounting is silentEndpoint, also returning the number of
// connections accepted so far.
func silentEndpointCounting(t *testing.T) (string, *atomic.Int64) {
	var accepted atomic.Int64
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted.Add(1)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), &accepted
}

func TestHungEndpointFailsOverAfterTheDialTimeout(t *testing.T) {
	serverTLS, clientTLS := rpctest.SelfSignedTLS(t)
	store := newFakeStore()
	live, err := serveFakeTLS(store, 2, hclogFor(t), serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(live.stop)
	const dialTimeout = time.Second
	c := newKVClient(t, []string{silentEndpoint(t), live.addr}, client.WithTLS(clientTLS), client.WithDialTimeout(dialTimeout))
	ctx := ctx(t)

	// 16 first calls at once share one dial: together they wait about one
	// dial timeout, not sixteen.
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Put(ctx, fmt.Sprint(i), nil); err != nil {
				t.Error(err)
			}
		}()
	}
	// Meanwhile Status on the live node does not wait for the hung dial.
	if _, err := c.Status(ctx, live.addr); err != nil {
		t.Error(err)
	}
	if d := time.Since(start); d >= dialTimeout {
		t.Errorf("Status waited %v behind another endpoint's dial", d)
	}
	wg.Wait()
	if d := time.Since(start); d > 4*dialTimeout {
		t.Fatalf("16 first Puts took %v with a %v dial timeout", d, dialTimeout)
	}
	if got := store.appliedWrites(); got != 16 {
		t.Fatalf("%d writes applied", got)
	}
}

func TestCloseDuringADial(t *testing.T) {
	_, clientTLS := rpctest.SelfSignedTLS(t)
	addr, accepted := silentEndpointCounting(t)
	c := newKVClient(t, []string{addr}, client.WithTLS(clientTLS), client.WithDialTimeout(time.Minute))
	errs := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx(t), "k", nil)
		errs <- err
	}()
	rpctest.Eventually(t, 5*time.Second, "the Put's dial reaches the endpoint", func() bool { return accepted.Load() > 0 })
	start := time.Now()
	c.Close()
	select {
	case err := <-errs:
		if !errors.Is(err, client.ErrClosed) {
			t.Fatalf("Put cut by Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Put still waiting 5s after Close")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v during a dial", d)
	}
}

// A lone operation costs one network round trip, the first one included:
// the bootstrap, kv() and batch() calls are pipelined. Each step is timed
// on three fresh clients and the fastest counts, so that a scheduling
// hiccup on a busy machine does not fail the test.
func TestLoneOperationIsOneRoundTrip(t *testing.T) {
	_, nodes := fakeCluster(t, 1)
	const oneWay = 100 * time.Millisecond
	const rtt = 2 * oneWay
	proxy := rpctest.NewProxy(t, nodes[0].addr, oneWay)
	ctx := ctx(t)
	type step struct {
		what   string
		rounds int
		op     func(c *client.Client) error
	}
	get := func(c *client.Client) error { _, err := c.Get(ctx, "k"); return err }
	put := func(c *client.Client) error { _, err := c.Put(ctx, "k", []byte("v")); return err }
	steps := []step{
		{"first Get on a new connection", 1, get},
		{"second Get", 1, get},
		{"first Put (opens the session)", 2, put},
		{"second Put", 1, put},
		{"Members", 1, func(c *client.Client) error { _, _, err := c.Members(ctx); return err }},
		{"Status of the connected endpoint", 1, func(c *client.Client) error { _, err := c.Status(ctx, proxy.Addr()); return err }},
	}
	fastest := make([]time.Duration, len(steps))
	for try := range 3 {
		c := newKVClient(t, []string{proxy.Addr()})
		for i, s := range steps {
			start := time.Now()
			if err := s.op(c); err != nil && !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("%s: %v", s.what, err)
			}
			if d := time.Since(start); try == 0 || d < fastest[i] {
				fastest[i] = d
			}
		}
		c.Close()
	}
	for i, s := range steps {
		d := fastest[i]
		if d < time.Duration(s.rounds)*rtt || d >= time.Duration(s.rounds+1)*rtt {
			t.Errorf("%s took %v, want %d round trip(s) of %v", s.what, d, s.rounds, rtt)
		}
	}
}

func TestMalformedAnswersAreErrorsNotPanics(t *testing.T) {
	for name, kind := range map[string]faultKind{"wrong kind": faultWrongKind, "too few results": faultShort} {
		t.Run(name, func(t *testing.T) {
			store, nodes := fakeCluster(t, 1)
			c := newKVClient(t, addrs(nodes...))
			store.setFaults(func(int64) fault { return fault{kind: kind} })
			_, _, err := c.Delete(ctx(t), "k")
			var se *client.ServerError
			if !errors.As(err, &se) || se.Code != client.CodeInternal || !strings.Contains(err.Error(), "a bug in the node") {
				t.Fatalf("Delete answered with a malformed result: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestAdminRetries(t *testing.T) {
	store, nodes := fakeCluster(t, 2)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	store.adminUnavailable.Store(3)
	if _, members, err := c.Members(ctx); err != nil || len(members) != 2 {
		t.Fatalf("Members after 3 unavailable answers: %v, %v", members, err)
	}
	store.adminUnavailable.Store(3)
	if err := c.AddMember(ctx, 5, "127.0.0.1:5", false); err != nil {
		t.Fatalf("AddMember after 3 unavailable answers (nothing applied: retried): %v", err)
	}
	// A lost connection leaves a membership change's outcome unknown: it
	// is not retried.
	store.adminDrop.Store(1)
	err := c.AddMember(ctx, 6, "127.0.0.1:6", false)
	if !errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("AddMember cut by a lost connection: %v, want unknown outcome", err)
	}
	if _, members, err := c.Members(ctx); err != nil || len(members) != 4 {
		t.Fatalf("Members: %v, %v; want 4 (the cut AddMember was applied)", members, err)
	}
	store.adminUnavailable.Store(1 << 30)
	octx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := c.Members(octx); !client.IsUnavailable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Members with no leader until the deadline: %v", err)
	}
	if err := c.RemoveMember(octx, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RemoveMember after the deadline: %v", err)
	}
}

// A client connected to a follower moves to the leader's endpoint (among
// its own endpoints), so writes skip the follower's hop.
func TestMovesToTheLeadersEndpoint(t *testing.T) {
	store, nodes := fakeCluster(t, 3)
	store.mu.Lock()
	store.leader = 3
	store.mu.Unlock()
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	rpctest.Eventually(t, 10*time.Second, "the client talks to node 3, the leader", func() bool {
		if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		return err == nil && info.ID == 3
	})
}
