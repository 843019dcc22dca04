package raftnode_test

import (
	"context"
	"testing"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/schema"
)

// deletePrefix calls KV.delete of prefix with the prefix flag and k's
// session; a result with an error is returned as a *codeError.
func (k *kvClient) deletePrefix(ctx context.Context, seq uint64, prefix string) (kvwire.Result, error) {
	f, rel := k.kv.Delete(ctx, func(p schema.KV_delete_Params) error {
		p.SetSession(k.session)
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
		return kvwire.Result{}, err
	}
	src, err := res.Result()
	if err != nil {
		return kvwire.Result{}, err
	}
	if err := toCodeError(src); err != nil {
		return kvwire.Result{}, err
	}
	r, err := kvwire.DecodeResult(src, kvwire.Delete)
	return cloneResult(r), err
}

// A prefix delete sent to a follower is handed to the leader, applied
// once at one revision and answered with its count, which a retry of its
// sequence number answers again; in a txn alike. A restricted KV on the
// follower refuses a prefix wider than its grant before forwarding it.
func TestDeletePrefixThroughAFollower(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	follower := uint64(1)
	if follower == lead {
		follower = 2
	}
	w := newWriter(t, ctx, c, follower)
	w.putAll(ctx, "app/1", "app/2", "app/3/x", "apple", "t/1")
	_, _, before, _, err := w.getCode(ctx, "t/1", false)
	if err != nil {
		t.Fatal(err)
	}
	seq := w.nextSeq()
	r, err := w.deletePrefix(ctx, seq, "app/")
	if err != nil || r.Count != 3 || !r.Succeeded || r.Revision != before+1 {
		t.Fatalf("delete prefix app/ through a follower: %+v %v, want 3 keys at revision %d", r, err, before+1)
	}
	again, err := w.deletePrefix(ctx, seq, "app/")
	if err != nil || again.Count != 3 || again.Revision != r.Revision {
		t.Fatalf("retry: %+v %v, want the first answer", again, err)
	}
	if _, found, _ := w.get(ctx, "apple", false); !found {
		t.Fatal("apple, outside the prefix app/, was deleted")
	}

	tr, err := w.txn(ctx, txnOp(w.nextSeq(), nil, []kvwire.Op{{Kind: kvwire.Delete, Key: []byte("t/"), Prefix: true}, kput("u", "1")}, nil))
	if err != nil || tr.Txn == nil || len(tr.Txn.Results) != 2 || tr.Txn.Results[0].Count != 1 {
		t.Fatalf("txn deleting t/: %+v %v", tr, err)
	}

	w.putAll(ctx, "app/4")
	app := mustRestrict(t, ctx, w.kvClient, "app/", true, false)
	_, err = app.deletePrefix(ctx, w.nextSeq(), "app")
	wantDenied(t, "prefix delete wider than the grant", err, "app/")
	if _, found, _ := w.get(ctx, "app/4", false); !found {
		t.Fatal("a refused prefix delete deleted app/4")
	}
	if _, err := w.deletePrefix(ctx, w.nextSeq(), ""); !isCode(err, schema.ErrorCode_invalidArgument) {
		t.Fatalf("empty prefix: %v", err)
	}
}
