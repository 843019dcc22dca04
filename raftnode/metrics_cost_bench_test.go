package raftnode_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// BenchmarkPutMetricsCost measures what collecting metrics costs the put
// path: puts through the leader of an in-process 3-node cluster, with
// Config.Metrics off and on, fsync turned off so that the node's own CPU
// (where the hooks run) is all there is to measure. Run it with -count
// to interleave the two (docs/BENCHMARKS.md compares their medians).
func BenchmarkPutMetricsCost(b *testing.B) {
	for _, clients := range []int{1, 32} {
		for _, on := range []bool{false, true} {
			b.Run(fmt.Sprintf("clients=%d/metrics=%v", clients, on), func(b *testing.B) {
				c := newTestClusterTB(b, 3, func(cfg *raftnode.Config) {
					cfg.HeartbeatInterval, cfg.ElectionTimeout = 100*time.Millisecond, time.Second
					cfg.StorageKnobs = &storeknobs.Knobs{FS: noSyncFS{vfs.OS}}
					cfg.Metrics = on
				})
				lead := c.leader()
				cl, err := client.New([]string{c.addrs[lead]})
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				if _, err := cl.Put(ctx, "warmup", []byte("x")); err != nil {
					b.Fatal(err)
				}
				cpu0 := processCPU(b)
				benchConcurrentPuts(b, ctx, cl, clients)
				// CPU time per put (all three nodes and the client share
				// the process) is what the hooks add to; unlike the
				// wall clock it hardly depends on what else the machine
				// runs.
				b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/put")
				if on {
					// The metrics were live: a scrape finds the puts.
					if _, err := c.nodes[lead].Metrics().Gather(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
