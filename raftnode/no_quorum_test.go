package raftnode_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// With two of three nodes stopped, requests to the last one are answered
// within about the request timeout: writes with outcomeUnknown (proposed,
// never committed) or unavailable (never proposed), linearizable reads
// with timeout or unavailable, serializable reads with data. Nothing hangs,
// and once everything is closed no goroutine is left behind.
func TestNoQuorumAnswersAndLeaksNothing(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // registered first: runs after every other cleanup
	const reqTimeout = 500 * time.Millisecond
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = reqTimeout })
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, survivor := range []uint64{lead, lead%3 + 1} {
		t.Run(fmt.Sprintf("survivor-is-leader=%v", survivor == lead), func(t *testing.T) {
			for id := uint64(1); id <= 3; id++ {
				if c.nodes[id] == nil {
					c.start(id)
				}
			}
			c.leader()
			k := c.client(survivor)
			k.openRetry(t, ctx)
			if _, err := k.putCode(ctx, 1, "k", "v1"); err != nil {
				t.Fatal(err)
			}
			// Let the write reach the survivor's state machine before cutting quorum.
			rpctest.Eventually(t, 5*time.Second, "the survivor has applied the write", func() bool {
				_, _, _, found, err := k.getCode(ctx, "k", true)
				return err == nil && found
			})
			for id := uint64(1); id <= 3; id++ {
				if id != survivor {
					c.stop(id)
				}
			}
			var wg sync.WaitGroup
			errs := make(chan string, 100)
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 5 {
						start := time.Now()
						var err error
						var want []schema.ErrorCode
						switch (g + i) % 3 {
						case 0:
							_, err = k.putCode(ctx, uint64(100+g*10+i), fmt.Sprintf("g%d", g), "x")
							want = []schema.ErrorCode{schema.ErrorCode_outcomeUnknown, schema.ErrorCode_unavailable}
						case 1:
							_, _, _, _, err = k.getCode(ctx, "k", false)
							want = []schema.ErrorCode{schema.ErrorCode_timeout, schema.ErrorCode_unavailable}
						case 2:
							var v string
							var found bool
							v, _, _, found, err = k.getCode(ctx, "k", true)
							if err != nil || !found || v != "v1" {
								errs <- fmt.Sprintf("serializable get without quorum: %q %v %v", v, found, err)
							}
						}
						if took := time.Since(start); took > 3*reqTimeout {
							errs <- fmt.Sprintf("request %d took %v (timeout %v): %v", (g+i)%3, took, reqTimeout, err)
						}
						if want != nil && !isCode(err, want...) {
							errs <- fmt.Sprintf("request kind %d without quorum: %v, want %s", (g+i)%3, err, codeNames(want...))
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Error(e)
			}
		})
	}
	for id := range c.nodes {
		c.stop(id)
	}
}
