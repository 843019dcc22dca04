package raftnode_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/schema"
)

// txn runs o through KV.txn with k's session; a result with an error is
// returned as a *codeError.
func (k *kvClient) txn(ctx context.Context, o kvwire.Op) (kvwire.Result, error) {
	f, rel := k.kv.Txn(ctx, func(p schema.KV_txn_Params) error { return kvwire.EncodeTxnCall(p, k.session, &o) })
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return kvwire.Result{}, err
	}
	src, err := res.Result()
	if err != nil {
		return kvwire.Result{}, err
	}
	if err := toCodeError(src); err != nil {
		return kvwire.Result{}, err
	}
	r, err := kvwire.DecodeResult(src, kvwire.Txn)
	return cloneResult(r), err // the message dies with the call
}

// cloneResult copies r's bytes out of its message.
func cloneResult(r kvwire.Result) kvwire.Result {
	ckv := func(kv kvwire.KeyValue) kvwire.KeyValue {
		kv.Key, kv.Value = bytes.Clone(kv.Key), bytes.Clone(kv.Value)
		return kv
	}
	r.KV = ckv(r.KV)
	r.KVs = slices.Clone(r.KVs)
	for i := range r.KVs {
		r.KVs[i] = ckv(r.KVs[i])
	}
	if r.Txn != nil {
		t := *r.Txn
		t.Results = slices.Clone(t.Results)
		for i := range t.Results {
			t.Results[i] = cloneResult(t.Results[i])
		}
		r.Txn = &t
	}
	return r
}

func txnOp(seq uint64, cmps []kvwire.Comparison, then, els []kvwire.Op) kvwire.Op {
	return kvwire.Op{Kind: kvwire.Txn, Seq: seq, Txn: &kvwire.Transaction{Compares: cmps, Then: then, Else: els}}
}

func kput(k, v string) kvwire.Op {
	return kvwire.Op{Kind: kvwire.Put, Key: []byte(k), Value: []byte(v)}
}
func kget(k string) kvwire.Op { return kvwire.Op{Kind: kvwire.Get, Key: []byte(k)} }

// A transaction sent to a follower is handed to the leader and applied
// once; its reads run at apply time; a retry of its sequence number is
// answered from the session (replayed) without applying it again; a
// read-only transaction is served by the follower itself without a
// session.
func TestTxnThroughAFollower(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	follower := uint64(1)
	if follower == lead {
		follower = 2
	}
	w := newWriter(t, ctx, c, follower)
	w.putAll(ctx, "ctr")
	_, _, modRev, _, err := w.getCode(ctx, "ctr", false)
	if err != nil {
		t.Fatal(err)
	}
	seq := w.nextSeq()
	bump := txnOp(seq, []kvwire.Comparison{{Key: []byte("ctr"), Target: kvwire.TargetModRevision, Number: modRev}},
		[]kvwire.Op{kput("ctr", "1"), kget("ctr")}, []kvwire.Op{kget("ctr")})
	r, err := w.txn(ctx, bump)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Succeeded || r.Txn.Replayed || len(r.Txn.Results) != 2 {
		t.Fatalf("txn: %+v %+v", r, r.Txn)
	}
	if got := r.Txn.Results[1]; !got.Found || string(got.KV.Value) != "1" || got.KV.ModRevision != r.Revision {
		t.Fatalf("get after put in the txn: %+v (txn at revision %d)", got, r.Revision)
	}
	again, err := w.txn(ctx, bump)
	if err != nil || !again.Succeeded || !again.Txn.Replayed || again.Revision != r.Revision {
		t.Fatalf("retry: %+v %v, want the saved branch replayed at %d", again, err, r.Revision)
	}
	// The compare no longer holds: else runs, nothing is written.
	stale := bump
	stale.Seq = w.nextSeq()
	r2, err := w.txn(ctx, stale)
	if err != nil || r2.Succeeded || r2.Revision != r.Revision || string(r2.Txn.Results[0].KV.Value) != "1" {
		t.Fatalf("stale txn: %+v %v", r2, err)
	}
	// A read-only txn needs no session, on any node.
	reader := c.client(follower)
	ro, err := reader.txn(ctx, txnOp(0, []kvwire.Comparison{{Key: []byte("ctr"), Target: kvwire.TargetValue, Value: []byte("1")}},
		[]kvwire.Op{{Kind: kvwire.Range, Key: []byte("c")}}, nil))
	if err != nil || !ro.Succeeded || len(ro.Txn.Results) != 1 || len(ro.Txn.Results[0].KVs) != 1 {
		t.Fatalf("read-only txn: %+v %v", ro, err)
	}
	// A write without a session is refused; so is a key written twice.
	if _, err := reader.txn(ctx, txnOp(1, nil, []kvwire.Op{kput("x", "1")}, nil)); !isCode(err, schema.ErrorCode_invalidArgument) {
		t.Errorf("txn without a session: %v", err)
	}
	_, err = w.txn(ctx, txnOp(w.nextSeq(), nil, []kvwire.Op{kput("x", "1"), kput("x", "2")}, nil))
	if !isCode(err, schema.ErrorCode_invalidArgument) || !strings.Contains(err.Error(), "written twice") {
		t.Errorf("txn writing a key twice: %v", err)
	}
}

// A restricted KV refuses a transaction any of whose keys escapes its
// grant, whatever the operation (compare, get, put, delete, range), in
// KV.txn and in a batch alike, and applies nothing; a wider range is
// narrowed; a read-only KV runs transactions that only read.
func TestRestrictedKVConfinesTxns(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "app/a", "other/b")
	app := mustRestrict(t, ctx, w.kvClient, "app/", true, false)
	in := []kvwire.Op{kput("app/x", "1")}
	outside := map[string]kvwire.Op{
		"compare": txnOp(0, []kvwire.Comparison{{Key: []byte("other/b"), Target: kvwire.TargetAbsent}}, in, nil),
		"get":     txnOp(0, nil, append([]kvwire.Op{kget("other/b")}, in...), nil),
		"put":     txnOp(0, nil, in, []kvwire.Op{kput("other/x", "1")}),
		"delete":  txnOp(0, nil, append([]kvwire.Op{{Kind: kvwire.Delete, Key: []byte("other/b")}}, in...), nil),
		"range":   txnOp(0, nil, append([]kvwire.Op{{Kind: kvwire.Range, Key: []byte("other/")}}, in...), nil),
	}
	for name, o := range outside {
		o.Seq = w.nextSeq()
		_, err := app.txn(ctx, o)
		wantDenied(t, "txn with a "+name+" outside", err, "txn refused", "app/")
	}
	// The same in a batch.
	f, rel := app.kv.Batch(ctx, func(p schema.KV_batch_Params) error {
		l, err := kvwire.NewRequest(p, kvwire.Header{Session: app.session}, 1)
		if err != nil {
			return err
		}
		o := outside["put"]
		o.Seq = w.nextSeq()
		return kvwire.EncodeOp(l.At(0), &o)
	})
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := res.Results()
	wantDenied(t, "batched txn with a put outside", toCodeError(l.At(0)), "txn refused")
	rel()
	if _, found, _ := w.get(ctx, "app/x", false); found {
		t.Fatal("a refused txn wrote app/x")
	}
	// A range over a wider prefix reads the grant only.
	r, err := app.txn(ctx, txnOp(w.nextSeq(), nil, []kvwire.Op{{Kind: kvwire.Range, Key: nil}, kput("app/y", "1")}, nil))
	if err != nil || len(r.Txn.Results[0].KVs) != 1 || string(r.Txn.Results[0].KVs[0].Key) != "app/a" {
		t.Fatalf("wide range in a txn: %+v %v", r, err)
	}
	// Read-only: reads and compares run, writes are refused.
	ro := mustRestrict(t, ctx, app, "", false, true)
	if r, err := ro.txn(ctx, txnOp(0, []kvwire.Comparison{{Key: []byte("app/a"), Target: kvwire.TargetVersion, Operator: kvwire.Greater}},
		[]kvwire.Op{kget("app/a")}, nil)); err != nil || !r.Succeeded {
		t.Fatalf("read-only txn on a read-only KV: %+v %v", r, err)
	}
	_, err = ro.txn(ctx, txnOp(w.nextSeq(), nil, nil, []kvwire.Op{kput("app/z", "1")}))
	wantDenied(t, "writing txn on a read-only KV", err, "read-only")
}
