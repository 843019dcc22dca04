package raftnode_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// Writers put through nodes 1 and 2 while leadership is moved to node 3
// and node 3 is then stopped abruptly, four times: forwarded writes in
// flight when the leader dies come back as outcomeUnknown (or unavailable
// when they never reached it), retries with the same session and sequence
// number apply each write exactly once, and the final versions match.
func TestLeaderCrashWithForwardedWritesInFlight(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = time.Second })
	c.leader()
	ctx := ctxT(t)
	const writers, perWriter = 6, 80
	var wg sync.WaitGroup
	var acked, unknown atomic.Int64
	errs := make(chan string, writers)
	for w := range writers {
		k := c.client(uint64(w%2 + 1))
		k.openRetry(t, ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			key := fmt.Sprintf("w%d", w)
			for seq := uint64(1); seq <= perWriter; seq++ {
				for attempt := 0; ; attempt++ {
					_, err := k.putCode(ctx, seq, key, strconv.FormatUint(seq, 10))
					if err == nil {
						acked.Add(1)
						break
					}
					if isCode(err, schema.ErrorCode_outcomeUnknown) {
						unknown.Add(1)
					}
					if attempt > 300 || !isCode(err, schema.ErrorCode_outcomeUnknown, schema.ErrorCode_unavailable, schema.ErrorCode_timeout) {
						errs <- fmt.Sprintf("%s seq %d: %v (seed %d)", key, seq, err, seed)
						return
					}
					time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond) // client back-off, not synchronisation
				}
			}
		}()
	}
	for round := range 4 {
		// A transfer can land elsewhere (see the report: a transferee
		// with a stale suffix from an older term loses its election), so
		// try a few times.
		for try := 0; try < 5 && c.leader() != 3; try++ {
			if err := transferLeadership(ctx, c, c.leader(), 3); err != nil {
				t.Logf("round %d: transfer to 3: %v", round, err)
			}
		}
		if c.leader() != 3 {
			t.Logf("round %d: node 3 did not take over; stopping it as a follower", round)
		}
		before := acked.Load()
		rpctest.Eventually(t, 5*time.Second, "writes flow through node 3", func() bool {
			return acked.Load() >= min(before+20, writers*perWriter)
		})
		c.stop(3)
		c.leader()
		c.start(3)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	t.Logf("%d acked, %d outcomeUnknown answers", acked.Load(), unknown.Load())
	k := c.client(c.leader())
	for w := range writers {
		v, version, _, found, err := k.getCode(ctx, fmt.Sprintf("w%d", w), false)
		if err != nil || !found || version != perWriter || v != strconv.Itoa(perWriter) {
			t.Errorf("w%d: value %q version %d found %v err %v (seed %d)", w, v, version, found, err, seed)
		}
	}
}
