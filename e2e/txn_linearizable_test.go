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

// txnGroups and txnGroupKeys shape the transaction workload: each
// transaction stays within one group of keys (history.TxnKeys at most),
// and the history is checked group by group.
const (
	txnGroups    = 3
	txnGroupKeys = 3
)

func txnKeyName(g, k int) string  { return fmt.Sprintf("txl/g%d/k%d", g, k) }
func txnGroupPrefix(g int) string { return fmt.Sprintf("txl/g%d/", g) }

// txnKeyIndex maps a key name back to its index in group g.
func txnKeyIndex(g int, name string) (int, bool) {
	for k := 0; k < txnGroupKeys; k++ {
		if txnKeyName(g, k) == name {
			return k, true
		}
	}
	return 0, false
}

// TestTxnLinearizableUnderFaults: clients issue transactions (compares on
// value, version, create and mod revision and absence; branches of puts,
// deletes, gets and ranges over a group of keys) mixed with plain puts,
// gets and deletes, while in a seeded order the leader is killed with -9
// and restarted, cut off by a partition, and leadership is transferred,
// plus three faults drawn from those and a follower killed, partitioned
// or restarted and the leader paused. The history, with every
// write whose outcome is unknown pending forever, must be linearizable
// under the transaction model (history.TxnModel), which also checks the
// revisions, versions and create revisions every answer reports. A
// negative control flips one transaction's branch in the history and
// must be rejected.
func TestTxnLinearizableUnderFaults(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	e.waitLeader(e.c.IDs(), 10*time.Second)

	const (
		nClients = 9
		maxOps   = 1200 // per client
	)
	opTimeouts := []time.Duration{400 * time.Millisecond, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	addrs := e.c.Addrs()
	var shared []faultClient
	for i := range addrs {
		rot := append(append([]string(nil), addrs[i:]...), addrs[:i]...)
		shared = append(shared, e.faultClient(rot...))
	}

	rec := history.NewTxnRecorder()
	var (
		nextPid     atomic.Int64
		healed      atomic.Bool
		okAfterHeal atomic.Int64
		nTxns       atomic.Int64
		wg          sync.WaitGroup
	)
	nextPid.Store(nClients)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	for g := 0; g < nClients; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			w := &txnWorker{
				r:    rand.New(rand.NewSource(e.seed + int64(g) + 1)),
				cl:   shared[g%len(shared)],
				rec:  rec,
				pid:  g,
				name: g,
				seen: map[[2]int]*keyValue{},
				next: &nextPid,
			}
			for i := 0; i < maxOps && ctx.Err() == nil; i++ {
				octx, cancel := context.WithTimeout(context.Background(), opTimeouts[w.r.Intn(len(opTimeouts))])
				known, isTxn := w.step(octx, i)
				cancel()
				if isTxn {
					nTxns.Add(1)
				}
				if known && healed.Load() {
					okAfterHeal.Add(1)
				}
				if !known {
					backoff(ctx)
				}
			}
		}(g)
	}

	run := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	e.c.Mesh().SetDelay(0, 3*time.Millisecond)
	run(1500 * time.Millisecond)
	faults := []string{"kill-leader", "partition-leader", "transfer"}
	extra := []string{"kill-follower", "partition-follower", "transfer", "kill-leader", "pause-leader", "restart-follower"}
	for i := 0; i < 3; i++ {
		faults = append(faults, extra[e.rng.Intn(len(extra))])
	}
	e.rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	t.Logf("nemesis plan: %v", faults)
	admin := e.faultClient(addrs...)
	for _, f := range faults {
		e.injectFault(admin, f, run)
		run(time.Second)
	}
	e.waitLeader(e.c.IDs(), 15*time.Second)
	healed.Store(true)
	e.waitFor(15*time.Second, "operations answered after the faults", func() (bool, string) {
		n := okAfterHeal.Load()
		return n >= 200, fmt.Sprintf("%d answered", n)
	})
	stop()
	wg.Wait()

	st := rec.Stats()
	t.Logf("history: %d operations (%d transactions called, %d pending forever), %d failed reads dropped; %d answered after the last heal",
		st.Ops, nTxns.Load(), st.Unknown, st.Dropped, okAfterHeal.Load())
	if st.Ops-st.Unknown < 1000 {
		t.Fatalf("too few answered operations to check anything (%d)", st.Ops-st.Unknown)
	}
	ops := rec.Operations()
	var then, els, replayed int
	for _, op := range ops {
		in, out := op.Input.(history.TxnInput), op.Output.(history.TxnOutput)
		switch {
		case out.Unknown || len(in.Compares) == 0:
		case out.Succeeded:
			then++
		default:
			els++
		}
		if !out.Unknown && out.Results == nil && len(in.Compares) > 0 {
			replayed++
		}
	}
	t.Logf("answered transactions with compares: %d ran then, %d ran else (%d replayed answers)", then, els, replayed)
	if then == 0 || els == 0 {
		t.Fatalf("one branch never ran (%d then, %d else): the workload does not exercise compares", then, els)
	}
	start := time.Now()
	res := history.CheckTxns(ops, 60*time.Second)
	t.Logf("porcupine: %s in %v", res.Verdict, time.Since(start).Round(time.Millisecond))
	if res.Verdict == porcupine.Ok {
		// Negative control: one transaction answered with the other
		// branch must be caught, or this check could not have failed.
		flipped, found := history.WithFlippedTxn(ops)
		if !found {
			t.Fatal("no transaction's write was read afterwards: the history cannot show a flipped branch")
		}
		start := time.Now()
		switch v := porcupine.CheckOperationsTimeout(history.TxnModel, flipped, 30*time.Second); v {
		case porcupine.Illegal:
			t.Logf("negative control: a flipped branch is rejected (in %v)", time.Since(start).Round(time.Millisecond))
		case porcupine.Unknown:
			t.Logf("negative control inconclusive: porcupine did not finish within 30s")
		default:
			t.Fatalf("the history with a flipped branch checks as %s, want Illegal", v)
		}
	}
	if res.Verdict == porcupine.Ok && os.Getenv("E2E_VIS") == "" {
		return
	}
	dir, err := os.MkdirTemp("", "capraft-porcupine-txn-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "history.html")
	if err := history.VisualizeTxns(res, path); err != nil {
		t.Fatal(err)
	}
	switch res.Verdict {
	case porcupine.Ok:
		t.Logf("visualization: %s", path)
	case porcupine.Illegal:
		t.Fatalf("transaction history is NOT linearizable (seed %d); visualization: %s", e.seed, path)
	default:
		t.Fatalf("porcupine gave up (%s) after 60s (seed %d); visualization: %s", res.Verdict, e.seed, path)
	}
}

// txnWorker is one sequential client of the transaction workload.
type txnWorker struct {
	r    *rand.Rand
	cl   faultClient
	rec  *history.TxnRecorder
	pid  int // porcupine process: a new one after an unknown outcome
	name int
	seen map[[2]int]*keyValue // (group, key) -> last state read (nil: absent)
	next *atomic.Int64
}

// step issues one operation; known says its outcome is known.
func (w *txnWorker) step(ctx context.Context, i int) (known, isTxn bool) {
	g := w.r.Intn(txnGroups)
	k := w.r.Intn(txnGroupKeys)
	val := func(j int) string { return fmt.Sprintf("%d.%d.%d", w.name, i, j) }
	switch x := w.r.Intn(100); {
	case x < 12:
		in := history.TxnInput{Group: g, Then: []history.TxnOp{{Kind: history.TxnGet, Key: k}}}
		call := w.rec.Begin(w.pid, in)
		kv, err := w.cl.Get(ctx, txnKeyName(g, k), false)
		switch {
		case err == nil:
			call.Return(history.TxnOutput{Succeeded: true, Results: []history.TxnOpResult{{Found: true, KV: w.observe(g, &kv)}}})
		case isNotFound(err):
			call.Return(history.TxnOutput{Succeeded: true, Results: []history.TxnOpResult{{}}})
			w.seen[[2]int{g, k}] = nil
		default:
			call.Fail()
			return false, false
		}
		return true, false
	case x < 20:
		in := history.TxnInput{Group: g, Then: []history.TxnOp{{Kind: history.TxnPut, Key: k, Value: val(0)}}}
		call := w.rec.Begin(w.pid, in)
		rev, err := w.cl.Put(ctx, txnKeyName(g, k), []byte(val(0)))
		if err != nil {
			call.Fail()
			w.pid = int(w.next.Add(1) - 1)
			return false, false
		}
		call.Return(history.TxnOutput{Succeeded: true, Revision: rev})
		return true, false
	case x < 25:
		in := history.TxnInput{Group: g, Then: []history.TxnOp{{Kind: history.TxnDelete, Key: k}}}
		call := w.rec.Begin(w.pid, in)
		existed, rev, err := w.cl.Delete(ctx, txnKeyName(g, k))
		if err != nil {
			call.Fail()
			w.pid = int(w.next.Add(1) - 1)
			return false, false
		}
		call.Return(history.TxnOutput{Succeeded: true, Revision: rev, Results: []history.TxnOpResult{{Found: existed}}})
		return true, false
	}
	in := history.TxnInput{Group: g, Compares: w.compares(g)}
	readOnly := w.r.Intn(4) == 0
	if readOnly {
		in.Then = []history.TxnOp{{Kind: history.TxnRange}}
		in.Else = []history.TxnOp{{Kind: history.TxnGet, Key: k}, {Kind: history.TxnGet, Key: (k + 1) % txnGroupKeys}}
	} else {
		in.Then = w.branch(1+w.r.Intn(3), val, 0)
		if w.r.Intn(2) == 0 {
			in.Else = w.branch(1+w.r.Intn(2), val, 10)
		}
	}
	call := w.rec.Begin(w.pid, in)
	reply, err := w.cl.Txn(ctx, w.request(g, in))
	if err != nil {
		call.Fail()
		if !readOnly {
			w.pid = int(w.next.Add(1) - 1)
		}
		return false, true
	}
	out := history.TxnOutput{Succeeded: reply.succeeded, Revision: reply.revision}
	if !reply.replayed {
		ops := in.Else
		if reply.succeeded {
			ops = in.Then
		}
		out.Results = []history.TxnOpResult{}
		for j, r := range reply.results {
			res := history.TxnOpResult{Found: r.found}
			switch {
			case j < len(ops) && ops[j].Kind == history.TxnRange:
				res.KVs = []history.TxnKV{}
				for key := 0; key < txnGroupKeys; key++ {
					w.seen[[2]int{g, key}] = nil
				}
				for _, kv := range r.kvs {
					res.KVs = append(res.KVs, *w.observe(g, &kv))
				}
			case r.found && j < len(ops) && ops[j].Kind == history.TxnGet:
				res.KV = w.observe(g, &r.kv)
			case j < len(ops) && ops[j].Kind == history.TxnGet:
				w.seen[[2]int{g, ops[j].Key}] = nil
			case r.found:
				res.KV = w.toTxnKV(g, &r.kv)
			}
			out.Results = append(out.Results, res)
		}
	}
	call.Return(out)
	return true, true
}

// observe records a read of kv in group g and returns it for the model.
func (w *txnWorker) observe(g int, kv *keyValue) *history.TxnKV {
	tkv := w.toTxnKV(g, kv)
	if tkv.Key >= 0 {
		c := *kv
		w.seen[[2]int{g, tkv.Key}] = &c
	}
	return tkv
}

// toTxnKV converts kv; a key outside group g becomes index -1, which the
// model rejects.
func (w *txnWorker) toTxnKV(g int, kv *keyValue) *history.TxnKV {
	k, ok := txnKeyIndex(g, kv.Key)
	if !ok {
		k = -1
	}
	return &history.TxnKV{Key: k, Value: string(kv.Value), Version: kv.Version, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision}
}

// compares draws 0 to 2 compares on group g, mostly against what this
// client last read, so that both branches run.
func (w *txnWorker) compares(g int) []history.TxnCompare {
	var out []history.TxnCompare
	for n := w.r.Intn(3); n > 0; n-- {
		k := w.r.Intn(txnGroupKeys)
		kv, known := w.seen[[2]int{g, k}]
		c := history.TxnCompare{Key: k}
		switch x := w.r.Intn(8); {
		case known && kv != nil && x < 2:
			c.Target, c.Value = history.CmpValue, string(kv.Value)
			if x == 1 {
				c.Operator = history.OpNotEqual
			}
		case known && kv != nil && x < 4:
			c.Target, c.Number = history.CmpModRevision, kv.ModRevision
			if x == 3 {
				c.Operator = history.OpNotEqual
			}
		case known && kv != nil && x < 5:
			c.Target, c.Number = history.CmpCreateRevision, kv.CreateRevision
		case x < 6:
			c.Target = history.CmpVersion
			c.Operator = []history.TxnOperator{history.OpEqual, history.OpLess, history.OpGreater}[w.r.Intn(3)]
			c.Number = uint64(w.r.Intn(4))
		case x < 7:
			c.Target = history.CmpValue
			c.Operator = []history.TxnOperator{history.OpLess, history.OpGreater}[w.r.Intn(2)]
			c.Value = fmt.Sprint(w.r.Intn(10))
		default:
			c.Target = history.CmpAbsent
			if known && kv != nil {
				c.Operator = history.OpNotEqual
			}
		}
		out = append(out, c)
	}
	return out
}

// branch draws n operations, writing each key at most once; values are
// val(base+j).
func (w *txnWorker) branch(n int, val func(int) string, base int) []history.TxnOp {
	var ops []history.TxnOp
	written := map[int]bool{}
	for j := 0; j < n; j++ {
		k := w.r.Intn(txnGroupKeys)
		switch x := w.r.Intn(10); {
		case x < 5 && !written[k]:
			ops = append(ops, history.TxnOp{Kind: history.TxnPut, Key: k, Value: val(base + j)})
			written[k] = true
		case x < 7 && !written[k]:
			ops = append(ops, history.TxnOp{Kind: history.TxnDelete, Key: k})
			written[k] = true
		case x < 9:
			ops = append(ops, history.TxnOp{Kind: history.TxnGet, Key: k})
		default:
			ops = append(ops, history.TxnOp{Kind: history.TxnRange})
		}
	}
	return ops
}

// request turns a model transaction of group g into the client's.
func (w *txnWorker) request(g int, in history.TxnInput) txnRequest {
	var req txnRequest
	for _, c := range in.Compares {
		req.compares = append(req.compares, txnCompare{key: txnKeyName(g, c.Key), target: c.Target, op: c.Operator, value: c.Value, number: c.Number})
	}
	conv := func(ops []history.TxnOp) []txnOp {
		var out []txnOp
		for _, o := range ops {
			key := txnKeyName(g, o.Key)
			if o.Kind == history.TxnRange {
				key = txnGroupPrefix(g)
			}
			out = append(out, txnOp{kind: o.Kind, key: key, value: o.Value})
		}
		return out
	}
	req.then, req.els = conv(in.Then), conv(in.Else)
	return req
}
