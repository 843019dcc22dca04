package raftnode_test

import (
	"context"
	"fmt"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// batch sends one KV.batch whose ops fill builds and returns one error (or
// nil) per result, plus the call's own error.
func (k *kvClient) batch(ctx context.Context, session uint64, n int, fill func(i int, op schema.Op) error) ([]error, []schema.Result_Which, error) {
	f, rel := k.kv.Batch(ctx, func(p schema.KV_batch_Params) error {
		req, err := p.NewReq()
		if err != nil {
			return err
		}
		req.SetSession(session)
		l, err := req.NewOps(int32(n))
		if err != nil {
			return err
		}
		for i := range n {
			if err := fill(i, l.At(i)); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, nil, err
	}
	l, err := res.Results()
	if err != nil {
		return nil, nil, err
	}
	errs := make([]error, l.Len())
	kinds := make([]schema.Result_Which, l.Len())
	for i := range errs {
		errs[i] = toCodeError(l.At(i))
		kinds[i] = l.At(i).Which()
	}
	return errs, kinds, nil
}

func putOp(seq uint64, key, value string) func(int, schema.Op) error {
	return func(_ int, op schema.Op) error {
		op.SetSeq(seq)
		p, err := op.NewPut()
		if err != nil {
			return err
		}
		if err := p.SetKey([]byte(key)); err != nil {
			return err
		}
		return p.SetValue([]byte(value))
	}
}

// Malformed or odd requests through the leader and through a follower get
// clear per-op errors and never take the node down.
func TestMalformedRequests(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	for _, id := range []uint64{lead, lead%3 + 1} {
		k := c.client(id)
		k.openRetry(t, ctx)
		check := func(what string, errs []error, callErr error, want ...schema.ErrorCode) {
			t.Helper()
			if callErr != nil {
				t.Errorf("node %d: %s: call failed: %v", id, what, callErr)
				return
			}
			for i, err := range errs {
				if len(want) == 0 && err != nil || len(want) > 0 && !isCode(err, want...) {
					t.Errorf("node %d: %s: op %d: %v, want %s", id, what, i, err, codeNames(want...))
				}
			}
		}
		// Empty batch.
		errs, _, err := k.batch(ctx, k.session, 0, nil)
		check("empty batch", errs, err)
		if len(errs) != 0 {
			t.Errorf("node %d: empty batch returned %d results", id, len(errs))
		}
		// Unknown op kind (a newer client): op left with an unknown union tag.
		errs, _, err = k.batch(ctx, k.session, 2, func(i int, op schema.Op) error {
			if i == 1 {
				return putOp(1, "ok", "v")(i, op)
			}
			op.SetSeq(2)
			capnp.Struct(op).SetUint16(8, 77)
			return nil
		})
		if err == nil && (len(errs) != 2 || !isCode(errs[0], schema.ErrorCode_invalidArgument) || errs[1] != nil) {
			t.Errorf("node %d: unknown op kind next to a valid put: %v", id, errs)
		}
		check("unknown op kind", nil, err)
		// Unknown CAS comparison.
		errs, _, err = k.batch(ctx, k.session, 1, func(_ int, op schema.Op) error {
			op.SetSeq(3)
			cas, err := op.NewCas()
			if err != nil {
				return err
			}
			capnp.Struct(cas).SetUint16(0, 9)
			return cas.SetKey([]byte("x"))
		})
		check("unknown cas comparison", errs, err, schema.ErrorCode_invalidArgument)
		// Seq 0.
		errs, _, err = k.batch(ctx, k.session, 1, putOp(0, "x", "v"))
		check("seq 0", errs, err, schema.ErrorCode_invalidArgument)
		// Writes without a session.
		errs, _, err = k.batch(ctx, 0, 2, putOp(5, "x", "v"))
		check("no session", errs, err, schema.ErrorCode_invalidArgument)
		// Unknown session.
		errs, _, err = k.batch(ctx, 1<<60, 1, putOp(5, "x", "v"))
		check("unknown session", errs, err, schema.ErrorCode_sessionExpired)
		// Empty key.
		errs, _, err = k.batch(ctx, k.session, 1, putOp(6, "", "v"))
		check("empty key", errs, err, schema.ErrorCode_invalidArgument)
		// Huge range limit, unknown consistency value.
		errs, kinds, err := k.batch(ctx, 0, 1, func(_ int, op schema.Op) error {
			r, err := op.NewRange()
			if err != nil {
				return err
			}
			r.SetLimit(^uint32(0))
			r.SetConsistency(schema.Consistency(40000))
			return r.SetPrefix([]byte("w"))
		})
		check("huge range limit", errs, err)
		if err == nil && (len(kinds) != 1 || kinds[0] != schema.Result_Which_range) {
			t.Errorf("node %d: range result kinds %v", id, kinds)
		}
		// As many puts in one batch as a batch may carry.
		const many = kv.DefaultMaxBatchOps
		base := uint64(100 + id*100000)
		errs, _, err = k.batch(ctx, k.session, many, func(i int, op schema.Op) error {
			return putOp(base+uint64(i), fmt.Sprintf("w%05d", i), "v")(i, op)
		})
		check("a full batch of puts", errs, err)
		if len(errs) != many && err == nil {
			t.Errorf("node %d: a full batch of puts: %d results", id, len(errs))
		}
		// The node still serves.
		if _, err := k.putCode(ctx, base+many+1, "still", "alive"); err != nil {
			t.Errorf("node %d: put after malformed requests: %v", id, err)
		}
	}
	for id, n := range c.nodes {
		if n.Err() != nil {
			t.Errorf("node %d stopped: %v", id, n.Err())
		}
	}
}
