package services

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// testWatcher is a Watcher that records what it is sent. With stall set,
// its events calls block until release is closed.
type testWatcher struct {
	stall   bool
	release chan struct{}

	mu      sync.Mutex
	batches []testBatch
	closed  string
	code    schema.ErrorCode
	oldest  uint64
	done    chan struct{} // closed by closed()
}

type testBatch struct {
	upTo   uint64
	events []string // "rev type key=value"
}

func newTestWatcher(stall bool) *testWatcher {
	return &testWatcher{stall: stall, release: make(chan struct{}), done: make(chan struct{})}
}

func (w *testWatcher) Events(ctx context.Context, call schema.Watcher_events) error {
	if w.stall {
		call.Go() // so closed() is served while this blocks
		select {
		case <-w.release:
		case <-ctx.Done():
		}
	}
	evs, err := call.Args().Events()
	if err != nil {
		return err
	}
	b := testBatch{upTo: call.Args().UpTo()}
	for i := 0; i < evs.Len(); i++ {
		e := evs.At(i)
		kvs, _ := e.Kv()
		k, _ := kvs.Key()
		v, _ := kvs.Value()
		s := fmt.Sprintf("%d %s %s=%s", kvs.ModRevision(), e.Type(), k, v)
		if e.HadPrev() {
			p, _ := e.Prev()
			pv, _ := p.Value()
			s += " prev=" + string(pv)
		}
		b.events = append(b.events, s)
	}
	w.mu.Lock()
	w.batches = append(w.batches, b)
	w.mu.Unlock()
	return nil
}

func (w *testWatcher) Closed(_ context.Context, call schema.Watcher_closed) error {
	r, _ := call.Args().Reason()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed, w.code, w.oldest = r, call.Args().Code(), call.Args().OldestRevision()
	close(w.done)
	return nil
}

func (w *testWatcher) snapshot() []testBatch {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]testBatch(nil), w.batches...)
}

// events returns every event received, checking the batches' rules on
// the way: upTo only grows, each batch's events lie after the previous
// batch's upTo and at or below its own, in revision order.
func (w *testWatcher) events(t *testing.T) []string {
	t.Helper()
	var all []string
	var up uint64
	var last uint64
	for _, b := range w.snapshot() {
		if b.upTo < up {
			t.Fatalf("upTo went back from %d to %d", up, b.upTo)
		}
		for _, e := range b.events {
			var rev uint64
			fmt.Sscan(e, &rev)
			if rev <= up || rev > b.upTo || rev < last {
				t.Fatalf("event %q in a batch up to %d after one up to %d (last revision %d)", e, b.upTo, up, last)
			}
			last = rev
		}
		up = b.upTo
		all = append(all, b.events...)
	}
	return all
}

func (w *testWatcher) isClosed() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

func (w *testWatcher) upTo() uint64 {
	bs := w.snapshot()
	if len(bs) == 0 {
		return 0
	}
	return bs[len(bs)-1].upTo
}

// watchOn starts a watch through k and returns its handle, or the error
// field's code and message.
func watchOn(ctx context.Context, k schema.KV, w schema.Watcher, set func(schema.WatchRequest)) (handle schema.Subscription, start uint64, err error) {
	f, rel := k.Watch(ctx, func(p schema.KV_watch_Params) error {
		r, err := p.NewReq()
		if err != nil {
			return err
		}
		set(r)
		return p.SetWatcher(w.AddRef())
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return schema.Subscription{}, 0, err
	}
	if res.HasError() {
		e, _ := res.Error()
		msg, _ := e.Message_()
		return schema.Subscription{}, res.OldestRevision(), fmt.Errorf("%s: %s", e.Code(), msg)
	}
	return res.Handle().AddRef(), res.StartRevision(), nil
}

// writer writes through the node's log.
type writer struct {
	t    *testing.T
	sv   *Server
	ctx  context.Context
	sess uint64
	seq  uint64
}

func newWriter(t *testing.T, sv *Server, ctx context.Context) *writer {
	a, err := sv.proposeCommand(ctx, kv.Command{Kind: kv.CmdOpenSession})
	if err != nil {
		t.Fatal(err)
	}
	return &writer{t: t, sv: sv, ctx: ctx, sess: a.Session}
}

func (w *writer) write(ops ...kv.WriteOp) {
	w.t.Helper()
	for i := range ops {
		w.seq++
		ops[i].Seq = w.seq
	}
	a, err := w.sv.proposeCommand(w.ctx, kv.Command{Kind: kv.CmdBatch, Session: w.sess, Ops: ops})
	if err != nil || a.Err != nil {
		w.t.Fatalf("write: %v %v", err, a.Err)
	}
}

func wput(k, v string) kv.WriteOp {
	return kv.WriteOp{Type: kv.OpPut, Key: []byte(k), Value: []byte(v)}
}

// Two watches, one from the start (live) and one replaying from revision
// 1, through batches cut small: each sees every change under its prefix
// exactly once, in revision order, a transaction's events together, and
// the same sequence.
func TestWatchDeliversEveryChangeOnceInRevisionOrder(t *testing.T) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seed := rng.Int63()
	rng = rand.New(rand.NewSource(seed))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	})
	sv, ctx := singleNode(t, func(c *Config) { c.Watch = watch.Config{MaxBatchBytes: 40} })
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)

	live := newTestWatcher(false)
	lc := schema.Watcher_ServerToClient(live)
	defer lc.Release()
	h1, start, err := watchOn(ctx, k, lc, func(r schema.WatchRequest) { r.SetPrefix([]byte("w/")); r.SetPrevValue(true) })
	if err != nil || start != 1 {
		t.Fatalf("live watch: start %d, %v", start, err)
	}
	defer h1.Release()

	var want []string
	prev := map[string]string{}
	for i := 0; i < 60; i++ {
		rev := uint64(i + 1)
		switch rng.Intn(3) {
		case 0, 1:
			key := fmt.Sprintf("w/%d", rng.Intn(5))
			wr.write(wput(key, fmt.Sprint(i)))
			e := fmt.Sprintf("%d put %s=%d", rev, key, i)
			if p, ok := prev[key]; ok {
				e += " prev=" + p
			}
			want = append(want, e)
			prev[key] = fmt.Sprint(i)
		case 2:
			// A transaction: two events at one revision, and one outside
			// the prefix that no watcher sees.
			wr.write(kv.WriteOp{Type: kv.OpTxn, Txn: &kv.Txn{Then: []kv.TxnOp{
				{Type: kv.TxnPut, Key: []byte("w/t1"), Value: []byte("a")},
				{Type: kv.TxnPut, Key: []byte("x/out"), Value: []byte("b")},
				{Type: kv.TxnPut, Key: []byte("w/t2"), Value: []byte("c")},
			}}})
			for _, kv := range [][2]string{{"w/t1", "a"}, {"w/t2", "c"}} {
				e := fmt.Sprintf("%d put %s=%s", rev, kv[0], kv[1])
				if p, ok := prev[kv[0]]; ok {
					e += " prev=" + p
				}
				want = append(want, e)
				prev[kv[0]] = kv[1]
			}
		}
	}
	replay := newTestWatcher(false)
	rc := schema.Watcher_ServerToClient(replay)
	defer rc.Release()
	h2, _, err := watchOn(ctx, k, rc, func(r schema.WatchRequest) {
		r.SetPrefix([]byte("w/"))
		r.SetPrevValue(true)
		r.SetFromRevision(1)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Release()
	for name, w := range map[string]*testWatcher{"live": live, "replay": replay} {
		rpctest.Eventually(t, 30*time.Second, name+" watcher up to date", func() bool { return w.upTo() >= 60 })
		got := w.events(t)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s watcher got:\n%s\nwant:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if len(w.snapshot()) < 5 {
			t.Fatalf("%s watcher: %d batches; the test means to cross batch boundaries", name, len(w.snapshot()))
		}
	}
}

// A watcher that stops answering is cancelled, and told why, once its
// undelivered events pass the queue bound; a healthy watcher of the same
// keys receives every event meanwhile; writes go on.
func TestSlowWatcherIsCancelledWhileAFastOneGetsEverything(t *testing.T) {
	sv, ctx := singleNode(t, func(c *Config) { c.Watch = watch.Config{QueueBytes: 8 << 10} })
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)

	slow, fast := newTestWatcher(true), newTestWatcher(false)
	t.Cleanup(sync.OnceFunc(func() { close(slow.release) }))
	sc, fc := schema.Watcher_ServerToClient(slow), schema.Watcher_ServerToClient(fast)
	defer sc.Release()
	defer fc.Release()
	for _, c := range []schema.Watcher{sc, fc} {
		h, _, err := watchOn(ctx, k, c, func(r schema.WatchRequest) { r.SetPrefix([]byte("k")) })
		if err != nil {
			t.Fatal(err)
		}
		defer h.Release()
	}
	const writes = 200
	val := strings.Repeat("v", 100)
	for i := 0; i < writes; i++ {
		wr.write(wput(fmt.Sprint("k", i), val))
		if i%20 == 19 {
			// The fast watcher's queue is bounded as tightly: on a
			// loaded machine, writing on regardless could leave it
			// 8 KiB behind too. It keeps up; the slow one cannot.
			rpctest.Eventually(t, 30*time.Second, "the fast watcher keeping up", func() bool {
				return fast.upTo() >= uint64(i+1) || fast.isClosed()
			})
			if fast.isClosed() {
				t.Fatalf("the fast watcher was closed: %s", fast.closed)
			}
		}
	}
	select {
	case <-slow.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the slow watcher was not cancelled")
	}
	if !strings.Contains(slow.closed, "too slow") || !strings.Contains(slow.closed, "limit 8192 bytes") {
		t.Fatalf("slow watcher closed with %q", slow.closed)
	}
	rpctest.Eventually(t, 30*time.Second, "the fast watcher up to date", func() bool { return fast.upTo() >= writes })
	if got := fast.events(t); len(got) != writes {
		t.Fatalf("fast watcher got %d events, want %d", len(got), writes)
	}
	rpctest.Eventually(t, 10*time.Second, "one watch left", func() bool { return sv.watches.NumWatchers() == 1 })
}

// Progress notifications: a watcher of quiet keys is told, now and then,
// that it is up to date with the moving revision.
func TestQuietWatcherGetsProgressNotifications(t *testing.T) {
	sv, ctx := singleNode(t)
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)
	w := newTestWatcher(false)
	c := schema.Watcher_ServerToClient(w)
	defer c.Release()
	h, _, err := watchOn(ctx, k, c, func(r schema.WatchRequest) { r.SetPrefix([]byte("quiet/")); r.SetProgressMillis(20) })
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	for i := 0; i < 5; i++ {
		wr.write(wput("busy", "x"))
	}
	rpctest.Eventually(t, 30*time.Second, "progress up to revision 5", func() bool { return w.upTo() == 5 })
	if evs := w.events(t); len(evs) != 0 {
		t.Fatalf("quiet watcher got events %v", evs)
	}
}

// A restricted KV bounds watches to its grant: a narrower prefix is
// served, a wider one narrowed, a disjoint one refused; a revoked
// credential closes the watch with the reason.
func TestRestrictedKVBoundsWatches(t *testing.T) {
	sv, ctx := singleNode(t)
	var revoked atomic.Bool
	ex := rpc.NewExporter(nil).WithCheck(func() error {
		if revoked.Load() {
			return errors.New("permissionDenied: the token was revoked")
		}
		return nil
	})
	k := schema.KV(sv.kvCapability(ex, kvScope{restricted: true, prefix: []byte("app/")}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)

	wide := newTestWatcher(false)
	wc := schema.Watcher_ServerToClient(wide)
	defer wc.Release()
	h, _, err := watchOn(ctx, k, wc, func(r schema.WatchRequest) {}) // every key: narrowed to app/
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	other := schema.Watcher_ServerToClient(newTestWatcher(false))
	defer other.Release()
	if _, _, err := watchOn(ctx, k, other, func(r schema.WatchRequest) { r.SetPrefix([]byte("other/")) }); err == nil || !strings.HasPrefix(err.Error(), "permissionDenied") {
		t.Fatalf("watch outside the grant: %v", err)
	}
	if _, _, err := watchOn(ctx, k, other, func(r schema.WatchRequest) { r.SetPrefix([]byte("app")); r.SetExact(true) }); err == nil || !strings.HasPrefix(err.Error(), "permissionDenied") {
		t.Fatalf("exact watch of a key outside the grant: %v", err)
	}
	wr.write(wput("other/x", "1"), wput("app/a", "2"))
	rpctest.Eventually(t, 30*time.Second, "the grant's event", func() bool { return wide.upTo() >= 2 })
	if got := wide.events(t); len(got) != 1 || got[0] != "2 put app/a=2" {
		t.Fatalf("narrowed watch got %v", got)
	}
	revoked.Store(true)
	wr.write(wput("app/b", "3"))
	select {
	case <-wide.done:
	case <-time.After(30 * time.Second):
		t.Fatal("revoked watch not closed")
	}
	if !strings.Contains(wide.closed, "revoked") || wide.code != schema.ErrorCode_permissionDenied {
		t.Fatalf("closed with %q (%s)", wide.closed, wide.code)
	}
}

// A watch from a revision the history no longer holds fails, naming the
// oldest it retains; a linearizable start must not name a revision.
func TestWatchFromACompactedRevisionFailsNamingTheOldest(t *testing.T) {
	sv, ctx := singleNode(t)
	// A node whose history holds 3 revisions.
	sv.kv = kv.New(kv.Config{HistoryRevisions: 3})
	sv.watches = watch.NewHub(sv.kv, watch.Config{})
	defer sv.watches.Close()
	for i := uint64(1); i <= 10; i++ {
		sv.kv.Apply(i, nil)
	}
	open := kv.Command{Kind: kv.CmdOpenSession}
	sess := sv.kv.Apply(11, open.AppendBinary(nil)).Session
	for i := uint64(1); i <= 6; i++ {
		c := kv.Command{Kind: kv.CmdBatch, Session: sess, Ops: []kv.WriteOp{{Seq: i, Type: kv.OpPut, Key: []byte("k"), Value: []byte("v")}}}
		sv.kv.Apply(11+i, c.AppendBinary(nil))
	}
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	w := schema.Watcher_ServerToClient(newTestWatcher(false))
	defer w.Release()
	_, oldest, err := watchOn(ctx, k, w, func(r schema.WatchRequest) { r.SetFromRevision(2) })
	if err == nil || !strings.HasPrefix(err.Error(), "compacted") || oldest != 4 || !strings.Contains(err.Error(), "oldest revision this node retains is 4") {
		t.Fatalf("watch from 2: oldest %d, %v", oldest, err)
	}
	h, start, err := watchOn(ctx, k, w, func(r schema.WatchRequest) { r.SetFromRevision(4) })
	if err != nil || start != 4 {
		t.Fatalf("watch from the oldest: %d %v", start, err)
	}
	h.Release()
	if _, _, err := watchOn(ctx, k, w, func(r schema.WatchRequest) { r.SetFromRevision(5); r.SetLinearizable(true) }); err == nil || !strings.HasPrefix(err.Error(), "invalidArgument") {
		t.Fatalf("linearizable watch from a revision: %v", err)
	}
}
