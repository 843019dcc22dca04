package e2e

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/history"
)

// TestWatchCheckedUnderFaults: writers put, delete and run transactions
// on keys under wf/ through every node while, in a seeded order, the
// leader is killed with -9 and restarted, cut off by a partition,
// leadership is transferred and a follower is restarted, plus one fault
// of: a follower killed, partitioned or wiped (restored from its peers,
// its watch history then starts there), the leader killed again or
// paused. Watchers on different
// prefixes (wf/, wf/a, wf/a/, wf/b/, wf/ab/: some overlapping), through
// different nodes, some from a past revision (exact start), some from now
// with a linearizable start or without, some started mid-way, each
// resuming across the faults as the client does.
//
// The oracle is the committed history of wf/ from the first revision of
// the test: once the cluster is healthy and quiet, a fresh watch from
// that revision on each node (a node whose history no longer reaches back
// is skipped, at least one must answer). The nodes' histories must be
// identical, well formed, replay to exactly the final store (a range of
// wf/: values, versions, create and mod revisions) and hold every
// acknowledged write at its revision. Then every watcher's events must
// equal the oracle's changes of its prefix between its start and the
// revision it was up to date with at the end (history.CheckWatch): no
// gap, no duplicate, no reordering, nothing uncommitted.
func TestWatchCheckedUnderFaults(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	e.waitLeader(e.c.IDs(), 10*time.Second)
	ids := e.c.IDs()
	// rotated returns the endpoints starting at node id, so that each
	// client starts on its own node and fails over to the others.
	rotated := func(id uint64) []string {
		eps := []string{e.c.Addr(id)}
		for _, o := range e.others(id) {
			eps = append(eps, e.c.Addr(o))
		}
		return eps
	}
	admin := e.faultClient(e.c.Addrs()...)
	octx, cancel := opCtx()
	rev0, err := admin.Put(octx, "wf-start", []byte("0"))
	cancel()
	if err != nil {
		t.Fatalf("write the start marker: %v", err)
	}
	t.Logf("the test's changes start after revision %d", rev0)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	wl := &watchWriteLog{}
	var wwg sync.WaitGroup
	const nWriters, maxWrites = 3, 2000
	for i := 0; i < nWriters; i++ {
		cl := e.faultClient(rotated(ids[i%len(ids)])...)
		r := rand.New(rand.NewSource(e.seed + 100 + int64(i)))
		wwg.Add(1)
		go func(i int) {
			defer wwg.Done()
			for n := 0; n < maxWrites && ctx.Err() == nil; n++ {
				if !wl.write(ctx, cl, r, fmt.Sprintf("%d.%d", i, n)) {
					backoff(ctx)
				}
			}
		}(i)
	}

	// The watchers. Each records its events, the revision it is up to
	// date with, and when its first response arrived.
	wctx, stopWatches := context.WithCancel(context.Background())
	defer stopWatches()
	var watchers []*faultWatcher
	startWatch := func(name, prefix string, via uint64, from uint64, linearizable bool) {
		w := &faultWatcher{name: name, spec: history.WatchSpec{Prefix: prefix, From: from}, linearizable: linearizable, via: via}
		if from == 0 {
			if linearizable {
				w.spec.StartLo = wl.maxAcked() + 1
			} else {
				w.spec.StartLo = rev0 + 1
			}
		}
		cl := e.faultClient(rotated(via)...)
		w.start(wctx, cl)
		watchers = append(watchers, w)
		t.Logf("watcher %s: %q through node %d, from %d (linearizable start %v)", name, prefix, via, from, linearizable)
	}
	startWatch("all-from-start", "wf/", ids[0], rev0+1, false)
	e.waitFor(10*time.Second, "writes before the first watchers from now", func() (bool, string) {
		return wl.acked.Load() >= 50, fmt.Sprint(wl.acked.Load())
	})
	startWatch("a-slash-linearizable", "wf/a/", ids[1], 0, true)
	startWatch("a-serializable", "wf/a", ids[2], 0, false)

	run := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	e.c.Mesh().SetDelay(0, 3*time.Millisecond)
	run(time.Second)
	faults := []string{"kill-leader", "partition-leader", "transfer", "restart-follower"}
	extra := []string{"kill-follower", "partition-follower", "pause-leader", "kill-leader", "wipe-follower"}
	faults = append(faults, extra[e.rng.Intn(len(extra))])
	e.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	t.Logf("nemesis plan: %v", faults)
	for i, f := range faults {
		e.injectFault(admin, f, run)
		run(time.Second)
		if i == 1 {
			// Mid-way watchers: one from a past revision, one from now.
			past := wl.maxAcked()
			if past > rev0+40 {
				past -= 40
			}
			startWatch("b-from-past", "wf/b/", ids[e.rng.Intn(len(ids))], past, false)
			startWatch("all-linearizable-midway", "wf/", ids[e.rng.Intn(len(ids))], 0, true)
		}
	}
	e.waitLeader(e.c.IDs(), 15*time.Second)
	before := wl.acked.Load()
	e.waitFor(15*time.Second, "writes after the faults", func() (bool, string) {
		return wl.acked.Load() >= before+100, fmt.Sprint(wl.acked.Load() - before)
	})
	startWatch("ab-replay-all", "wf/ab/", ids[e.rng.Intn(len(ids))], rev0+1, false)
	stop()
	wwg.Wait()

	// Quiet and healthy: the final store and its revision. Everything is
	// checked up to that revision (a write cancelled in flight could
	// still land after it).
	e.waitConverged(e.c.IDs(), 30*time.Second)
	octx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	kvs, final, err := admin.RangeAll(octx, "wf/")
	cancel()
	if err != nil {
		t.Fatalf("range wf/: %v", err)
	}
	t.Logf("writers: %d acknowledged, %d unknown outcomes (first errors: %q); final revision %d", wl.acked.Load(), wl.unknown.Load(), wl.errs, final)
	for _, w := range watchers {
		w := w
		e.waitFor(30*time.Second, fmt.Sprintf("watcher %s up to revision %d", w.name, final), func() (bool, string) {
			up, n, err := w.progress()
			if err != nil {
				t.Fatalf("watcher %s ended: %v", w.name, err)
			}
			return up >= final, fmt.Sprintf("up to %d with %d events", up, n)
		})
	}
	stopWatches()
	for _, w := range watchers {
		w.wait()
	}

	// The oracle: the committed history from every node that still has
	// it.
	var oracle []history.WatchEvent
	oracleNodes := 0
	for _, id := range ids {
		evs, err := e.committedHistory(id, "wf/", rev0+1, final)
		if err != nil {
			t.Logf("oracle: node %d cannot replay from %d: %v", id, rev0+1, err)
			continue
		}
		if oracle == nil {
			oracle = evs
		} else if err := sameHistory(oracle, evs); err != nil {
			t.Fatalf("node %d's committed history differs from node %d's: %v", id, ids[0], err)
		}
		oracleNodes++
	}
	if oracleNodes == 0 {
		t.Fatal("no node could replay the test's history")
	}
	if err := history.CheckCommitted(oracle); err != nil {
		t.Fatalf("committed history: %v", err)
	}
	t.Logf("oracle: %d committed changes from %d nodes", len(oracle), oracleNodes)
	if len(oracle) < 300 {
		t.Fatalf("only %d committed changes: the test checked little", len(oracle))
	}
	// The oracle against the final store.
	replayed := history.ReplayWatchEvents(oracle)
	if len(kvs) != len(replayed) {
		t.Fatalf("the final store holds %d keys under wf/, the committed history replays to %d", len(kvs), len(replayed))
	}
	for _, kv := range kvs {
		want := history.StoreKV{Value: string(kv.Value), Version: kv.Version, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}
		if got := replayed[kv.Key]; got != want {
			t.Fatalf("%s: the store holds %+v, the committed history replays to %+v", kv.Key, want, got)
		}
	}
	// The oracle against the acknowledged writes.
	at := map[[2]string]history.WatchEvent{}
	for _, ev := range oracle {
		at[[2]string{fmt.Sprint(ev.Rev), ev.Key}] = ev
	}
	for _, w := range wl.ackedChanges() {
		if got, ok := at[[2]string{fmt.Sprint(w.Rev), w.Key}]; !ok || got != w {
			t.Fatalf("acknowledged change %v is not in the committed history (there: %v)", w, got)
		}
	}
	// Every watcher against the oracle, after a negative control: the
	// first watcher's sequence with one change dropped, repeated or moved
	// must be rejected, or this check could not have failed.
	if evs := watchers[0].eventsUpTo(final); len(evs) >= 3 {
		spec := watchers[0].spec
		spec.UpTo = final
		mid := len(evs) / 2
		j := mid + 1
		for j < len(evs) && evs[j].Rev == evs[mid].Rev {
			j++
		}
		mutants := map[string][]history.WatchEvent{
			"a gap":       append(append([]history.WatchEvent(nil), evs[:mid]...), evs[mid+1:]...),
			"a duplicate": append(append([]history.WatchEvent(nil), evs[:mid+1]...), evs[mid:]...),
		}
		if j < len(evs) {
			moved := append([]history.WatchEvent(nil), evs...)
			moved[mid], moved[j] = moved[j], moved[mid]
			mutants["a reorder"] = moved
		}
		for what, m := range mutants {
			if err := history.CheckWatch(m, oracle, spec); err == nil {
				t.Fatalf("negative control: watcher %s's events with %s pass the check", watchers[0].name, what)
			}
		}
	}
	for _, w := range watchers {
		spec := w.spec
		spec.UpTo = final
		if spec.From == 0 {
			spec.StartHi = wl.firstRevCalledAfter(w.firstAt(), spec.UpTo+1)
		}
		evs := w.eventsUpTo(final)
		if err := history.CheckWatch(evs, oracle, spec); err != nil {
			t.Errorf("watcher %s (%q through node %d, from %d, start in [%d, %d], up to %d, %d events): %v",
				w.name, spec.Prefix, w.via, spec.From, spec.StartLo, spec.StartHi, spec.UpTo, len(evs), err)
			continue
		}
		if spec.From != 0 {
			t.Logf("watcher %s: %d events, exactly the committed history of %q from %d to %d", w.name, len(evs), spec.Prefix, spec.From, spec.UpTo)
		} else {
			t.Logf("watcher %s: %d events, exactly the committed history of %q from a start in [%d, %d] to %d", w.name, len(evs), spec.Prefix, spec.StartLo, spec.StartHi, spec.UpTo)
		}
	}
}

// watchWriteLog is what the writers of TestWatchCheckedUnderFaults did:
// their acknowledged changes and when each write was called.
type watchWriteLog struct {
	mu      sync.Mutex
	changes []history.WatchEvent // acknowledged changes
	calls   []timedRev           // acknowledged writes: when called, at which revision
	max     uint64
	acked   atomic.Int64
	unknown atomic.Int64
	errs    []string // the first errors, for the log
}

// fail records a write whose outcome is unknown.
func (l *watchWriteLog) fail(err error) bool {
	l.unknown.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 8 {
		l.errs = append(l.errs, err.Error())
	}
	return false
}

type timedRev struct {
	at  time.Time
	rev uint64
}

var watchFaultKeys = []string{"wf/a/0", "wf/a/1", "wf/a/2", "wf/b/0", "wf/b/1", "wf/b/2", "wf/ab/0", "wf/ab/1"}

// write does one seeded write through cl: a put, a delete or a
// transaction of puts and deletes on several keys; it reports whether
// the outcome is known.
func (l *watchWriteLog) write(ctx context.Context, cl faultClient, r *rand.Rand, tag string) bool {
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	called := time.Now()
	key := watchFaultKeys[r.Intn(len(watchFaultKeys))]
	var changes []history.WatchEvent
	var rev uint64
	switch x := r.Intn(10); {
	case x < 5:
		var err error
		if rev, err = cl.Put(octx, key, []byte(tag)); err != nil {
			return l.fail(err)
		}
		changes = append(changes, history.WatchEvent{Rev: rev, Key: key, Value: tag})
	case x < 7:
		existed, r, err := cl.Delete(octx, key)
		if err != nil {
			return l.fail(err)
		}
		rev = r
		if existed {
			changes = append(changes, history.WatchEvent{Rev: rev, Key: key, Delete: true})
		}
	default:
		// A transaction over keys of several prefixes; half of them
		// guarded by a compare that may fail (then the else branch,
		// one put, runs).
		var req txnRequest
		if r.Intn(2) == 0 {
			req.compares = []txnCompare{{key: key, target: history.CmpVersion, op: history.OpLess, number: uint64(1 + r.Intn(3))}}
		}
		perm := r.Perm(len(watchFaultKeys))[:1+r.Intn(3)]
		for j, p := range perm {
			if r.Intn(3) == 0 {
				req.then = append(req.then, txnOp{kind: history.TxnDelete, key: watchFaultKeys[p]})
			} else {
				req.then = append(req.then, txnOp{kind: history.TxnPut, key: watchFaultKeys[p], value: fmt.Sprintf("%s.%d", tag, j)})
			}
		}
		req.els = []txnOp{{kind: history.TxnPut, key: key, value: tag + ".else"}}
		reply, err := cl.Txn(octx, req)
		if err != nil {
			return l.fail(err)
		}
		rev = reply.revision
		ops := req.els
		if reply.succeeded {
			ops = req.then
		}
		for j, o := range ops {
			switch {
			case o.kind == history.TxnPut:
				changes = append(changes, history.WatchEvent{Rev: rev, Key: o.key, Value: o.value})
			case !reply.replayed && j < len(reply.results) && reply.results[j].found:
				changes = append(changes, history.WatchEvent{Rev: rev, Key: o.key, Delete: true})
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, changes...)
	if len(changes) > 0 {
		l.calls = append(l.calls, timedRev{called, rev})
		l.max = max(l.max, rev)
	}
	l.acked.Add(1)
	return true
}

// maxAcked returns the highest revision of an acknowledged change.
func (l *watchWriteLog) maxAcked() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.max
}

func (l *watchWriteLog) ackedChanges() []history.WatchEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]history.WatchEvent(nil), l.changes...)
}

// firstRevCalledAfter returns the lowest revision of an acknowledged
// change whose write was called after t, or otherwise.
func (l *watchWriteLog) firstRevCalledAfter(t time.Time, otherwise uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	best := uint64(math.MaxUint64)
	for _, c := range l.calls {
		if c.at.After(t) && c.rev < best {
			best = c.rev
		}
	}
	if best == math.MaxUint64 || t.IsZero() {
		return otherwise
	}
	return best
}

// faultWatcher is one watcher of TestWatchCheckedUnderFaults.
type faultWatcher struct {
	name         string
	spec         history.WatchSpec
	linearizable bool
	via          uint64

	mu    sync.Mutex
	evs   []history.WatchEvent
	upTo  uint64
	first time.Time // when the first response arrived
	err   error     // the watch ended for good
	done  chan struct{}
}

func (w *faultWatcher) start(ctx context.Context, cl faultClient) {
	w.done = make(chan struct{})
	ch := cl.WatchWith(ctx, w.spec.Prefix, w.spec.From, w.linearizable)
	go func() {
		defer close(w.done)
		for b := range ch {
			w.mu.Lock()
			if w.first.IsZero() {
				w.first = time.Now()
			}
			if b.err != nil {
				w.err = b.err
				w.mu.Unlock()
				return
			}
			for _, ev := range b.events {
				w.evs = append(w.evs, history.WatchEvent{Rev: ev.rev, Key: ev.key, Delete: ev.del, Value: ev.value})
			}
			w.upTo = max(w.upTo, b.upTo)
			w.mu.Unlock()
		}
	}()
}

func (w *faultWatcher) progress() (upTo uint64, n int, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.upTo, len(w.evs), w.err
}

// eventsUpTo returns the events at or below revision rev.
func (w *faultWatcher) eventsUpTo(rev uint64) []history.WatchEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []history.WatchEvent
	for _, ev := range w.evs {
		if ev.Rev <= rev {
			out = append(out, ev)
		}
	}
	return out
}

func (w *faultWatcher) firstAt() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.first
}

// wait waits for the watcher's goroutine once its context ended.
func (w *faultWatcher) wait() { <-w.done }

// committedHistory returns the changes of prefix from revision from up to
// revision to (inclusive) as node id's history replays them to a fresh
// watch.
func (e *env) committedHistory(id uint64, prefix string, from, to uint64) ([]history.WatchEvent, error) {
	cl := e.faultClient(e.c.Addr(id))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var evs []history.WatchEvent
	var upTo uint64
	for b := range cl.WatchWith(ctx, prefix, from, false) {
		if b.err != nil {
			return nil, b.err
		}
		for _, ev := range b.events {
			if ev.rev <= to {
				evs = append(evs, history.WatchEvent{Rev: ev.rev, Key: ev.key, Delete: ev.del, Value: ev.value})
			}
		}
		if upTo = max(upTo, b.upTo); upTo >= to {
			cancel()
			return evs, nil
		}
	}
	return nil, fmt.Errorf("watch from %d ended at %d, before %d", from, upTo, to)
}

// sameHistory reports the first difference between two committed
// histories.
func sameHistory(a, b []history.WatchEvent) error {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return fmt.Errorf("change %d: %v against %v", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Errorf("%d changes against %d", len(a), len(b))
	}
	return nil
}
