package wal

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

var cacheSeed = flag.Int64("cache.seed", -1, "run TestEntryCacheMatchesDisk for this one seed only")

// checkCache verifies the entry cache invariant against the entry index:
// consecutive, ending at the last index, terms equal, bytes accounted.
func (w *WAL) checkCache() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	c := &w.cache
	var bytes int64
	for k := range c.ents {
		e := &c.ents[k]
		bytes += entryCost(e)
		if k > 0 && e.Index != c.ents[k-1].Index+1 {
			return fmt.Errorf("cache not consecutive: %d after %d", e.Index, c.ents[k-1].Index)
		}
		t, err := w.term(e.Index)
		if err != nil || t != e.Term || e.Index <= w.marker.Index {
			return fmt.Errorf("cached entry %d/%d, log has term %d (%v), start %d", e.Index, e.Term, t, err, w.marker.Index)
		}
	}
	if first, last, ok := c.bounds(); ok && last != w.lastIndex() {
		return fmt.Errorf("cache [%d,%d] does not end at the last index %d", first, last, w.lastIndex())
	}
	if bytes != c.bytes || (c.max > 0 && c.bytes > c.max) || (c.max <= 0 && len(c.ents) > 0) {
		return fmt.Errorf("cache holds %d bytes, accounts %d, bound %d", bytes, c.bytes, c.max)
	}
	return nil
}

// kept is an Entries result a caller held on to, with a private copy to
// check that later Saves never change what it was given.
type kept struct {
	ents []raft.Entry
	data [][]byte
}

// TestEntryCacheMatchesDisk drives two WALs with the same seeded random
// sequence of appends, suffix overwrites, snapshot resets and compactions:
// one with a small entry cache (so eviction is frequent), one with the
// cache disabled (every read from the segments). After every operation,
// Entries over random ranges and byte limits must return the same entries
// from both, the cache invariant must hold, and results handed out earlier
// must be unchanged. The Save slices are scribbled on after each Save, to
// show the cache keeps copies.
func TestEntryCacheMatchesDisk(t *testing.T) {
	lo, hi := int64(0), int64(200)
	if testing.Short() {
		hi = 40
	}
	if *cacheSeed >= 0 {
		lo, hi = *cacheSeed, *cacheSeed+1
	}
	for seed := lo; seed < hi; seed++ {
		if err := cacheSeedRun(seed); err != nil {
			t.Fatalf("seed %d (rerun with -run TestEntryCacheMatchesDisk -cache.seed=%d): %v", seed, seed, err)
		}
	}
	t.Logf("seeds %d..%d", lo, hi-1)
}

func cacheSeedRun(seed int64) error {
	rng := rand.New(rand.NewSource(seed))
	open := func(cacheBytes int64) (*WAL, error) {
		fs := crashfs.New()
		fs.SetDirectIO(rng.Intn(2) == 0)
		if err := fs.MkdirAll(dir); err != nil {
			return nil, err
		}
		return Open(Options{FS: fs, Dir: dir, SegmentSize: 2 << 10, Prealloc: PreallocSync, EntryCacheBytes: cacheBytes})
	}
	cacheBytes := int64(1 + rng.Intn(3000))
	cw, err := open(cacheBytes)
	if err != nil {
		return err
	}
	defer cw.Close()
	dw, err := open(-1)
	if err != nil {
		return err
	}
	defer dw.Close()
	cw.smallBuffers() // regrow and shrink the write buffer all the time
	var term uint64 = 1
	var held []kept
	data := func() []byte {
		n := rng.Intn(100)
		if rng.Intn(15) == 0 {
			n = 1000 + rng.Intn(3000) // often too big for the cache
		}
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	both := func(b Batch) error {
		e1, e2 := cw.Save(b), dw.Save(b)
		if (e1 == nil) != (e2 == nil) {
			return fmt.Errorf("save: cached %v, uncached %v", e1, e2)
		}
		for _, e := range b.Entries {
			for k := range e.Data {
				e.Data[k] ^= 0xff
			}
		}
		return nil
	}
	for i := 0; i < 150; i++ {
		start, last := dw.Start().Index, dw.LastIndex()
		var desc string
		switch r := rng.Intn(100); {
		case r < 55: // append
			n := 1 + rng.Intn(10)
			var ents []raft.Entry
			for k := 0; k < n; k++ {
				ents = append(ents, raft.Entry{Index: last + 1 + uint64(k), Term: term, Type: raft.EntryType(rng.Intn(2)), Data: data()})
			}
			desc = fmt.Sprintf("append [%d,%d]", last+1, last+uint64(n))
			if err := both(Batch{Entries: ents}); err != nil {
				return fmt.Errorf("op %d %s: %v", i, desc, err)
			}
		case r < 75: // overwrite a suffix in a new term
			if last <= start {
				continue
			}
			term++
			from := start + 1 + uint64(rng.Int63n(int64(last-start)))
			var ents []raft.Entry
			for k := 0; k < 1+rng.Intn(5); k++ {
				ents = append(ents, raft.Entry{Index: from + uint64(k), Term: term, Data: data()})
			}
			desc = fmt.Sprintf("overwrite from %d", from)
			if err := both(Batch{Entries: ents}); err != nil {
				return fmt.Errorf("op %d %s: %v", i, desc, err)
			}
		case r < 85: // snapshot reference: inside the log (kept) or beyond it (reset)
			s := SnapRef{Index: last + 1 + uint64(rng.Intn(5))}
			term++
			s.Term = term
			if last > start && rng.Intn(2) == 0 {
				s.Index = start + 1 + uint64(rng.Int63n(int64(last-start)))
				s.Term, _ = dw.Term(s.Index)
			}
			b := Batch{Snapshot: &s}
			if rng.Intn(2) == 0 {
				b.Entries = []raft.Entry{{Index: max(s.Index, last) + 1, Term: term, Data: data()}}
			}
			desc = fmt.Sprintf("snapshot %d/%d", s.Index, s.Term)
			if err := both(b); err != nil {
				return fmt.Errorf("op %d %s: %v", i, desc, err)
			}
		default: // compact
			if last <= start {
				continue
			}
			to := start + 1 + uint64(rng.Int63n(int64(last-start)))
			desc = fmt.Sprintf("compact %d", to)
			e1, e2 := cw.Compact(to, to), dw.Compact(to, to)
			if e1 != nil || e2 != nil {
				return fmt.Errorf("op %d %s: %v, %v", i, desc, e1, e2)
			}
		}
		if err := cw.checkCache(); err != nil {
			return fmt.Errorf("op %d %s: %v", i, desc, err)
		}
		if err := dw.checkCache(); err != nil {
			return fmt.Errorf("op %d %s (disabled cache): %v", i, desc, err)
		}
		start, last = dw.Start().Index, dw.LastIndex()
		if cw.Start() != dw.Start() || cw.LastIndex() != last {
			return fmt.Errorf("op %d %s: logs differ: start %v/%v last %d/%d", i, desc, cw.Start(), dw.Start(), cw.LastIndex(), last)
		}
		for q := 0; q < 5; q++ {
			if last <= start {
				break
			}
			lo := start + 1 + uint64(rng.Int63n(int64(last-start)))
			hi := lo + 1 + uint64(rng.Int63n(int64(last-lo+1)))
			if rng.Intn(3) == 0 {
				lo = max(start+1, last-min(last, uint64(rng.Intn(4)))) // the recent range
				hi = last + 1
			}
			maxBytes := uint64(rng.Intn(400))
			if rng.Intn(4) == 0 {
				maxBytes = ^uint64(0)
			}
			got, err := cw.Entries(lo, hi, maxBytes)
			if err != nil {
				return fmt.Errorf("op %d %s: cached entries [%d,%d): %v", i, desc, lo, hi, err)
			}
			want, err := dw.Entries(lo, hi, maxBytes)
			if err != nil {
				return fmt.Errorf("op %d %s: uncached entries [%d,%d): %v", i, desc, lo, hi, err)
			}
			if err := sameEntries(got, want); err != nil {
				return fmt.Errorf("op %d %s: entries [%d,%d) max %d: %v", i, desc, lo, hi, maxBytes, err)
			}
			if rng.Intn(4) == 0 {
				k := kept{ents: got}
				for _, e := range got {
					k.data = append(k.data, append([]byte(nil), e.Data...))
				}
				held = append(held, k)
			}
		}
		// Out-of-range calls fail the same way.
		for _, r := range [][2]uint64{{start, last + 1}, {start + 1, last + 2}} {
			_, e1 := cw.Entries(r[0], r[1], 0)
			_, e2 := dw.Entries(r[0], r[1], 0)
			if !errors.Is(e1, e2) || e1 == nil {
				return fmt.Errorf("op %d %s: entries [%d,%d): cached %v, uncached %v", i, desc, r[0], r[1], e1, e2)
			}
		}
	}
	for _, k := range held {
		for j, e := range k.ents {
			if !bytes.Equal(e.Data, k.data[j]) {
				return fmt.Errorf("entry %d handed out earlier changed after later saves", e.Index)
			}
		}
	}
	return nil
}

func sameEntries(got, want []raft.Entry) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d entries from the cached WAL, %d from disk", len(got), len(want))
	}
	for k := range got {
		g, w := got[k], want[k]
		if g.Index != w.Index || g.Term != w.Term || g.Type != w.Type || !bytes.Equal(g.Data, w.Data) {
			return fmt.Errorf("entry %d: cached %d/%d/%d (%d bytes), disk %d/%d/%d (%d bytes)", w.Index,
				g.Index, g.Term, g.Type, len(g.Data), w.Index, w.Term, w.Type, len(w.Data))
		}
	}
	return nil
}

// BenchmarkEntriesRecent reads back the last 4 entries of a log of 256-byte
// entries, as a node applying just-committed entries does, with the entry
// cache on (served from memory) and off (pread + decode + checksum, from
// the page cache).
func BenchmarkEntriesRecent(b *testing.B) {
	for _, c := range []struct {
		name  string
		bytes int64
	}{{"cache=off", -1}, {"cache=on", 0}} {
		b.Run(c.name, func(b *testing.B) {
			w, err := Open(Options{Dir: b.TempDir(), EntryCacheBytes: c.bytes, Prealloc: PreallocOff})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			data := make([]byte, 256)
			var ents []raft.Entry
			for i := uint64(1); i <= 1024; i++ {
				ents = append(ents, raft.Entry{Index: i, Term: 1, Data: data})
			}
			if err := w.Save(Batch{Entries: ents}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				lo := uint64(1021 - 4*(i%64))
				got, err := w.Entries(lo, lo+4, 1<<20)
				if err != nil || len(got) != 4 {
					b.Fatalf("entries: %d, %v", len(got), err)
				}
			}
		})
	}
}

func TestEntriesAcrossSegmentsAndOverwrites(t *testing.T) {
	fs := newFS(t)
	w := open(t, fs, nil)
	for i := uint64(1); i <= 60; i += 6 {
		if err := w.Save(Batch{Entries: entries(i, i+5, 1)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Save(Batch{Entries: entries(50, 55, 2)}); err != nil {
		t.Fatal(err)
	}
	check := func(w *WAL) {
		t.Helper()
		es, err := w.Entries(1, 56, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		for k, e := range es {
			wantTerm := uint64(1)
			if e.Index >= 50 {
				wantTerm = 2
			}
			if e.Index != uint64(k+1) || e.Term != wantTerm || !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(e.Index)}, 40)) {
				t.Fatalf("entry %d: %+v", k+1, e)
			}
		}
		if w.LastIndex() != 55 {
			t.Fatalf("last %d", w.LastIndex())
		}
	}
	check(w)
	w.Close()
	w = open(t, fs, nil)
	check(w)
	if err := w.Compact(30, 30); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Entries(30, 31, 0); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("entries below compaction: %v", err)
	}
	if tm, err := w.Term(30); err != nil || tm != 1 {
		t.Fatalf("term at compaction point: %d %v", tm, err)
	}
	segs := w.Segments()
	w.Close()
	w = open(t, fs, nil)
	if w.Start().Index > 30 || w.LastIndex() != 55 || w.Segments() != segs {
		t.Fatalf("after compaction and reopen: start %d last %d segments %d (want <=30, 55, %d)", w.Start().Index, w.LastIndex(), w.Segments(), segs)
	}
	w.Close()
}
