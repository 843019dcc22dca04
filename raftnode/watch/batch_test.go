package watch

import (
	"math/rand"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
)

// takeBatch cuts a queue only between revisions: a batch holds whole
// revisions, at least one, and stops at the first revision boundary at
// or past maxBytes; taking batches until the queue is empty gives back
// every event in order.
func TestBatchesHoldWholeRevisions(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	for round := 0; round < 200; round++ {
		var queue []kv.Event
		rev := uint64(1)
		for i := rng.Intn(50); i >= 0; i-- {
			if rng.Intn(3) > 0 {
				rev++ // else: another event of the same revision (a transaction)
			}
			queue = append(queue, kv.Event{Type: kv.EventPut, KV: kv.KeyValue{Key: []byte("k"), Value: make([]byte, rng.Intn(20)), ModRevision: rev}})
		}
		maxBytes := 1 + rng.Intn(60)
		var got []kv.Event
		for i := 0; len(queue) > 0 && i < 1000; i++ {
			var batch []kv.Event
			batch, queue = takeBatch(queue, maxBytes)
			if len(batch) == 0 {
				t.Fatal("empty batch from a non-empty queue")
			}
			if len(queue) > 0 && queue[0].Revision() == batch[len(batch)-1].Revision() {
				t.Fatalf("revision %d split between batches", queue[0].Revision())
			}
			size := 0
			for j, e := range batch {
				if j > 0 && e.Revision() != batch[j-1].Revision() && size >= maxBytes {
					t.Fatalf("batch goes on past %d bytes at a revision boundary", maxBytes)
				}
				size += len(e.KV.Key) + len(e.KV.Value)
			}
			got = append(got, batch...)
		}
		for i := 1; i < len(got); i++ {
			if got[i].Revision() < got[i-1].Revision() {
				t.Fatal("events out of order")
			}
		}
	}
}
