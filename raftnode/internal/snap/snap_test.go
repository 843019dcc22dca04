package snap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

func newStore(t *testing.T, fs *crashfs.FS, keep int, log hclog.Logger) *Store {
	t.Helper()
	fs.MkdirAll("/s")
	s, err := Open(fs, "/s", keep, log)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func meta(i, term uint64) raft.SnapshotMeta {
	return raft.SnapshotMeta{Index: i, Term: term, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}, LearnersNext: []uint64{9}, AutoLeave: true}}
}

func TestChunkedWriteAndRead(t *testing.T) {
	fs := crashfs.New()
	s := newStore(t, fs, 2, nil)
	data := make([]byte, 100_000)
	rand.New(rand.NewSource(1)).Read(data)
	w, err := s.Create(meta(10, 2))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 7_000 { // chunks as InstallSnapshot delivers them
		if _, err := w.Write(data[off:min(off+7_000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(Ref{10, 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	m := r.Meta()
	if m.Index != 10 || m.Term != 2 || !m.ConfState.AutoLeave || len(m.ConfState.Voters) != 3 || m.ConfState.LearnersNext[0] != 9 {
		t.Fatalf("meta %+v", m)
	}
	if r.Size() != int64(len(data)) {
		t.Fatalf("size %d", r.Size())
	}
	var got bytes.Buffer
	buf := make([]byte, 4096)
	if _, err := io.CopyBuffer(&got, r, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatal("streamed data differs")
	}
	chunk := make([]byte, 1000)
	if _, err := r.ReadAt(chunk, 50_000); err != nil || !bytes.Equal(chunk, data[50_000:51_000]) {
		t.Fatalf("ReadAt: %v", err)
	}
}

func TestAbortAndLeftoverTempFiles(t *testing.T) {
	fs := crashfs.New()
	s := newStore(t, fs, 2, nil)
	w, _ := s.Create(meta(5, 1))
	w.Write([]byte("partial"))
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if refs, _ := s.List(); len(refs) != 0 {
		t.Fatalf("aborted snapshot listed: %v", refs)
	}
	// A crash mid-receive leaves a .tmp file: Open cleans it up.
	w, _ = s.Create(meta(6, 1))
	w.Write([]byte("partial"))
	s = newStore(t, fs, 2, nil)
	names, _ := fs.List("/s")
	if len(names) != 0 {
		t.Fatalf("leftover files: %v", names)
	}
}

func TestCorruptNewestFallsBackWithWarning(t *testing.T) {
	fs := crashfs.New()
	var logBuf bytes.Buffer
	s := newStore(t, fs, 3, hclog.New(&hclog.LoggerOptions{Output: &logBuf}))
	for i := uint64(1); i <= 3; i++ {
		if err := s.Save(raft.Snapshot{Meta: meta(i*10, 1), Data: bytes.Repeat([]byte{byte(i)}, 500)}); err != nil {
			t.Fatal(err)
		}
	}
	p := "/s/" + fileName(Ref{30, 1})
	b, _ := fs.ReadFile(p)
	b[200] ^= 1
	fs.SetFile(p, b)
	if _, err := s.Open(Ref{30, 1}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), p) {
		t.Fatalf("open corrupt: %v", err)
	}
	m, ok, err := s.Newest()
	if err != nil || !ok || m.Index != 20 {
		t.Fatalf("newest: %+v %v %v, want index 20", m, ok, err)
	}
	if !strings.Contains(logBuf.String(), "falling back") {
		t.Fatalf("no warning: %q", logBuf.String())
	}
	// The corrupt file is kept under another name, so that a snapshot with
	// the same index and term received later is written anew.
	if s.Has(Ref{30, 1}) {
		t.Fatal("corrupt snapshot still under its name")
	}
	if _, ok := fs.ReadFile(p + ".corrupt"); !ok {
		t.Fatal("corrupt snapshot not kept as .corrupt")
	}
	// Truncation (a copy cut short) is caught by the trailer.
	fs.SetFile(p, b[:len(b)-5])
	if _, err := s.Open(Ref{30, 1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open truncated: %v", err)
	}
}

func TestRetentionKeepsNewestK(t *testing.T) {
	fs := crashfs.New()
	s := newStore(t, fs, 2, nil)
	for i := uint64(1); i <= 5; i++ {
		if err := s.Save(raft.Snapshot{Meta: meta(i, 1), Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	refs, _ := s.List()
	if len(refs) != 2 || refs[0].Index != 5 || refs[1].Index != 4 {
		t.Fatalf("retained %v", refs)
	}
	snap, err := s.Load(Ref{5, 1})
	if err != nil || !bytes.Equal(snap.Data, []byte{5}) {
		t.Fatalf("load: %v", err)
	}
}

// FuzzSnapshotFile: arbitrary bytes as a snapshot file never panic and
// never allocate beyond the metadata cap; they verify or fail with ErrCorrupt.
func FuzzSnapshotFile(f *testing.F) {
	fs := crashfs.New()
	fs.MkdirAll("/s")
	s, _ := Open(fs, "/s", 1, nil)
	s.Save(raft.Snapshot{Meta: meta(1, 1), Data: []byte("state")})
	good, _ := fs.ReadFile("/s/" + fileName(Ref{1, 1}))
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs := crashfs.New()
		fs.MkdirAll("/s")
		fs.SetFile("/s/"+fileName(Ref{1, 1}), data)
		s, err := Open(fs, "/s", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Open(Ref{1, 1})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		io.Copy(io.Discard, r)
		r.Close()
	})
}

// TestMetaRoundTripsIncarnationsAndAutoPromote: the configuration's
// incarnations and learners to promote survive a save and a verified read.
func TestMetaRoundTripsIncarnationsAndAutoPromote(t *testing.T) {
	fs := crashfs.New()
	s := newStore(t, fs, 2, nil)
	m := meta(40, 3)
	m.ConfState.Learners = []uint64{4}
	m.ConfState.Incarnations = []raft.MemberIncarnation{{ID: 1, Incarnation: 0xdeadbeef}, {ID: 2, Incarnation: 1<<64 - 1}, {ID: 4, Incarnation: 7}}
	m.ConfState.AutoPromote = []uint64{4}
	if err := s.Save(raft.Snapshot{Meta: m, Data: []byte("state")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(Ref{40, 3})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Meta, m) || string(got.Data) != "state" {
		t.Fatalf("read back %+v %q, want %+v", got.Meta, got.Data, m)
	}
}

// encodeMetaV1 is the metadata format snapshot files had before
// incarnations (version 1), as that code wrote it.
func encodeMetaV1(m raft.SnapshotMeta) []byte {
	b := binary.LittleEndian.AppendUint64(nil, m.Index)
	b = binary.LittleEndian.AppendUint64(b, m.Term)
	if m.ConfState.AutoLeave {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for _, l := range [][]uint64{m.ConfState.Voters, m.ConfState.Learners, m.ConfState.VotersOutgoing, m.ConfState.LearnersNext} {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(l)))
		for _, id := range l {
			b = binary.LittleEndian.AppendUint64(b, id)
		}
	}
	return b
}

// TestReadsVersion1Files: a snapshot written before incarnations existed
// (magic version 1, no incarnations or learners to promote) still verifies
// and reads, with no incarnations.
func TestReadsVersion1Files(t *testing.T) {
	fs := crashfs.New()
	s := newStore(t, fs, 2, nil)
	m := meta(12, 2)
	mb := encodeMetaV1(m)
	data := []byte("old state")
	f := []byte("CRSNAP\x00\x01")
	f = binary.LittleEndian.AppendUint32(f, uint32(len(mb)))
	f = binary.LittleEndian.AppendUint32(f, crc32.Checksum(mb, crcTable))
	f = append(f, mb...)
	f = append(f, data...)
	f = binary.LittleEndian.AppendUint64(f, uint64(len(data)))
	f = binary.LittleEndian.AppendUint32(f, crc32.Checksum(data, crcTable))
	f = append(f, "SEND"...)
	fs.SetFile("/s/"+fileName(Ref{12, 2}), f)
	got, err := s.Load(Ref{12, 2})
	if err != nil {
		t.Fatalf("version 1 file: %v", err)
	}
	if !reflect.DeepEqual(got.Meta, m) || string(got.Data) != "old state" {
		t.Fatalf("read back %+v %q, want %+v", got.Meta, got.Data, m)
	}
	// A version this build does not know is refused, not misread.
	f[7] = 3
	fs.SetFile("/s/"+fileName(Ref{12, 2}), f)
	if _, err := s.Load(Ref{12, 2}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 3 file: %v, want ErrCorrupt", err)
	}
}
