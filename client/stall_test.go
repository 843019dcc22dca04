package client_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/e2e/faultproxy"
)

// stallingCluster is a fake cluster of two nodes whose first (the
// leader the client settles on) the client reaches through a link that a
// test can black-hole: the connection stays open and silent, as with a
// paused process.
func stallingCluster(t *testing.T, opts ...client.Option) (*fakeStore, *faultproxy.Link, *client.Client) {
	store, nodes := fakeCluster(t, 2)
	link, err := faultproxy.Listen(nodes[0].addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	// The request timeout is far beyond the test's context: a call held
	// until it expires fails the test.
	opts = append([]client.Option{client.WithRequestTimeout(time.Hour)}, opts...)
	c := newKVClient(t, []string{link.Addr(), nodes[1].addr}, opts...)
	if _, err := c.Put(ctx(t), "before", []byte("v")); err != nil {
		t.Fatal(err)
	}
	return store, link, c
}

// putMany writes n keys concurrently and fails the test on any error.
func putMany(t *testing.T, c *client.Client, n int) {
	ctx := ctx(t)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Put(ctx, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
				t.Errorf("put %d after the node stalled: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

// A node that stops answering (calls and liveness probes alike) without
// closing the connection is left for another endpoint: the writes it
// held complete there, each applied once.
func TestClientLeavesAStalledNode(t *testing.T) {
	store, link, c := stallingCluster(t, client.WithStallTimeout(100*time.Millisecond))
	link.Block(faultproxy.Blackhole)
	putMany(t, c, 8)
	if got := store.appliedWrites(); got != 9 {
		t.Fatalf("%d writes applied, want 9 (each once)", got)
	}
}

// Without liveness probes, an attempt the node does not answer within
// the request timeout is retried on another endpoint, not on the same
// silent connection.
func TestClientMovesOnAfterAnAttemptTimeout(t *testing.T) {
	store, link, c := stallingCluster(t, client.WithStallTimeout(-1), client.WithRequestTimeout(200*time.Millisecond))
	link.Block(faultproxy.Blackhole)
	putMany(t, c, 8)
	if got := store.appliedWrites(); got != 9 {
		t.Fatalf("%d writes applied, want 9 (each once)", got)
	}
}
