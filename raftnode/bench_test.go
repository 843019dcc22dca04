package raftnode_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// BenchmarkClusterPut measures puts through the Go client against an
// in-process 3-node cluster on loopback, with the client connected to the
// leader (leader) or to a follower that hands writes over (follower).
// Every node writes to its own temporary directory, with real fsyncs
// (disk=fsync) or with fsync turned off (disk=nosync: what the node costs
// apart from the disk; never a configuration to run).
func BenchmarkClusterPut(b *testing.B) {
	for _, disk := range []string{"fsync", "nosync"} {
		for _, via := range []string{"leader", "follower"} {
			for _, clients := range []int{1, 64} {
				b.Run(fmt.Sprintf("disk=%s/via=%s/clients=%d", disk, via, clients), func(b *testing.B) {
					benchClusterPut(b, disk == "fsync", via == "leader", clients)
				})
			}
		}
	}
}

func benchClusterPut(b *testing.B, fsync, viaLeader bool, clients int) {
	c := newBenchCluster(b, fsync)
	lead := c.leader()
	target := lead
	if !viaLeader {
		target = lead%3 + 1
	}
	cl, err := client.New([]string{c.addrs[target]})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cl.Put(ctx, "warmup", []byte("x")); err != nil {
		b.Fatal(err)
	}
	benchConcurrentPuts(b, ctx, cl, clients)
	st := c.nodes[lead].StorageStats()
	if st.Fsyncs > 0 {
		b.ReportMetric(float64(st.FsyncTotal.Microseconds())/float64(st.Fsyncs), "leader-fsync-µs")
		b.ReportMetric(float64(b.N)/float64(st.Fsyncs), "puts/leader-fsync")
	}
}

// newBenchCluster starts a quiet 3-node cluster for a benchmark.
func newBenchCluster(b *testing.B, fsync bool) *testCluster {
	return newTestClusterTB(b, 3, func(cfg *raftnode.Config) {
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 100*time.Millisecond, time.Second
		if !fsync {
			cfg.StorageKnobs = &storeknobs.Knobs{FS: noSyncFS{vfs.OS}}
		}
	})
}
