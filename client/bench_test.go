package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkClientPut measures Put through one shared Client against the
// fake node, with 1, 16 and 64 goroutines. It reports operations per second
// and the mean batch size the node saw.
func BenchmarkClientPut(b *testing.B) {
	for _, goroutines := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", goroutines), func(b *testing.B) {
			store, nodes := fakeCluster(b, 1)
			c := newKVClient(b, addrs(nodes...))
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			value := make([]byte, 256)
			if _, err := c.Put(ctx, "warm", value); err != nil {
				b.Fatal(err)
			}
			batches0, ops0 := store.batches.Load(), store.ops.Load()
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			b.ResetTimer()
			start := time.Now()
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if _, err := c.Put(ctx, fmt.Sprintf("k%d", i%10000), value); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			batches, ops := store.batches.Load()-batches0, store.ops.Load()-ops0
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			if batches > 0 {
				b.ReportMetric(float64(ops)/float64(batches), "ops/batch")
			}
		})
	}
}
