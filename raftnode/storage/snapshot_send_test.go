package storage

import (
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/snap"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// readCountFS counts the bytes read from snapshot files (*.snap) and how
// many of them are open.
type readCountFS struct {
	vfs.FS
	mu   sync.Mutex
	read int64
	open int
}

func (fs *readCountFS) Open(name string) (vfs.File, error) {
	f, err := fs.FS.Open(name)
	if err != nil || !strings.HasSuffix(name, ".snap") {
		return f, err
	}
	fs.mu.Lock()
	fs.open++
	fs.mu.Unlock()
	return &readCountFile{File: f, fs: fs}, nil
}

func (fs *readCountFS) counts() (read int64, open int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.read, fs.open
}

type readCountFile struct {
	vfs.File
	fs     *readCountFS
	closed bool
}

func (f *readCountFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	f.fs.mu.Lock()
	f.fs.read += int64(n)
	f.fs.mu.Unlock()
	return n, err
}

func (f *readCountFile) Close() error {
	f.fs.mu.Lock()
	if !f.closed {
		f.closed = true
		f.fs.open--
	}
	f.fs.mu.Unlock()
	return f.File.Close()
}

// streamAll reads the snapshot at index and term the way a leader sends
// it to a follower (or a node restores from it): one sequential pass, in
// chunks of chunk bytes.
func streamAll(t *testing.T, s *Store, index, term uint64, chunk int) ([]byte, uint32, error) {
	t.Helper()
	r, err := s.OpenSnapshot(index, term)
	if err != nil {
		t.Fatalf("open snapshot %d: %v", index, err)
	}
	defer r.Close()
	buf := make([]byte, chunk)
	var data []byte
	for {
		n, err := r.Read(buf)
		data = append(data, buf[:n]...)
		if err == io.EOF {
			return data, r.Checksum(), nil
		}
		if err != nil {
			return data, r.Checksum(), err
		}
	}
}

// A snapshot is sent (or restored from) with one pass over its file: each
// byte is read once, and the checksum is checked as the pass reaches the
// end, not by a pass of its own.
func TestSnapshotStreamReadsTheFileOnce(t *testing.T) {
	const chunk, chunks = 64 << 10, 32
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	state := make([]byte, chunk*chunks-100) // the last chunk is short
	for i := range state {
		state[i] = byte(rng.Uint32())
	}
	fs := &readCountFS{FS: crashfs.New()}
	s := mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	if err := s.Save(raft.HardState{Term: 1, Commit: 10}, ents(1, 10, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(10, raft.ConfState{Voters: []uint64{7}}, state); err != nil {
		t.Fatal(err)
	}
	size := int64(len(state))
	for transfer := 1; transfer <= 2; transfer++ {
		read0, _ := fs.counts()
		counted0 := s.SnapshotBytesRead()
		got, sum, err := streamAll(t, s, 10, 1, chunk)
		if err != nil {
			t.Fatalf("seed %d: stream: %v", seed, err)
		}
		read1, open := fs.counts()
		if !bytes.Equal(got, state) {
			t.Fatalf("seed %d: the stream does not give the snapshot back", seed)
		}
		if want := crc32.Checksum(state, crc32.MakeTable(crc32.Castagnoli)); sum != want {
			t.Fatalf("stream checksum %08x, want %08x", sum, want)
		}
		perTransfer := read1 - read0
		t.Logf("transfer %d of a %d-byte snapshot read %d bytes (%.3f× the data)", transfer, size, perTransfer, float64(perTransfer)/float64(size))
		if perTransfer > size+4096 {
			t.Errorf("transfer %d read %d bytes of a %d-byte snapshot; want each byte once (%d, plus header and trailer)", transfer, perTransfer, size, size)
		}
		if counted := s.SnapshotBytesRead() - counted0; counted != perTransfer {
			t.Errorf("SnapshotBytesRead counted %d bytes, the file system %d", counted, perTransfer)
		}
		if open != 0 {
			t.Errorf("%d snapshot files open after a transfer, want 0", open)
		}
	}
}

// A snapshot file damaged in its data is caught as the stream reaches its
// end: the last Read fails with ErrCorrupt instead of io.EOF.
func TestSnapshotStreamOfADamagedFileFailsAtTheEnd(t *testing.T) {
	fs := crashfs.New()
	s := mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	if err := s.Save(raft.HardState{Term: 1, Commit: 10}, ents(1, 10, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(10, raft.ConfState{Voters: []uint64{7}}, bytes.Repeat([]byte("state"), 1000)); err != nil {
		t.Fatal(err)
	}
	fs.FlipBits(snapFile(t, fs, "/d", 10), 2000, 1)
	_, _, err := streamAll(t, s, 10, 1, 512)
	if !errors.Is(err, snap.ErrCorrupt) {
		t.Fatalf("stream of a damaged file ended with %v, want ErrCorrupt", err)
	}
	if _, err := s.OpenSnapshot(11, 1); !errors.Is(err, snap.ErrNotFound) {
		t.Fatalf("opening a snapshot the store does not have: %v, want ErrNotFound", err)
	}
}
