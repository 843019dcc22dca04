package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

const fuzzMaxRecord = 1 << 16

// validSegment returns the bytes of a real first segment holding n entries,
// a hard state and (if withSnap) a snapshot reset.
func validSegment(n int, withSnap bool) []byte {
	fs := crashfs.New()
	fs.MkdirAll(dir)
	w, err := Open(Options{FS: fs, Dir: dir, Prealloc: PreallocOff})
	if err != nil {
		panic(err)
	}
	hs := raft.HardState{Term: 2, Vote: 1, Commit: 1}
	b := Batch{Entries: entries(1, uint64(n), 1), HardState: &hs}
	if err := w.Save(b); err != nil {
		panic(err)
	}
	if withSnap {
		if err := w.Save(Batch{Snapshot: &SnapRef{Index: uint64(n) + 3, Term: 2}, Entries: entries(uint64(n)+4, uint64(n)+5, 2)}); err != nil {
			panic(err)
		}
	}
	w.Close()
	data, _ := fs.ReadFile(dir + "/" + segName(1, 1))
	return data
}

// FuzzDecodeRecord: arbitrary bytes either decode to a record that
// re-encodes to the same bytes, or give an error; never a panic, never an
// allocation beyond the record's fixed fields.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(AppendEntry(nil, raft.Entry{Index: 1, Term: 1, Data: []byte("hello")}))
	f.Add(AppendHardState(nil, raft.HardState{Term: 3, Vote: 2, Commit: 1}))
	f.Add(AppendSnapshot(nil, SnapRef{Index: 9, Term: 4}))
	f.Add(AppendSegmentHeader(nil, SegmentHeader{Version: 1, Seq: 1}, raft.HardState{}))
	f.Add([]byte{})
	f.Add(make([]byte, headerSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, n, err := DecodeRecord(data, fuzzMaxRecord)
		if err != nil {
			if !errors.Is(err, ErrShortRecord) && !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if n < headerSize || n > len(data) {
			t.Fatalf("decoded length %d of %d bytes", n, len(data))
		}
		var re []byte
		switch rec.Type {
		case TypeEntry:
			re = AppendEntry(nil, rec.Entry)
		case TypeHardState:
			re = AppendHardState(nil, rec.Hard)
		case TypeSnapshot:
			re = AppendSnapshot(nil, rec.Snap)
		case TypeTruncate:
			re = AppendTruncate(nil, rec.End)
		case TypeSegment:
			re = AppendSegmentHeader(nil, rec.Seg, rec.Hard)
		}
		if !bytes.Equal(re, data[:n]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", re, data[:n])
		}
	})
}

// FuzzRecoverSegment: a segment file of arbitrary bytes either fails to open
// with an error or recovers to a log that can be read in full, appended to,
// and recovered again to the same state plus the append.
func FuzzRecoverSegment(f *testing.F) {
	f.Add(validSegment(3, false))
	f.Add(validSegment(5, true))
	v := validSegment(4, false)
	f.Add(v[:len(v)-7])
	f.Add(append(append([]byte(nil), v...), make([]byte, 100)...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := crashfs.New()
		fs.MkdirAll(dir)
		fs.SetFile(dir+"/"+segName(1, 1), data)
		// Small preallocated segments: recovering an empty input creates a
		// new one, and the append may roll over.
		opts := Options{FS: fs, Dir: dir, MaxRecordSize: fuzzMaxRecord, SegmentSize: 4 << 10, Prealloc: PreallocSync}
		w, err := Open(opts)
		if err != nil {
			return
		}
		start, last := w.Start(), w.LastIndex()
		if last < start.Index {
			t.Fatalf("last %d below start %d", last, start.Index)
		}
		if last > start.Index {
			es, err := w.Entries(start.Index+1, last+1, 1<<30)
			if err != nil || uint64(len(es)) != last-start.Index {
				t.Fatalf("reading recovered entries: %d entries, %v", len(es), err)
			}
		}
		tm, _ := w.Term(last)
		hs := w.HardState()
		if err := w.Save(Batch{Entries: []raft.Entry{{Index: last + 1, Term: tm, Data: []byte("z")}}}); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		w.Close()
		w, err = Open(opts)
		if err != nil {
			t.Fatalf("reopen after append: %v", err)
		}
		defer w.Close()
		if w.LastIndex() != last+1 || w.HardState() != hs || w.Start() != start {
			t.Fatalf("reopen: start %v last %d hs %+v; want %v %d %+v", w.Start(), w.LastIndex(), w.HardState(), start, last+1, hs)
		}
	})
}

// TestWriteFuzzCorpus regenerates the committed seed corpora under
// testdata/fuzz when CAPRAFT_WRITE_CORPUS=1.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("CAPRAFT_WRITE_CORPUS") != "1" {
		t.Skip("set CAPRAFT_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	write := func(target, name string, data []byte) {
		d := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(d, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seg := validSegment(6, true)
	write("FuzzRecoverSegment", "valid-with-snapshot", seg)
	write("FuzzRecoverSegment", "torn-mid-record", seg[:len(seg)-20])
	write("FuzzRecoverSegment", "torn-in-header", seg[:len(seg)-(headerSize+entryFixed+40)+4])
	flipped := append([]byte(nil), seg...)
	flipped[100] ^= 1
	write("FuzzRecoverSegment", "bit-flip-middle", flipped)
	write("FuzzRecoverSegment", "zero-tail", append(append([]byte(nil), seg...), make([]byte, 64)...))
	write("FuzzRecoverSegment", "header-only", seg[:headerSize+segSize])
	big := AppendEntry(nil, raft.Entry{Index: 1, Term: 1})
	big[0], big[1], big[2], big[3] = 0xff, 0xff, 0xff, 0x7f // huge length, header CRC now wrong
	write("FuzzDecodeRecord", "huge-length", big)
	write("FuzzDecodeRecord", "entry", AppendEntry(nil, raft.Entry{Index: 7, Term: 3, Type: raft.EntryConfChange, Data: []byte("conf")}))
	write("FuzzDecodeRecord", "segment-header", AppendSegmentHeader(nil, SegmentHeader{Version: 1, Seq: 2, PrevIndex: 10, PrevTerm: 2}, raft.HardState{Term: 2}))
	write("FuzzDecodeRecord", "short", AppendHardState(nil, raft.HardState{Term: 1})[:15])
}
