package raftnode_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/capraft/capraft/schema"
)

// rangePage reads one page of keys under prefix after `after`.
func (k *kvClient) rangePage(ctx context.Context, prefix, after string, limit uint32) (keys []string, more bool, err error) {
	f, rel := k.kv.Range(ctx, func(p schema.KV_range_Params) error {
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		op.SetLimit(limit)
		op.SetConsistency(schema.Consistency_serializable)
		if err := op.SetPrefix([]byte(prefix)); err != nil {
			return err
		}
		return op.SetAfter([]byte(after))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, false, err
	}
	r, err := res.Result()
	if err != nil {
		return nil, false, err
	}
	if err := toCodeError(r); err != nil {
		return nil, false, err
	}
	rr, err := r.Range()
	if err != nil {
		return nil, false, err
	}
	l, err := rr.Kvs()
	if err != nil {
		return nil, false, err
	}
	for i := 0; i < l.Len(); i++ {
		key, _ := l.At(i).Key()
		keys = append(keys, string(key))
	}
	return keys, rr.More(), nil
}

// A range over keys whose values are large (each within the store's
// limits) must still come back: a page bigger than the client's message
// limit aborts the client's whole connection. The node returns a shorter
// page with more=true, and paging with `after` reaches every key.
func TestRangeOfLargeValuesFitsInAMessage(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	k.openRetry(t, ctx)
	const n = 20
	big := strings.Repeat("v", 1000<<10) // 1000 KiB: within kv's 1 MiB value limit
	for i := range n {
		if _, err := k.putCode(ctx, uint64(i+1), fmt.Sprintf("big%02d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for page := 0; page <= n; page++ {
		keys, more, err := k.rangePage(ctx, "big", after, 0)
		if err != nil {
			t.Fatalf("range page %d after %q (%d keys of %d KiB): %v", page, after, n, len(big)>>10, err)
		}
		got = append(got, keys...)
		if !more {
			break
		}
		if len(keys) == 0 {
			t.Fatalf("range page %d: empty page with more=true", page)
		}
		after = keys[len(keys)-1]
	}
	if len(got) != n {
		t.Fatalf("paged range returned %d keys, want %d", len(got), n)
	}
}
