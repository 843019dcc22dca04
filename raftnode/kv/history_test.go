package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
)

// readAll reads every event of q from its From on, page by page, checking
// that the pages join up: each starts at the previous UpTo+1 and never
// splits a revision.
func readAll(t *testing.T, s *Store, q EventQuery) ([]Event, uint64) {
	t.Helper()
	var all []Event
	from := q.From
	for i := 0; i < 100000; i++ {
		q.From = from
		page, err := s.ReadEvents(q, nil)
		if err != nil {
			t.Fatalf("ReadEvents from %d: %v", from, err)
		}
		for _, e := range page.Events {
			if e.Revision() < from || e.Revision() > page.UpTo {
				t.Fatalf("page from %d up to %d holds an event at revision %d", from, page.UpTo, e.Revision())
			}
		}
		if len(all) > 0 && len(page.Events) > 0 && page.Events[0].Revision() == all[len(all)-1].Revision() {
			t.Fatalf("revision %d split between pages", page.Events[0].Revision())
		}
		all = append(all, page.Events...)
		if page.UpTo >= page.Head {
			return all, page.UpTo
		}
		if page.UpTo < from {
			t.Fatalf("page from %d made no progress (head %d)", from, page.Head)
		}
		from = page.UpTo + 1
	}
	t.Fatal("reading the history did not end")
	return nil, 0
}

// Every change is an event at its revision, in order: puts, deletes of
// existing keys, a CAS that wrote or deleted, and a transaction's writes,
// which all carry its one revision. Deletes of missing keys and failed
// compares are no events.
func TestHistoryRecordsEveryChangeAtItsRevision(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.one(sess, put(1, "a", "1"))                                                                                                       // rev 1
	d.one(sess, put(2, "a", "2"))                                                                                                       // rev 2
	d.one(sess, del(3, "missing"))                                                                                                      // no change
	d.one(sess, WriteOp{Seq: 4, Type: OpCAS, Key: []byte("a"), Compare: CompareValue, CompareValue: []byte("2"), Value: []byte("3")})   // rev 3
	d.one(sess, WriteOp{Seq: 5, Type: OpCAS, Key: []byte("a"), Compare: CompareValue, CompareValue: []byte("x"), Value: []byte("4")})   // fails
	d.one(sess, txnOf(6, &Txn{Then: []TxnOp{tput("b", "1"), tdel("a"), tput("c", "1"), tget("b")}}))                                    // rev 4
	d.one(sess, WriteOp{Seq: 7, Type: OpCAS, Key: []byte("b"), Compare: CompareAbsent, DeleteOnSuccess: true})                          // fails
	d.one(sess, WriteOp{Seq: 8, Type: OpCAS, Key: []byte("b"), Compare: CompareModRevision, CompareRevision: 4, DeleteOnSuccess: true}) // rev 5

	got, upTo := readAll(t, d.s, EventQuery{From: 1, WithPrev: true})
	if upTo != 5 {
		t.Fatalf("up to %d, want 5", upTo)
	}
	want := []string{
		"1 put a=1 c1 v1",
		"2 put a=2 c1 v2 prev=1",
		"3 put a=3 c1 v3 prev=2",
		"4 put b=1 c4 v1",
		"4 delete a prev=3",
		"4 put c=1 c4 v1",
		"5 delete b prev=1",
	}
	if s := describe(got); s != fmt.Sprint(want) {
		t.Fatalf("events:\n%s\nwant:\n%s", s, fmt.Sprint(want))
	}
	// Prefix and exact selections, without prev values.
	got, _ = readAll(t, d.s, EventQuery{From: 3, Prefix: []byte("a")})
	if s := describe(got); s != fmt.Sprint([]string{"3 put a=3 c1 v3", "4 delete a"}) {
		t.Fatalf("prefix a from 3: %s", s)
	}
	d.one(sess, put(9, "ab", "x")) // rev 6
	got, _ = readAll(t, d.s, EventQuery{From: 1, Prefix: []byte("a"), Exact: true})
	if len(got) != 4 {
		t.Fatalf("exact a: %s", describe(got))
	}
}

func describe(evs []Event) string {
	out := make([]string, len(evs))
	for i, e := range evs {
		s := fmt.Sprintf("%d %s %s", e.Revision(), e.Type, e.KV.Key)
		if e.Type == EventPut {
			s += fmt.Sprintf("=%s c%d v%d", e.KV.Value, e.KV.CreateRevision, e.KV.Version)
		}
		if e.HasPrev {
			s += fmt.Sprintf(" prev=%s", e.Prev.Value)
		}
		out[i] = s
	}
	return fmt.Sprint(out)
}

// Replaying the history from revision 1 onto an empty map rebuilds the
// store, and reading it in small pages (by bytes or by events scanned)
// gives the same events as one read, never splitting a revision.
func TestHistoryReplayRebuildsTheStore(t *testing.T) {
	rng := rand.New(rand.NewSource(testSeed(t)))
	d := newDriver(t, Config{})
	sess := d.open()
	seq := uint64(0)
	key := func() string { return fmt.Sprintf("k%d", rng.Intn(20)) }
	for i := 0; i < 400; i++ {
		seq++
		switch rng.Intn(4) {
		case 0, 1:
			d.one(sess, put(seq, key(), fmt.Sprint(i)))
		case 2:
			d.one(sess, del(seq, key()))
		case 3:
			d.one(sess, txnOf(seq, &Txn{Then: []TxnOp{tput(key(), "t"), tdel(key() + "x"), tput(key()+"x", "u")}}))
		}
		if i%50 == 0 {
			d.batch(sess, seq+1) // an ack: no change
		}
	}
	all, upTo := readAll(t, d.s, EventQuery{From: 1})
	if upTo != d.s.Revision() {
		t.Fatalf("up to %d, store at %d", upTo, d.s.Revision())
	}
	m := map[string]string{}
	last := uint64(0)
	for _, e := range all {
		if e.Revision() < last {
			t.Fatalf("revision %d after %d", e.Revision(), last)
		}
		last = e.Revision()
		if e.Type == EventPut {
			m[string(e.KV.Key)] = string(e.KV.Value)
		} else {
			delete(m, string(e.KV.Key))
		}
	}
	kvs, _, _ := d.s.Range(nil, nil, 0)
	if len(kvs) != len(m) {
		t.Fatalf("replay has %d keys, store %d", len(m), len(kvs))
	}
	for _, kv := range kvs {
		if m[string(kv.Key)] != string(kv.Value) {
			t.Fatalf("key %s: replay %q, store %q", kv.Key, m[string(kv.Key)], kv.Value)
		}
	}
	for _, q := range []EventQuery{{From: 1, MaxBytes: 1}, {From: 1, MaxBytes: 37}, {From: 1, MaxScan: 1}, {From: 1, MaxScan: 7}} {
		paged, _ := readAll(t, d.s, q)
		if describe(paged) != describe(all) {
			t.Fatalf("paged with %+v differs from one read", q)
		}
	}
}

// The history keeps the newest revisions within its bounds, whole: a read
// from before the oldest retained fails naming it, one from it succeeds.
func TestHistoryCompactsByRevisionsAndBytes(t *testing.T) {
	t.Run("revisions", func(t *testing.T) {
		d := newDriver(t, Config{HistoryRevisions: 10})
		sess := d.open()
		for i := uint64(1); i <= 25; i++ {
			d.one(sess, put(i, "k", "v"))
		}
		oldest, head := d.s.HistoryBounds()
		if head != 25 || oldest != 16 {
			t.Fatalf("bounds %d..%d, want 16..25", oldest, head)
		}
		checkCompacted(t, d.s, 15, 16)
		if got, _ := readAll(t, d.s, EventQuery{From: 16}); len(got) != 10 {
			t.Fatalf("%d events from the oldest, want 10", len(got))
		}
	})
	t.Run("bytes", func(t *testing.T) {
		d := newDriver(t, Config{HistoryBytes: 3000})
		sess := d.open()
		val := string(bytes.Repeat([]byte("v"), 100))
		for i := uint64(1); i <= 30; i++ {
			// A transaction of three puts: one revision, trimmed whole.
			d.one(sess, txnOf(i, &Txn{Then: []TxnOp{tput("a", val), tput("b", val), tput("c", val)}}))
		}
		oldest, head := d.s.HistoryBounds()
		per := int64(3 * (eventOverhead + 1 + 100 + 100)) // with the previous values
		if n := int64(head - oldest + 1); n*per > 3000 || (n+1)*per <= 3000 {
			t.Fatalf("kept revisions %d..%d (%d bytes each) within 3000 bytes", oldest, head, per)
		}
		got, _ := readAll(t, d.s, EventQuery{From: oldest})
		if len(got) != int(3*(head-oldest+1)) {
			t.Fatalf("%d events from the oldest revision %d, want whole revisions", len(got), oldest)
		}
		checkCompacted(t, d.s, oldest-1, oldest)
	})
	t.Run("newest revision always stays", func(t *testing.T) {
		d := newDriver(t, Config{HistoryBytes: 10})
		sess := d.open()
		d.one(sess, put(1, "k", "a long value over the bound"))
		d.one(sess, put(2, "k", "another long value over the bound"))
		if oldest, head := d.s.HistoryBounds(); oldest != 2 || head != 2 {
			t.Fatalf("bounds %d..%d, want 2..2", oldest, head)
		}
	})
}

func checkCompacted(t *testing.T, s *Store, from, oldest uint64) {
	t.Helper()
	_, err := s.ReadEvents(EventQuery{From: from}, nil)
	var ce *CompactedError
	if !errors.As(err, &ce) || ce.Oldest != oldest || ce.Requested != from {
		t.Fatalf("read from %d: %v, want compacted with oldest %d", from, err, oldest)
	}
}

// A restored store has no history before the snapshot's revision: a read
// from before it is compacted (never a gap), one from the next revision
// sees what follows.
func TestHistoryAfterRestoreStartsAtTheSnapshot(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	for i := uint64(1); i <= 5; i++ {
		d.one(sess, put(i, fmt.Sprint("k", i), "v"))
	}
	snap := snapBytes(t, d.s)

	r := newDriver(t, Config{})
	r.s = restored(t, Config{}, snap)
	r.idx = d.idx
	checkCompacted(t, r.s, 3, 6)
	checkCompacted(t, r.s, 5, 6)
	page, err := r.s.ReadEvents(EventQuery{From: 6}, nil)
	if err != nil || len(page.Events) != 0 || page.UpTo != 5 {
		t.Fatalf("read from 6 on the restored store: %+v, %v", page, err)
	}
	// A reader of the old history waits on Changed: a restore wakes it.
	old, _ := d.s.ReadEvents(EventQuery{}, nil)
	if err := d.s.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	<-old.Changed
	r.one(sess, put(6, "k6", "v"))
	got, _ := readAll(t, r.s, EventQuery{From: 6})
	if describe(got) != fmt.Sprint([]string{"6 put k6=v c6 v1"}) {
		t.Fatalf("after restore: %s", describe(got))
	}
}

// Readers scan the history while entries are applied and the history is
// trimmed (run with -race): each sees its events in order with no gap,
// or hears it was compacted.
func TestHistoryReadersRaceTheApplyLoop(t *testing.T) {
	d := newDriver(t, Config{HistoryRevisions: 300})
	sess := d.open()
	const writes = 3000
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := uint64(1)
			for i := 0; i < 1_000_000 && next <= writes; i++ {
				page, err := d.s.ReadEvents(EventQuery{From: next, MaxScan: 50}, nil)
				var ce *CompactedError
				if errors.As(err, &ce) {
					next = ce.Oldest // a lagging reader restarts from the oldest
					continue
				}
				for _, e := range page.Events {
					if e.Revision() != next {
						errs <- fmt.Errorf("event at revision %d, want %d", e.Revision(), next)
						return
					}
					next++
				}
				if page.UpTo == page.Head && next <= writes {
					<-page.Changed
				}
			}
		}()
	}
	for i := uint64(1); i <= writes; i++ {
		d.one(sess, put(i, "k", "v"))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
