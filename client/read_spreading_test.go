package client_test

import (
	"context"
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

// concurrentReads runs n reads of key at once through c, with opts, and
// fails the test if one fails or reads another value than want.
func concurrentReads(t *testing.T, c *client.Client, n int, key, want string, opts ...client.ReadOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, n)
	for range n {
		go func() {
			kv, err := c.Get(ctx, key, opts...)
			if err == nil && string(kv.Value) != want {
				err = fmt.Errorf("Get(%s) = %q, want %q", key, kv.Value, want)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// servedByAll reports whether every node served more read batches than
// before.
func servedByAll(nodes []*fakeNode, before []int64) bool {
	now := readsServed(nodes)
	for i := range now {
		if now[i] == before[i] {
			return false
		}
	}
	return true
}

// With read spreading on, reads of both kinds that one connection's
// calls cannot carry (here: more than a batch of one waiting) go to every
// endpoint, while the writes all go to the leader's endpoint (steering
// still moves the client there).
func TestReadSpreadingOverflowsReadsToEveryEndpointAndWritesStayOnTheLeader(t *testing.T) {
	store, nodes := fakeCluster(t, 3)
	store.mu.Lock()
	store.leader = 3
	store.mu.Unlock()
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true), client.WithMaxBatch(1))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]client.ReadOption{nil, {client.Serializable()}} {
		before := readsServed(nodes)
		rounds := 0
		rpctest.Eventually(t, 10*time.Second, "reads served by every node", func() bool {
			// The pool grows in the background; reads queued beyond a
			// full batch go to the idle connections.
			concurrentReads(t, c, 16, "k", "v", opts...)
			rounds++
			return servedByAll(nodes, before)
		})
		t.Logf("serializable=%v: %d rounds of 16 reads, served %v", len(opts) > 0, rounds, readsServed(nodes))
	}
	// Steering settles on the leader's endpoint; from then on every write
	// goes there, while the reads keep spreading.
	rpctest.Eventually(t, 10*time.Second, "the client writes through node 3, the leader", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.ID == 3
	})
	w1, w2 := nodes[0].writeBatches.Load(), nodes[1].writeBatches.Load()
	for i := range 30 {
		if _, err := c.Put(ctx, fmt.Sprint("w", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := nodes[0].writeBatches.Load()-w1, nodes[1].writeBatches.Load()-w2; a != 0 || b != 0 {
		t.Errorf("followers served %d and %d write batches after the client found the leader; want 0", a, b)
	}
	before := readsServed(nodes)
	rpctest.Eventually(t, 10*time.Second, "reads still served by every node", func() bool {
		concurrentReads(t, c, 16, "k", "v")
		return servedByAll(nodes, before)
	})
}

// Each client prefers a home endpoint, drawn at random, for reads its
// connection carries alone: many clients each reading one at a time
// spread their reads over the nodes.
func TestReadSpreadingClientsReadFromTheirHomeEndpoints(t *testing.T) {
	_, nodes := fakeCluster(t, 3)
	first := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)
	if _, err := first.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	before := readsServed(nodes)
	clients := 0
	rpctest.Eventually(t, 20*time.Second, "sequential reads of many clients served by every node", func() bool {
		if clients == 60 {
			t.Fatalf("60 clients' reads did not reach every node: served %v (before %v)", readsServed(nodes), before)
		}
		c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true))
		clients++
		// Its first reads go to the current connection, on the
		// leader; the later ones to its home once it is dialled.
		for range 20 {
			if _, err := c.Get(ctx, "k", client.Serializable()); err != nil {
				t.Fatal(err)
			}
		}
		_ = c.Close()
		return servedByAll(nodes, before)
	})
	t.Logf("%d clients: read batches served %v", clients, readsServed(nodes))
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
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true), client.WithMaxBatch(1))
	ctx := ctx(t)
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	rpctest.Eventually(t, 10*time.Second, "reads served by node 2", func() bool {
		concurrentReads(t, c, 16, "k", "v", client.Serializable())
		return nodes[1].readBatches.Load() > 0
	})
	addr := nodes[1].addr
	nodes[1].stop()
	// Every read succeeds: one that was on its way to node 2 when it
	// stopped is retried on another node.
	for range 5 {
		concurrentReads(t, c, 16, "k", "v", client.Serializable())
	}
	back, err := serveFakeAt(store, 2, hclogFor(t), nil, addr)
	if err != nil {
		t.Skipf("cannot listen on %s again to bring node 2 back: %v", addr, err)
	}
	t.Cleanup(back.stop)
	rpctest.Eventually(t, 20*time.Second, "reads served by node 2 once it is back", func() bool {
		concurrentReads(t, c, 16, "k", "v", client.Serializable())
		return back.readBatches.Load() > 0
	})
}

// Many goroutines reading at once, more than a batch holds, keep every
// pooled connection busy: each node has batch calls to serve, and every
// answer is right.
func TestReadSpreadingUnderConcurrentReads(t *testing.T) {
	_, nodes := fakeCluster(t, 3)
	c := newKVClient(t, addrs(nodes...), client.WithReadSpreading(true), client.WithMaxBatch(4))
	ctx := ctx(t)
	for i := range 4 {
		if _, err := c.Put(ctx, fmt.Sprint("k", i), []byte(fmt.Sprint("v", i))); err != nil {
			t.Fatal(err)
		}
	}
	before := readsServed(nodes)
	rpctest.Eventually(t, 20*time.Second, "concurrent reads served by every node", func() bool {
		for i := range 4 {
			concurrentReads(t, c, 32, fmt.Sprint("k", i), fmt.Sprint("v", i))
		}
		return servedByAll(nodes, before)
	})
}
