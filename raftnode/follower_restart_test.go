package raftnode_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// A follower is restarted many times while writes continue, with a tiny
// snapshot interval and WAL segments so that it catches up by snapshot
// while appends for it are queued: all nodes converge on the same state,
// every acknowledged write is applied exactly once, and no node stops.
func TestFollowerRestartLoopUnderWrites(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 30, 5, 8<<10
		cfg.RequestTimeout = time.Second
	})
	lead := c.leader()
	ctx := ctxT(t)
	victim := lead%3 + 1
	const writers, perWriter = 3, 150
	var wg sync.WaitGroup
	var acked atomic.Int64
	errs := make(chan string, writers)
	for w := range writers {
		k := c.client(lead)
		k.openRetry(t, ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := strings.Repeat("x", 300)
			for seq := uint64(1); seq <= perWriter; seq++ {
				for attempt := 0; ; attempt++ {
					_, err := k.putCode(ctx, seq, fmt.Sprintf("w%d", w), val+strconv.FormatUint(seq, 10))
					if err == nil {
						acked.Add(1)
						break
					}
					if attempt > 100 || !isCode(err, schema.ErrorCode_outcomeUnknown, schema.ErrorCode_unavailable) {
						errs <- fmt.Sprintf("writer %d seq %d: %v", w, seq, err)
						return
					}
				}
			}
		}()
	}
	installed := uint64(0)
	for i := range 8 {
		c.stop(victim)
		before := acked.Load()
		// Let at least a snapshot interval of writes go by while it is down.
		rpctest.Eventually(t, 10*time.Second, "writes progress while the follower is down", func() bool {
			return acked.Load() >= min(before+int64(30+rng.IntN(30)), writers*perWriter)
		})
		c.start(victim)
		if i%2 == 0 {
			// Sometimes restart it again before it has caught up.
			continue
		}
		rpctest.Eventually(t, 10*time.Second, "the restarted follower catches up", func() bool {
			return c.nodes[victim].Status(ctx).Applied+50 >= c.nodes[lead].Status(ctx).Commit
		})
		installed += c.nodes[victim].Status(ctx).SnapshotsInstalled
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	rpctest.Eventually(t, 15*time.Second, "all nodes converge", func() bool {
		first := c.nodes[lead].Status(ctx)
		for _, n := range c.nodes {
			if st := n.Status(ctx); st.Applied != first.Applied || st.Revision != first.Revision {
				return false
			}
		}
		return true
	})
	if installed == 0 {
		t.Logf("the follower never caught up by snapshot in this run (seed %d)", seed)
	}
	for id := range c.nodes {
		k := c.client(id)
		for w := range writers {
			v, version, _, found, err := k.getCode(ctx, fmt.Sprintf("w%d", w), true)
			if err != nil || !found || version != perWriter || !strings.HasSuffix(v, strconv.Itoa(perWriter)) {
				t.Errorf("node %d key w%d: version %d found %v err %v (seed %d)", id, w, version, found, err, seed)
			}
		}
		if err := c.nodes[id].Err(); err != nil {
			t.Errorf("node %d stopped: %v", id, err)
		}
	}
	t.Logf("snapshots installed by the restarted follower: %d", installed)
}
