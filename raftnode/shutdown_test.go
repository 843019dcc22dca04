package raftnode_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/schema"
)

// After Node.Close, a request that reaches the node (its listener is still
// up) is answered at once with shuttingDown, on the leader and on a
// follower alike: it must not wait for the request timeout, nor report a
// write that never reached the log as outcomeUnknown.
func TestClosedNodeAnswersShuttingDownPromptly(t *testing.T) {
	const reqTimeout = 3 * time.Second
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = reqTimeout })
	lead := c.leader()
	follower := lead%3 + 1
	ctx := ctxT(t)
	for _, id := range []uint64{follower, lead} {
		k := c.client(id)
		k.openRetry(t, ctx)
		if _, err := k.putCode(ctx, 1, "before", "x"); err != nil {
			t.Fatalf("node %d: put before close: %v", id, err)
		}
		c.nodes[id].Close() // the rpc server keeps serving the closed node
		start := time.Now()
		_, err := k.putCode(ctx, 2, "after", "x")
		took := time.Since(start)
		if !isCode(err, schema.ErrorCode_shuttingDown) {
			t.Errorf("node %d (leader %d): put after Close: %v, want shuttingDown", id, lead, err)
		}
		if took > reqTimeout/2 {
			t.Errorf("node %d (leader %d): put after Close took %v (request timeout %v)", id, lead, took, reqTimeout)
		}
		start = time.Now()
		_, _, _, _, err = k.getCode(ctx, "before", false)
		if !isCode(err, schema.ErrorCode_shuttingDown) || time.Since(start) > reqTimeout/2 {
			t.Errorf("node %d: linearizable get after Close: %v after %v, want shuttingDown at once", id, err, time.Since(start))
		}
	}
}

// A stopped node (closed, or stopped by a disk failure) no longer follows
// the log, so its state only gets staler: even a serializable read must
// answer shuttingDown, so that clients move to another node instead of
// reading a frozen state forever.
func TestStoppedNodeRefusesSerializableReads(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	for _, id := range []uint64{lead%3 + 1, lead} {
		k := c.client(id)
		k.openRetry(t, ctx)
		if _, err := k.putCode(ctx, 1, "k", "v"); err != nil {
			t.Fatal(err)
		}
		c.nodes[id].Close()
		if _, _, _, _, err := k.getCode(ctx, "k", true); !isCode(err, schema.ErrorCode_shuttingDown) {
			t.Errorf("node %d (leader %d): serializable get after Close: %v, want shuttingDown", id, lead, err)
		}
		if _, _, err := k.rangePage(ctx, "", "", 0); !isCode(err, schema.ErrorCode_shuttingDown) {
			t.Errorf("node %d (leader %d): serializable range after Close: %v, want shuttingDown", id, lead, err)
		}
	}
}

// Close with requests in flight from many goroutines through a follower
// and the leader: every request returns promptly.
func TestCloseWithRequestsInFlight(t *testing.T) {
	const reqTimeout = 4 * time.Second
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = reqTimeout })
	lead := c.leader()
	follower := lead%3 + 1
	ctx := ctxT(t)
	type worker struct {
		k  *kvClient
		id uint64
	}
	var ws []worker
	for i := range 16 {
		id := lead
		if i%2 == 0 {
			id = follower
		}
		k := c.client(id)
		k.openRetry(t, ctx)
		ws = append(ws, worker{k, id})
	}
	var wg sync.WaitGroup
	stopAt := make(chan struct{})
	var mu sync.Mutex
	var slow []string
	var closedAt time.Time
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(1); seq <= 2000; seq++ {
				start := time.Now()
				_, err := w.k.putCode(ctx, seq, fmt.Sprintf("w%d", i), "v")
				end := time.Now()
				mu.Lock()
				ca := closedAt
				mu.Unlock()
				if !ca.IsZero() && end.Sub(maxTime(start, ca)) > reqTimeout/2 {
					mu.Lock()
					slow = append(slow, fmt.Sprintf("worker %d via node %d: %v after %v", i, w.id, err, end.Sub(start)))
					mu.Unlock()
				}
				select {
				case <-stopAt:
					if !ca.IsZero() && start.After(ca) {
						return // one full request made against the closed node
					}
				default:
				}
			}
		}()
	}
	// Let writes flow, then close both nodes the workers talk to.
	time.Sleep(300 * time.Millisecond) // load phase length, not synchronisation
	mu.Lock()
	closedAt = time.Now()
	mu.Unlock()
	var cw sync.WaitGroup
	for _, id := range []uint64{follower, lead} {
		cw.Add(1)
		go func() { defer cw.Done(); c.nodes[id].Close() }()
	}
	cw.Wait()
	if took := time.Since(closedAt); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	// Every worker makes one more request against the closed node, then stops.
	close(stopAt)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * reqTimeout):
		t.Fatal("workers still blocked long after Close")
	}
	for _, s := range slow {
		t.Error("slow answer after Close:", s)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
