package e2e

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"
)

// TestWatchResumesAcrossAKillOfTheNodeServingIt: a client watches a
// prefix through the leader while another writes to it; the leader (the
// node serving the watch) is killed with -9 mid-stream. The watch
// resumes on another node from the revision after the last one it
// delivered: every acknowledged write arrives exactly once, in revision
// order, with no gap (the revisions of the prefix's writes are
// consecutive, nothing else writes), and nothing arrives that was not
// written.
func TestWatchResumesAcrossAKillOfTheNodeServingIt(t *testing.T) {
	e := newEnv(t, envConfig{})
	lead := e.waitLeader(e.c.IDs(), 10*time.Second)
	eps := []string{e.c.Addr(lead)}
	for _, o := range e.others(lead) {
		eps = append(eps, e.c.Addr(o))
	}
	watcher := e.client(eps...)
	var writerEps []string
	for _, o := range e.others(lead) {
		writerEps = append(writerEps, e.c.Addr(o))
	}
	writer := e.client(append(writerEps, e.c.Addr(lead))...)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	octx, cancel := opCtx()
	start, err := writer.Put(octx, "watch/0", []byte("0"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	batches := watcher.Watch(ctx, "watch/", start)

	const writes = 300
	acked := map[uint64]string{start: "0"} // revision -> value
	var last uint64
	// The last write's revision arrives once known; the watch may have
	// delivered it already (the client passes on no progress
	// notification that repeats a revision), so the reader compares it
	// with the highest revision seen as well as with each new batch.
	targetc := make(chan uint64, 1)
	got := make(chan []watchEvent, 1)
	go func() {
		var evs []watchEvent
		defer func() { got <- evs }()
		var upTo uint64
		target := uint64(math.MaxUint64)
		for upTo < target {
			select {
			case b, ok := <-batches:
				if !ok {
					return
				}
				if b.err != nil {
					t.Errorf("watch ended: %v", b.err)
					return
				}
				evs = append(evs, b.events...)
				upTo = max(upTo, b.upTo)
			case target = <-targetc:
			}
		}
	}()
	for i := 1; i <= writes; i++ {
		if i == writes/3 {
			if err := e.c.Kill(lead); err != nil {
				t.Fatal(err)
			}
			t.Logf("killed node %d, which served the watch, after %d writes", lead, i-1)
		}
		var rev uint64
		for attempt := 0; attempt < 100; attempt++ {
			octx, cancel := opCtx()
			rev, err = writer.Put(octx, "watch/"+strconv.Itoa(i), []byte(strconv.Itoa(i)))
			cancel()
			if err == nil {
				break
			}
			backoff(ctx)
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		acked[rev] = strconv.Itoa(i)
		last = max(last, rev)
	}
	targetc <- last
	var evs []watchEvent
	select {
	case evs = <-got:
	case <-time.After(60 * time.Second):
		stop()
		evs = <-got
		t.Fatalf("watch delivered %d events, not up to revision %d", len(evs), last)
	}
	seen := map[uint64]bool{}
	prev := start - 1
	for _, ev := range evs {
		if ev.rev <= prev {
			t.Fatalf("event at revision %d after %d: duplicate or out of order", ev.rev, prev)
		}
		if ev.rev != prev+1 {
			t.Fatalf("gap: event at revision %d after %d (only this test writes)", ev.rev, prev)
		}
		if ev.del || ev.key != "watch/"+ev.value {
			t.Fatalf("unexpected event %+v", ev)
		}
		prev = ev.rev
		seen[ev.rev] = true
	}
	for rev, v := range acked {
		if !seen[rev] {
			t.Fatalf("acknowledged write of %s at revision %d never delivered (%d events up to %d)", v, rev, len(evs), prev)
		}
	}
	if prev < last {
		t.Fatalf("watch up to %d, last write at %d", prev, last)
	}
	t.Logf("%d events, revisions %d..%d, exactly once across the kill", len(evs), start, prev)
}
