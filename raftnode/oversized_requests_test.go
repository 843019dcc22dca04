package raftnode_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// logState is a node's last log index and the bytes its write-ahead log
// has written: a refused request must not add to the latter.
type logState struct{ last, written uint64 }

func (c *testCluster) logStates(t *testing.T) map[uint64]logState {
	ctx := ctxT(t)
	m := map[uint64]logState{}
	for id, n := range c.nodes {
		m[id] = logState{n.Status(ctx).LastIndex, n.StorageStats().BytesWritten}
	}
	return m
}

// Keys, values and batches over the limits are refused with tooLarge,
// naming the limit, by whichever node receives them (leader or follower),
// and nothing reaches any node's log.
func TestOversizedRequestsAreRefusedBeforeTheLog(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.ElectionTimeout = time.Second })
	lead := c.leader()
	ctx := ctxT(t)
	bigValue := strings.Repeat("v", kv.DefaultMaxValueSize+1)
	bigKey := strings.Repeat("k", kv.DefaultMaxKeySize+1)
	mib := strings.Repeat("m", 1<<20)
	for _, id := range []uint64{lead%3 + 1, lead} {
		k := c.client(id)
		k.openRetry(t, ctx)
		rpcOpen := k.session
		before := c.logStates(t)
		wantTooLarge := func(what string, err error, limit string) {
			t.Helper()
			if !isCode(err, schema.ErrorCode_tooLarge) || !strings.Contains(err.Error(), limit) {
				t.Errorf("node %d: %s: got %v, want tooLarge naming the %s", id, what, err, limit)
			}
			if err != nil && len(err.Error()) > 200 {
				t.Errorf("node %d: %s: a %d-byte error message (it must not echo the request)", id, what, len(err.Error()))
			}
		}

		_, err := k.put(ctx, "big", bigValue)
		wantTooLarge("put of a value over the limit", err, "value size limit")
		_, err = k.put(ctx, bigKey, "v")
		wantTooLarge("put of a key over the limit", err, "key size limit")
		_, _, _, _, err = k.getCode(ctx, bigKey, false)
		wantTooLarge("get of a key over the limit", err, "key size limit")

		errs, _, callErr := k.batch(ctx, rpcOpen, 1, func(_ int, op schema.Op) error {
			op.SetSeq(100)
			cas, err := op.NewCas()
			if err != nil {
				return err
			}
			if err := cas.SetKey([]byte("c")); err != nil {
				return err
			}
			return cas.Expected().SetValue([]byte(bigValue))
		})
		if callErr != nil {
			t.Fatalf("node %d: batch: %v", id, callErr)
		}
		wantTooLarge("cas with an expected value over the limit", errs[0], "value size limit")

		// Five values within the limit, over the batch's byte limit.
		errs, _, callErr = k.batch(ctx, rpcOpen, 5, func(i int, op schema.Op) error {
			return putOp(uint64(200+i), fmt.Sprintf("b%d", i), mib)(i, op)
		})
		if callErr != nil {
			t.Fatalf("node %d: batch: %v", id, callErr)
		}
		for i, err := range errs {
			wantTooLarge(fmt.Sprintf("op %d of a batch over the byte limit", i), err, "batch size limit")
		}

		// More operations than a batch may carry: the call itself fails.
		_, _, callErr = k.batch(ctx, rpcOpen, kv.DefaultMaxBatchOps+1, func(i int, op schema.Op) error {
			return putOp(uint64(1000+i), fmt.Sprintf("n%d", i), "v")(i, op)
		})
		if callErr == nil || !strings.Contains(callErr.Error(), "operations per batch") {
			t.Errorf("node %d: a batch of %d operations: %v, want a failure naming the operations limit", id, kv.DefaultMaxBatchOps+1, callErr)
		}

		after := c.logStates(t)
		for nid, b := range before {
			a := after[nid]
			// A refused key (8 KiB) or value (1 MiB) written anywhere
			// would show here; the no-op entry of an election the race
			// detector's slowness may cause would not.
			if a.written-b.written > 4<<10 {
				t.Errorf("requests refused by node %d changed node %d's log: last index %d -> %d, %d bytes written",
					id, nid, b.last, a.last, a.written-b.written)
			}
		}
	}
	// The refusals left the cluster working.
	k := c.client(lead)
	k.openRetry(t, ctx)
	if _, err := k.put(ctx, "fine", strings.Repeat("v", kv.DefaultMaxValueSize)); err != nil {
		t.Fatalf("a put at the value size limit: %v", err)
	}
}
