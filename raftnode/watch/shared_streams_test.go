package watch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// recordingWatcher records every batch it is sent, decoded.
type recordingWatcher struct {
	mu      sync.Mutex
	batches []recordedBatch
	closed  string
}

type recordedBatch struct {
	upTo   uint64
	events []string
	revs   []uint64
}

func (w *recordingWatcher) Events(_ context.Context, call schema.Watcher_events) error {
	l, err := call.Args().Events()
	if err != nil {
		return err
	}
	b := recordedBatch{upTo: call.Args().UpTo()}
	for i := 0; i < l.Len(); i++ {
		e := l.At(i)
		k, err := e.Kv()
		if err != nil {
			return err
		}
		key, _ := k.Key()
		val, _ := k.Value()
		s := fmt.Sprintf("%d %s %s=%s", k.ModRevision(), e.Type(), key, val)
		if e.HadPrev() {
			p, _ := e.Prev()
			pv, _ := p.Value()
			s += fmt.Sprintf(" prev=%s@%d", pv, p.ModRevision())
		}
		b.events = append(b.events, s)
		b.revs = append(b.revs, k.ModRevision())
	}
	w.mu.Lock()
	w.batches = append(w.batches, b)
	w.mu.Unlock()
	return nil
}

func (w *recordingWatcher) Closed(_ context.Context, call schema.Watcher_closed) error {
	r, _ := call.Args().Reason()
	w.mu.Lock()
	w.closed = r
	w.mu.Unlock()
	return nil
}

func (w *recordingWatcher) upTo() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.batches) == 0 {
		return 0
	}
	return w.batches[len(w.batches)-1].upTo
}

// expected returns what a watch of req from start sees of the history up
// to rev, as recordingWatcher writes it.
func expected(t *testing.T, s *kv.Store, req Request, start, rev uint64) []string {
	page, err := s.ReadEvents(kv.EventQuery{From: start, To: rev, Prefix: req.Prefix, Exact: req.Exact, WithPrev: req.WithPrev}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range page.Events {
		typ := "put"
		if e.Type == kv.EventDelete {
			typ = "delete"
		}
		s := fmt.Sprintf("%d %s %s=%s", e.Revision(), typ, e.KV.Key, e.KV.Value)
		if e.HasPrev {
			s += fmt.Sprintf(" prev=%s@%d", e.Prev.Value, e.Prev.ModRevision)
		}
		out = append(out, s)
	}
	return out
}

// Watches sharing streams, joining while writes go on, some from past
// revisions (read from the history apart until they reach their
// stream), each get exactly the changes of their keys from their start,
// in revision order, in batches of whole revisions that each state the
// revision they bring the watcher up to.
func TestSharedStreamsDeliverEveryChangeOnceInOrder(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	s := kv.New(kv.Config{})
	h := NewHub(s, Config{MaxBatchBytes: 1 + rng.Intn(300), MaxScan: 1 + rng.Intn(50), CallsPerSecond: []int{-1, 200, 5000}[rng.Intn(3)]})
	defer h.Close()

	index := uint64(0)
	apply := func(c kv.Command) {
		index++
		if a := s.Apply(index, c.AppendBinary(nil)); a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	apply(kv.Command{Kind: kv.CmdOpenSession})
	seq := uint64(0)
	keys := []string{"a", "a/1", "a/2", "ab", "b/1", "b/2", "c"}
	write := func() {
		seq++
		var op kv.WriteOp
		switch rng.Intn(5) {
		case 0:
			op = kv.WriteOp{Type: kv.OpDelete, Key: []byte(keys[rng.Intn(len(keys))])}
		case 1:
			var then []kv.TxnOp
			for i := rng.Intn(4); i >= 0; i-- {
				then = append(then, kv.TxnOp{Type: kv.TxnPut, Key: []byte(keys[rng.Intn(len(keys))]), Value: []byte(fmt.Sprint(seq, "t", i))})
			}
			op = kv.WriteOp{Type: kv.OpTxn, Txn: &kv.Txn{Then: then}}
		default:
			op = kv.WriteOp{Type: kv.OpPut, Key: []byte(keys[rng.Intn(len(keys))]), Value: []byte(fmt.Sprint(seq))}
		}
		op.Seq = seq
		apply(kv.Command{Kind: kv.CmdBatch, Session: 1, Ops: []kv.WriteOp{op}})
	}

	type watch struct {
		req   Request
		start uint64
		w     *recordingWatcher
	}
	var watches []watch
	prefixes := []string{"", "a", "a/", "b/", "c", "zz"}
	for round := 0; round < 300; round++ {
		write()
		if rng.Intn(10) == 0 {
			req := Request{Prefix: []byte(prefixes[rng.Intn(len(prefixes))]), WithPrev: rng.Intn(2) == 0}
			if rng.Intn(3) == 0 {
				req.Progress = 5 * time.Millisecond
			}
			if rng.Intn(4) == 0 {
				req.Prefix, req.Exact = []byte(keys[rng.Intn(len(keys))]), true
			}
			_, head := s.HistoryBounds()
			switch rng.Intn(3) {
			case 0:
				req.From = 1 + uint64(rng.Intn(int(head)+1))
			case 1:
				req.From = head + 1 + uint64(rng.Intn(3)) // now, or a little in the future
			}
			w := new(recordingWatcher)
			start, _, err := h.Watch(schema.Watcher_ServerToClient(w), req, nil)
			if err != nil {
				t.Fatal(err)
			}
			watches = append(watches, watch{req, start, w})
		}
		if rng.Intn(20) == 0 {
			time.Sleep(time.Millisecond) // let deliveries interleave with the writes (not synchronisation)
		}
	}
	_, head := s.HistoryBounds()
	deadline := time.Now().Add(time.Minute)
	for _, x := range watches {
		// Without progress notifications, a watcher hears of nothing
		// past its keys' last change.
		want := expected(t, s, x.req, x.start, head)
		until := head
		if x.req.Progress == 0 {
			until = 0 // nothing to wait for
			if len(want) > 0 {
				fmt.Sscan(want[len(want)-1], &until)
			}
		}
		for until > x.start-1 && x.w.upTo() < until {
			if time.Now().After(deadline) {
				t.Fatalf("watch %q from %d up to %d of %d", x.req.Prefix, x.start, x.w.upTo(), head)
			}
			time.Sleep(time.Millisecond) // awaiting the watcher: polled with a deadline
		}
		x.w.mu.Lock()
		var got []string
		prev := x.start - 1
		for i, b := range x.w.batches {
			if b.upTo < prev || (b.upTo == prev && len(b.events) > 0) {
				t.Fatalf("watch %q: batch %d up to %d after one up to %d", x.req.Prefix, i, b.upTo, prev)
			}
			for _, r := range b.revs {
				if r <= prev || r > b.upTo {
					t.Fatalf("watch %q: batch %d (after %d, up to %d) holds revision %d", x.req.Prefix, i, prev, b.upTo, r)
				}
			}
			if i+1 < len(x.w.batches) && len(b.revs) > 0 {
				if next := x.w.batches[i+1]; len(next.revs) > 0 && next.revs[0] == b.revs[len(b.revs)-1] {
					t.Fatalf("watch %q: revision %d split between batches", x.req.Prefix, next.revs[0])
				}
			}
			prev = b.upTo
			got = append(got, b.events...)
		}
		x.w.mu.Unlock()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("watch %q (exact %v, prev %v) from %d got:\n%s\nwant:\n%s", x.req.Prefix, x.req.Exact, x.req.WithPrev, x.start,
				strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if len(watches) == 0 {
		t.Fatal("no watch started")
	}
}

// When the node's history moves past what the hub dispatched (here a
// restore from a snapshot further on), every watch is closed as
// compacted, naming the oldest revision kept, and a watch started
// afterwards gets what follows, without waiting for another change to
// wake the hub.
func TestWatchesClosedAsCompactedWhenTheHistoryMovesPast(t *testing.T) {
	put := func(s *kv.Store, index, seq uint64, key string) {
		c := kv.Command{Kind: kv.CmdBatch, Session: 1, Ops: []kv.WriteOp{{Seq: seq, Type: kv.OpPut, Key: []byte(key), Value: []byte("v")}}}
		if a := s.Apply(index, c.AppendBinary(nil)); a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	open := kv.Command{Kind: kv.CmdOpenSession}
	ahead := kv.New(kv.Config{})
	ahead.Apply(1, open.AppendBinary(nil))
	for i := uint64(1); i <= 10; i++ {
		put(ahead, i+1, i, fmt.Sprint("k", i))
	}
	var snap bytes.Buffer
	if _, err := ahead.Snapshot().WriteTo(&snap); err != nil {
		t.Fatal(err)
	}

	s := kv.New(kv.Config{})
	s.Apply(1, open.AppendBinary(nil))
	put(s, 2, 1, "k1")
	h := NewHub(s, Config{})
	defer h.Close()
	old := new(recordingWatcher)
	if _, _, err := h.Watch(schema.Watcher_ServerToClient(old), Request{From: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		old.mu.Lock()
		closed := old.closed
		old.mu.Unlock()
		if closed != "" {
			if !strings.Contains(closed, "compacted") || !strings.Contains(closed, "11") {
				t.Fatalf("closed with %q, want compacted naming revision 11", closed)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watch was not closed")
		}
		time.Sleep(time.Millisecond) // awaiting the watcher: polled with a deadline
	}
	fresh := new(recordingWatcher)
	start, _, err := h.Watch(schema.Watcher_ServerToClient(fresh), Request{}, nil)
	if err != nil || start != 11 {
		t.Fatalf("new watch: start %d, %v", start, err)
	}
	put(s, 12, 11, "after")
	for fresh.upTo() < 11 {
		if time.Now().After(deadline) {
			t.Fatal("the new watch got nothing")
		}
		time.Sleep(time.Millisecond) // awaiting the watcher: polled with a deadline
	}
	fresh.mu.Lock()
	got := fresh.batches[0].events
	fresh.mu.Unlock()
	if len(got) != 1 || !strings.HasPrefix(got[0], "11 put after=") {
		t.Fatalf("new watch got %v", got)
	}
}

// slowRecorder records like recordingWatcher, taking a while per call.
type slowRecorder struct{ recordingWatcher }

func (w *slowRecorder) Events(ctx context.Context, call schema.Watcher_events) error {
	time.Sleep(200 * time.Microsecond) // a slow consumer, not synchronisation
	return w.recordingWatcher.Events(ctx, call)
}

// A watch replaying a long history while writes go on is bounded by what
// it has read, not by the live changes piling up ahead of it: it drops
// them and reads that much more of the history instead, and gets every
// change once, in order, without being cancelled as too slow.
func TestReplayUnderWritesIsNotCancelledForWhatItHasNotReached(t *testing.T) {
	s := kv.New(kv.Config{})
	open := kv.Command{Kind: kv.CmdOpenSession}
	s.Apply(1, open.AppendBinary(nil))
	index := uint64(1)
	put := func(seq uint64) {
		index++
		c := kv.Command{Kind: kv.CmdBatch, Session: 1, Ops: []kv.WriteOp{{Seq: seq, Type: kv.OpPut, Key: []byte(fmt.Sprintf("k%06d", seq)), Value: bytes.Repeat([]byte("v"), 100)}}}
		if a := s.Apply(index, c.AppendBinary(nil)); a.Err != nil {
			t.Fatal(a.Err)
		}
	}
	const n = 2000
	for i := uint64(1); i <= n; i++ {
		put(i)
	}
	h := NewHub(s, Config{QueueBytes: 64 << 10, MaxBatchBytes: 4 << 10}) // a fifth of the writes during the replay
	defer h.Close()
	w := new(slowRecorder)
	if _, _, err := h.Watch(schema.Watcher_ServerToClient(w), Request{From: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for i := uint64(n + 1); i <= 2*n; i++ {
		put(i)
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // pacing the writes (~1.7 MB/s), not synchronisation
		}
	}
	deadline := time.Now().Add(time.Minute)
	for w.upTo() < 2*n {
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed != "" {
			t.Fatalf("closed: %s", closed)
		}
		if time.Now().After(deadline) {
			t.Fatalf("up to %d of %d", w.upTo(), 2*n)
		}
		time.Sleep(time.Millisecond) // awaiting the watcher: polled with a deadline
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var revs []uint64
	for _, b := range w.batches {
		revs = append(revs, b.revs...)
	}
	if len(revs) != 2*n {
		t.Fatalf("%d events, want %d", len(revs), 2*n)
	}
	for i, r := range revs {
		if r != uint64(i+1) {
			t.Fatalf("event %d has revision %d", i, r)
		}
	}
}
