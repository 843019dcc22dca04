package raft

import (
	"hash/crc32"
	"testing"
)

// chunkStorage is a MemoryStorage that is also a SnapshotReader and
// counts how the leader reads its snapshot.
type chunkStorage struct {
	*MemoryStorage
	snapshotCalls int    // Snapshot calls (loads of the whole snapshot)
	chunkBytes    uint64 // data bytes served by SnapshotChunk
}

func (s *chunkStorage) Snapshot() (Snapshot, error) {
	s.snapshotCalls++
	return s.MemoryStorage.Snapshot()
}

func (s *chunkStorage) SnapshotChunk(off, max uint64) (SnapshotChunk, error) {
	snap, err := s.MemoryStorage.Snapshot()
	if err != nil {
		return SnapshotChunk{}, err
	}
	size := uint64(len(snap.Data))
	lo := min(off, size)
	hi := min(lo+max, size)
	s.chunkBytes += hi - lo
	return SnapshotChunk{Meta: snap.Meta, Size: size, Checksum: crc32.Checksum(snap.Data, castagnoli), Data: snap.Data[lo:hi]}, nil
}

// A leader whose Storage is a SnapshotReader reads each chunk it sends
// from it and never loads the whole snapshot to send one.
func TestLeaderReadsSnapshotChunksFromASnapshotReader(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789abcdefghij"), nil)
	cs := &chunkStorage{MemoryStorage: x.cd}
	x.c.log.storage = cs
	chunks := 0
	x.run(x.start(), 30, func(m *Message) {
		if m.Type == MsgSnap {
			chunks++
		}
	})
	x.installed(t)
	if cs.snapshotCalls != 0 {
		t.Errorf("the leader loaded the whole snapshot %d times to send %d chunks; want 0 (SnapshotChunk only)", cs.snapshotCalls, chunks)
	}
	if chunks < 5 || cs.chunkBytes < uint64(len(x.data)) {
		t.Errorf("%d chunks, %d bytes read for a %d-byte snapshot: the transfer did not go through SnapshotChunk", chunks, cs.chunkBytes, len(x.data))
	}
}
