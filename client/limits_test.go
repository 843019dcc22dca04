package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode/kv"
)

// The client's limits are a default node's: what it refuses, a node
// would refuse too, and what it sends, a node accepts.
func TestClientLimitsAreTheNodeDefaults(t *testing.T) {
	if client.DefaultMaxKeySize != kv.DefaultMaxKeySize || client.DefaultMaxValueSize != kv.DefaultMaxValueSize {
		t.Errorf("client limits key %d value %d, node defaults key %d value %d",
			client.DefaultMaxKeySize, client.DefaultMaxValueSize, kv.DefaultMaxKeySize, kv.DefaultMaxValueSize)
	}
	if client.DefaultMaxBatch > kv.DefaultMaxBatchOps || client.DefaultMaxBatchBytes > kv.DefaultMaxBatchBytes {
		t.Errorf("the client's default batches (%d ops, %d bytes) exceed a node's limits (%d ops, %d bytes)",
			client.DefaultMaxBatch, client.DefaultMaxBatchBytes, kv.DefaultMaxBatchOps, kv.DefaultMaxBatchBytes)
	}
}

// Keys and values over the limits are refused before anything is sent,
// with a typed error that names the limit and does not carry the key.
func TestClientRefusesOversizedRequestsWithoutARoundTrip(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	bigKey := strings.Repeat("k", client.DefaultMaxKeySize+1)
	bigValue := make([]byte, client.DefaultMaxValueSize+1)
	cases := []struct {
		what string
		call func() error
	}{
		{"value", func() error { _, err := c.Put(ctx, "k", bigValue); return err }},
		{"key", func() error { _, err := c.Put(ctx, bigKey, nil); return err }},
		{"key", func() error { _, err := c.Get(ctx, bigKey); return err }},
		{"key", func() error { _, _, err := c.Delete(ctx, bigKey); return err }},
		{"expected value", func() error {
			_, err := c.CompareAndSwap(ctx, "k", client.IfValue(bigValue), nil)
			return err
		}},
		{"range start key", func() error { _, err := c.Range(ctx, "", 10, client.After(bigKey)); return err }},
	}
	before := store.batches.Load()
	for _, tc := range cases {
		err := tc.call()
		var tl *client.TooLargeError
		if !errors.Is(err, client.ErrTooLarge) || !errors.As(err, &tl) || tl.What != tc.what {
			t.Errorf("%s over the limit: %v, want a *TooLargeError about the %s", tc.what, err, tc.what)
			continue
		}
		if !strings.Contains(err.Error(), "size limit") || len(err.Error()) > 300 {
			t.Errorf("%s over the limit: message %q (want it to name the limit, and to be short)", tc.what, err)
		}
		var se *client.ServerError
		if !errors.As(err, &se) || se.Code != client.CodeTooLarge {
			t.Errorf("%s over the limit: not seen as a tooLarge *ServerError: %v", tc.what, err)
		}
	}
	if n := store.batches.Load() - before; n != 0 {
		t.Errorf("%d batch calls made for oversized requests, want none", n)
	}
	// At the limits, everything is sent.
	if _, err := c.Put(ctx, strings.Repeat("k", client.DefaultMaxKeySize), make([]byte, client.DefaultMaxValueSize)); err != nil {
		t.Fatalf("a put at the limits: %v", err)
	}
}

// A client told of larger limits sends what the defaults would refuse; a
// node that refuses it answers tooLarge, which matches ErrTooLarge too and
// is not retried.
func TestClientSizeLimitsAreConfigurable(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	c := newKVClient(t, addrs(nodes...), client.WithSizeLimits(0, 2*fakeMaxValue))
	ctx := ctx(t)
	before := store.batches.Load()
	_, err := c.Put(ctx, "k", make([]byte, fakeMaxValue+1))
	var se *client.ServerError
	if !errors.Is(err, client.ErrTooLarge) || !errors.As(err, &se) || se.Addr == "" {
		t.Fatalf("a value over the node's limit: %v, want the node's tooLarge answer", err)
	}
	if n := store.batches.Load() - before; n != 1 {
		t.Fatalf("%d batch calls, want 1 (sent once, not retried)", n)
	}
	small := newKVClient(t, addrs(nodes...), client.WithSizeLimits(4, 4))
	if _, err := small.Put(ctx, "kkkkk", nil); !errors.Is(err, client.ErrTooLarge) {
		t.Fatalf("a key over a lowered limit: %v", err)
	}
}
