package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
)

// TestReadsAreNotHeldBehindWritesInFlight checks that a read issued while
// a write's batch waits for its commit is answered at once, on a batch of
// its own, with the default single call in flight: reads and writes are
// batched apart, each kind with its own calls (a batch is answered as a
// whole, so a read in a write's batch would wait for the commit).
func TestReadsAreNotHeldBehindWritesInFlight(t *testing.T) {
	store, nodes := fakeCluster(t, 1)
	store.writeGate = make(chan struct{})
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)

	wrote := make(chan error, 1)
	go func() {
		_, err := c.Put(ctx, "k", []byte("v"))
		wrote <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for store.heldWrites.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the put's batch never reached the node")
		}
		time.Sleep(time.Millisecond) // polling a counter with a deadline
	}

	for _, tc := range []struct {
		name string
		opts []client.ReadOption
	}{
		{"linearizable", nil},
		{"serializable", []client.ReadOption{client.Serializable()}},
	} {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.Get(rctx, "k", tc.opts...)
		late := rctx.Err() != nil
		cancel()
		if late {
			t.Fatalf("a %s get waited for the write in flight (its batch is held): %v", tc.name, err)
		}
		if !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("a %s get of a key not yet written: %v, want ErrNotFound", tc.name, err)
		}
	}
	select {
	case err := <-wrote:
		t.Fatalf("the put finished while its batch was held: %v", err)
	default:
	}
	close(store.writeGate)
	if err := <-wrote; err != nil {
		t.Fatalf("put: %v", err)
	}
}
