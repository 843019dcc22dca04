package concurrency_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/client/concurrency"
)

// BenchmarkUncontendedLockUnlock: one session takes and releases a free
// lock: a transaction that joins the queue and reads it, then one that
// deletes the key (two log entries).
func BenchmarkUncontendedLockUnlock(b *testing.B) {
	c := newCluster(b, 1)
	cl := c.client()
	ctx := context.Background()
	s, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(30*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	m := concurrency.NewMutex(s, "bench/uncontended")
	b.ResetTimer()
	for b.Loop() {
		if err := m.Lock(ctx); err != nil {
			b.Fatal(err)
		}
		if err := m.Unlock(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkContendedHandoff: 8 sessions loop Lock/Unlock on one lock;
// an op is one hand-off (the next waiter wakes on its watch, reads the
// queue and holds).
func BenchmarkContendedHandoff(b *testing.B) {
	c := newCluster(b, 1)
	cl := c.client()
	ctx := context.Background()
	const n = 8
	muts := make([]*concurrency.Mutex, n)
	for i := range muts {
		s, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(30*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close(ctx)
		muts[i] = concurrency.NewMutex(s, "bench/contended")
	}
	work := make(chan struct{})
	var wg sync.WaitGroup
	b.ResetTimer()
	for _, m := range muts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if err := m.Lock(ctx); err != nil {
					b.Error(err)
					return
				}
				if err := m.Unlock(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
}
