package services

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// deletePrefixCall calls KV.delete of prefix (with the prefix flag) and
// returns its decoded result.
func deletePrefixCall(t *testing.T, ctx context.Context, k schema.KV, session, seq uint64, prefix string) kvwire.Result {
	t.Helper()
	f, rel := k.Delete(ctx, func(p schema.KV_delete_Params) error {
		p.SetSession(session)
		p.SetSeq(seq)
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		op.SetPrefix(true)
		return op.SetKey([]byte(prefix))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatalf("delete prefix %q: %v", prefix, err)
	}
	src, err := res.Result()
	if err != nil {
		t.Fatal(err)
	}
	r, err := kvwire.DecodeResult(src, kvwire.Delete)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// batchCall runs ops in one KV.batch and returns their decoded results.
func batchCall(t *testing.T, ctx context.Context, k schema.KV, session uint64, ops ...kvwire.Op) []kvwire.Result {
	t.Helper()
	f, rel := k.Batch(ctx, func(p schema.KV_batch_Params) error {
		l, err := kvwire.NewRequest(p, kvwire.Header{Session: session}, len(ops))
		if err != nil {
			return err
		}
		for i := range ops {
			if err := kvwire.EncodeOp(l.At(i), &ops[i]); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	l, err := kvwire.Results(res, len(ops))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]kvwire.Result, len(ops))
	for i := range ops {
		if out[i], err = kvwire.DecodeResult(l.At(i), ops[i].Kind); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// storeKeys lists the node's keys.
func storeKeys(sv *Server) []string {
	kvs, _, _ := sv.kv.Range(nil, nil, 0)
	var out []string
	for _, e := range kvs {
		out = append(out, string(e.Key))
	}
	return out
}

// Through the wire: KV.delete with the prefix flag deletes every key
// under it at one revision and answers the count; a retry of its
// sequence number answers the same; the empty prefix is refused; in a
// batch and a txn it works alike, and a txn writing under the prefix it
// deletes is refused.
func TestDeletePrefixThroughTheWire(t *testing.T) {
	sv, ctx := singleNode(t)
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)
	wr.write(wput("p/1", "1"), wput("p/2", "2"), wput("p/3/x", "3"), wput("q", "4"))
	before := sv.kv.Revision()

	seq := wr.seq + 1
	r := deletePrefixCall(t, ctx, k, wr.sess, seq, "p/")
	if r.Err != nil || r.Count != 3 || !r.Succeeded || r.Found || r.Revision != before+1 {
		t.Fatalf("delete prefix: %+v (err %v), want 3 keys at revision %d", r, r.Err, before+1)
	}
	if got := storeKeys(sv); !slices.Equal(got, []string{"q"}) {
		t.Fatalf("keys: %v", got)
	}
	wr.seq = seq
	wr.write(wput("p/new", "5"))
	if again := deletePrefixCall(t, ctx, k, wr.sess, seq, "p/"); again.Err != nil || again.Count != 3 || again.Revision != before+1 {
		t.Fatalf("retry: %+v, want the first answer", again)
	}
	if got := storeKeys(sv); !slices.Equal(got, []string{"p/new", "q"}) {
		t.Fatalf("the retry ran again: keys %v", got)
	}
	if r := deletePrefixCall(t, ctx, k, wr.sess, seq+10, ""); r.Err == nil || r.Err.Code != schema.ErrorCode_invalidArgument ||
		!strings.Contains(r.Err.Message, "empty prefix") {
		t.Fatalf("empty prefix: %+v", r)
	}

	// A batch: a prefix delete and a plain delete, each with its count.
	wr.seq += 20
	rs := batchCall(t, ctx, k, wr.sess,
		kvwire.Op{Kind: kvwire.Delete, Seq: wr.seq + 1, Key: []byte("p/"), Prefix: true},
		kvwire.Op{Kind: kvwire.Delete, Seq: wr.seq + 2, Key: []byte("q")})
	if rs[0].Err != nil || rs[0].Count != 1 || rs[1].Err != nil || rs[1].Count != 1 || !rs[1].Found {
		t.Fatalf("batch: %+v", rs)
	}
	wr.seq += 2

	// A txn: a prefix delete beside a put outside it.
	wr.write(wput("t/1", "1"), wput("t/2", "2"))
	txn := kvwire.Op{Kind: kvwire.Txn, Seq: wr.seq + 1, Txn: &kvwire.Transaction{Then: []kvwire.Op{
		{Kind: kvwire.Delete, Key: []byte("t/"), Prefix: true}, {Kind: kvwire.Put, Key: []byte("u"), Value: []byte("v")}}}}
	rs = batchCall(t, ctx, k, wr.sess, txn)
	if rs[0].Err != nil || rs[0].Txn == nil || len(rs[0].Txn.Results) != 2 || rs[0].Txn.Results[0].Count != 2 || !rs[0].Txn.Results[0].Succeeded {
		t.Fatalf("txn: %+v", rs[0])
	}
	if got := storeKeys(sv); !slices.Equal(got, []string{"u"}) {
		t.Fatalf("keys after the txn: %v", got)
	}
	bad := kvwire.Op{Kind: kvwire.Txn, Seq: wr.seq + 2, Txn: &kvwire.Transaction{Then: []kvwire.Op{
		{Kind: kvwire.Delete, Key: []byte("u"), Prefix: true}, {Kind: kvwire.Put, Key: []byte("u/1"), Value: []byte("v")}}}}
	if rs := batchCall(t, ctx, k, wr.sess, bad); rs[0].Err == nil || rs[0].Err.Code != schema.ErrorCode_invalidArgument {
		t.Fatalf("a txn putting under the prefix it deletes: %+v", rs[0])
	}
}

// A restricted KV deletes a prefix only within its grant: a prefix that
// starts with the grant's is deleted; a wider one (the grant's parent, the
// empty prefix) is refused, not narrowed, and deletes nothing; a disjoint
// one is refused; a read-only KV refuses any. In a txn alike.
func TestRestrictedKVBoundsPrefixDeletes(t *testing.T) {
	sv, ctx := singleNode(t)
	ex := rpc.NewExporter(nil)
	app := schema.KV(sv.kvCapability(ex, kvScope{restricted: true, prefix: []byte("app/")}))
	defer app.Release()
	ro := schema.KV(sv.kvCapability(ex, kvScope{restricted: true, prefix: []byte("app/"), readOnly: true}))
	defer ro.Release()
	wr := newWriter(t, sv, ctx)
	wr.write(wput("app/a/1", "1"), wput("app/a/2", "2"), wput("app/b", "3"), wput("apple", "4"), wput("other/x", "5"))
	all := storeKeys(sv)

	seq := uint64(100)
	for _, tc := range []struct {
		k      schema.KV
		prefix string
		want   string
	}{
		{app, "app", "outside this KV's grant"},
		{app, "ap", "outside this KV's grant"},
		{app, "other/", "outside this KV's grant"},
		{ro, "app/a/", "read-only"},
	} {
		seq++
		r := deletePrefixCall(t, ctx, tc.k, wr.sess, seq, tc.prefix)
		if r.Err == nil || r.Err.Code != schema.ErrorCode_permissionDenied || !strings.Contains(r.Err.Message, tc.want) {
			t.Errorf("delete prefix %q: %+v, want permissionDenied (%s)", tc.prefix, r.Err, tc.want)
		}
		if got := storeKeys(sv); !slices.Equal(got, all) {
			t.Fatalf("a refused prefix delete deleted keys: %v", got)
		}
	}
	// In a txn: refused outside, and a read-only KV refuses the txn.
	txn := func(prefix string) kvwire.Op {
		seq++
		return kvwire.Op{Kind: kvwire.Txn, Seq: seq, Txn: &kvwire.Transaction{Then: []kvwire.Op{{Kind: kvwire.Delete, Key: []byte(prefix), Prefix: true}}}}
	}
	for _, k := range []schema.KV{app, ro} {
		if rs := batchCall(t, ctx, k, wr.sess, txn("app")); rs[0].Err == nil || rs[0].Err.Code != schema.ErrorCode_permissionDenied {
			t.Errorf("txn deleting a prefix outside the grant: %+v", rs[0])
		}
	}

	seq++
	if r := deletePrefixCall(t, ctx, app, wr.sess, seq, "app/a/"); r.Err != nil || r.Count != 2 {
		t.Fatalf("delete prefix within the grant: %+v %v", r, r.Err)
	}
	if rs := batchCall(t, ctx, app, wr.sess, txn("app/")); rs[0].Err != nil || rs[0].Txn.Results[0].Count != 1 {
		t.Fatalf("txn deleting the grant's prefix: %+v", rs[0])
	}
	if got := storeKeys(sv); !slices.Equal(got, []string{"apple", "other/x"}) {
		t.Fatalf("keys: %v", got)
	}
}

// A follower reads the leader's answer to a forwarded prefix delete with
// its count, which it answers its client in turn.
func TestForwardedPrefixDeleteKeepsItsCount(t *testing.T) {
	o := kvwire.Op{Kind: kvwire.Delete, Key: []byte("p/"), Prefix: true}
	_, dst := newRootResult(t)
	r := kvResult{rev: 9, w: kv.Result{Revision: 9, Succeeded: true, Deleted: 5}}
	if err := encodeResult(dst, &o, &r); err != nil {
		t.Fatal(err)
	}
	got := forwardedResult(dst, &o)
	if got.err != nil || got.w.Deleted != 5 || !got.w.Succeeded || got.rev != 9 {
		t.Fatalf("forwarded: %+v", got)
	}
}
