package storage

import (
	"bytes"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/crashfs"
	"github.com/capraft/capraft/raftnode/storage/vfs"
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

// sendAll reads a whole snapshot the way a leader sends it to one
// follower, chunk by chunk, and returns the data.
func sendAll(t *testing.T, s *Store, chunk uint64) (raft.SnapshotChunk, []byte) {
	t.Helper()
	var data []byte
	var first raft.SnapshotChunk
	for off := uint64(0); ; {
		c, err := s.SnapshotChunk(off, chunk)
		if err != nil {
			t.Fatalf("chunk at %d: %v", off, err)
		}
		if off == 0 {
			first = c
		} else if c.Meta.Index != first.Meta.Index || c.Size != first.Size || c.Checksum != first.Checksum {
			t.Fatalf("chunk at %d describes snapshot %d (%d bytes, crc %08x), the first %d (%d bytes, crc %08x)",
				off, c.Meta.Index, c.Size, c.Checksum, first.Meta.Index, first.Size, first.Checksum)
		}
		data = append(data, c.Data...)
		off += uint64(len(c.Data))
		if off >= c.Size {
			return first, data
		}
		if len(c.Data) == 0 {
			t.Fatalf("empty chunk at %d of %d", off, c.Size)
		}
	}
}

// The leader reads a snapshot file once per snapshot, not once per
// chunk: one transfer of an N-chunk snapshot reads the file about twice
// (the verification pass when it is first opened, then each chunk once),
// a second transfer of the same snapshot reads it once more, and a newer
// snapshot replaces the open file.
func TestSnapshotChunksReadTheFileOncePerSnapshot(t *testing.T) {
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

	read0, _ := fs.counts()
	c, got := sendAll(t, s, chunk)
	read1, open := fs.counts()
	if !bytes.Equal(got, state) {
		t.Fatalf("seed %d: the chunks do not reassemble the snapshot", seed)
	}
	if want := crc32.Checksum(state, crc32.MakeTable(crc32.Castagnoli)); c.Checksum != want || c.Size != uint64(size) || c.Meta.Index != 10 {
		t.Fatalf("chunks describe snapshot %d of %d bytes, crc %08x; want 10, %d, %08x", c.Meta.Index, c.Size, c.Checksum, size, want)
	}
	// Verification and the chunks: twice the data, plus header and trailer.
	perTransfer := read1 - read0
	t.Logf("one transfer of a %d-chunk snapshot of %d bytes read %d bytes (%.2f× the data)", chunks, size, perTransfer, float64(perTransfer)/float64(size))
	if perTransfer > 2*size+4096 {
		t.Errorf("one transfer read %d bytes of a %d-byte snapshot; want at most one verification pass and one read of each chunk (%d)", perTransfer, size, 2*size+4096)
	}
	if open != 1 {
		t.Errorf("%d snapshot files open after a transfer, want the one kept for the next", open)
	}

	// A second transfer (another follower, or resent chunks) reads the
	// chunks only.
	sendAll(t, s, chunk)
	read2, _ := fs.counts()
	if again := read2 - read1; again > size {
		t.Errorf("a second transfer read %d bytes of a %d-byte snapshot; want the chunks only", again, size)
	}

	// What the leader did before: load the whole snapshot for each chunk.
	for range chunks {
		if _, err := s.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	read3, _ := fs.counts()
	t.Logf("loading the whole snapshot per chunk (as before) read %d bytes (%.2f× the data)", read3-read2, float64(read3-read2)/float64(size))

	// A newer snapshot replaces the open file, closed at once.
	if err := s.Save(raft.HardState{Term: 1, Commit: 12}, ents(11, 12, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSnapshot(12, raft.ConfState{Voters: []uint64{7}}, []byte("newer")); err != nil {
		t.Fatal(err)
	}
	if _, open := fs.counts(); open != 0 {
		t.Errorf("%d snapshot files open after a newer snapshot replaced the one sent; want 0", open)
	}
	if c, got := sendAll(t, s, chunk); c.Meta.Index != 12 || string(got) != "newer" {
		t.Errorf("after a newer snapshot the chunks send snapshot %d %q, want 12 \"newer\"", c.Meta.Index, got)
	}
	s.Close()
	if _, open := fs.counts(); open != 0 {
		t.Errorf("%d snapshot files open after Close, want 0", open)
	}
	if _, err := s.SnapshotChunk(0, chunk); err == nil {
		t.Errorf("SnapshotChunk after Close succeeded; want an error")
	}
}
