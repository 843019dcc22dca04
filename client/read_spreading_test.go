package client_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/rpc/rpctest"
)

// readsServed returns how many read-only batch calls each node served.
func readsServed(nodes []*fakeNode) []int64 {
	out := make([]int64, len(nodes))
	for i, n := range nodes {
		out[i] = n.readBatches.Load()
	}
	return out
}

// With read spreading on, reads of both kinds reach every endpoint, while
// the writes all go to the leader's endpoint (steering still moves the
// client there).
func TestReadSpreadingServesReadsFromEveryEndpointAndWritesFromTheLeader(t *testing.T) {
	store, nodes := fakeCluster(t, 3)
	store.mu.Lock()
	store.leader = 3
	store.mu.Unlock()
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]client.ReadOption{nil, {client.Serializable()}} {
		before := readsServed(nodes)
		reads := 0
		rpctest.Eventually(t, 10*time.Second, "reads served by every node", func() bool {
			// Sequential reads: the pool grows in the background, and
			// each read then goes to the next idle endpoint.
			if kv, err := c.Get(ctx, "k", opts...); err != nil || string(kv.Value) != "v" {
				t.Fatalf("Get = %+v, %v", kv, err)
			}
			if _, err := c.Range(ctx, "", 0, opts...); err != nil {
				t.Fatalf("Range: %v", err)
			}
			reads += 2
			now := readsServed(nodes)
			for i := range now {
				if now[i] == before[i] {
					return false
				}
			}
			return true
		})
		t.Logf("serializable=%v: %d reads, served %v", len(opts) > 0, reads, readsServed(nodes))
	}
	// Steering settles on the leader's endpoint; from then on every write
	// goes there, while the reads keep spreading.
	rpctest.Eventually(t, 10*time.Second, "the client writes through node 3, the leader", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.ID == 3
	})
	w1, w2 := nodes[0].writeBatches.Load(), nodes[1].writeBatches.Load()
	before := readsServed(nodes)
	for i := range 30 {
		if _, err := c.Put(ctx, fmt.Sprint("w", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := nodes[0].writeBatches.Load()-w1, nodes[1].writeBatches.Load()-w2; a != 0 || b != 0 {
		t.Errorf("followers served %d and %d write batches after the client found the leader; want 0", a, b)
	}
	after := readsServed(nodes)
	for i := range after {
		if after[i] == before[i] {
			t.Errorf("node %d served none of 30 sequential reads (served per node before %v, after %v)", i+1, before, after)
		}
	}
}

// With read spreading off, every read goes to the one node the client
// uses.
func TestReadSpreadingOffSendsReadsToOneNode(t *testing.T) {
	_, nodes := fakeCluster(t, 3)
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(false))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, 10*time.Second, "the client on node 1, the leader", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.ID == 1
	})
	before := readsServed(nodes)
	for range 30 {
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	after := readsServed(nodes)
	if after[0]-before[0] != 30 || after[1] != before[1] || after[2] != before[2] {
		t.Errorf("read batches served per node went from %v to %v; want all 30 on node 1", before, after)
	}
}

// A node that goes away is skipped: reads keep succeeding on the others
// without waiting for it. Once it is back, reads reach it again.
func TestReadSpreadingSkipsAnEndpointThatFailsAndReturnsToIt(t *testing.T) {
	store, nodes := fakeCluster(t, 3)
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, 10*time.Second, "reads served by node 2", func() bool {
		if _, err := c.Get(ctx, "k", client.Serializable()); err != nil {
			t.Fatal(err)
		}
		return nodes[1].readBatches.Load() > 0
	})
	addr := nodes[1].addr
	nodes[1].stop()
	// Every read succeeds: one that was on its way to node 2 when it
	// stopped is retried on another node.
	for range 50 {
		if _, err := c.Get(ctx, "k", client.Serializable()); err != nil {
			t.Fatalf("Get with node 2 down: %v", err)
		}
	}
	back, err := serveFakeAt(store, 2, hclogFor(t), nil, addr)
	if err != nil {
		t.Skipf("cannot listen on %s again to bring node 2 back: %v", addr, err)
	}
	t.Cleanup(back.stop)
	rpctest.Eventually(t, 20*time.Second, "reads served by node 2 once it is back", func() bool {
		if _, err := c.Get(ctx, "k", client.Serializable()); err != nil {
			t.Fatal(err)
		}
		return back.readBatches.Load() > 0
	})
}

// Many goroutines reading at once keep every pooled connection busy:
// each node has batch calls to serve, and every answer is right.
func TestReadSpreadingUnderConcurrentReads(t *testing.T) {
	_, nodes := fakeCluster(t, 3)
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true))
	ctx := ctx(t)
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprint("k", i), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := readsServed(nodes)
	rpctest.Eventually(t, 20*time.Second, "concurrent reads served by every node", func() bool {
		errs := make(chan error, 32)
		for g := range 32 {
			go func() {
				key := fmt.Sprint("k", g%20)
				kv, err := c.Get(ctx, key)
				if err == nil && string(kv.Value) != fmt.Sprint("v", g%20) {
					err = fmt.Errorf("Get(%s) = %q", key, kv.Value)
				}
				errs <- err
			}()
		}
		for range 32 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		now := readsServed(nodes)
		for i := range now {
			if now[i] == before[i] {
				return false
			}
		}
		return true
	})
}
