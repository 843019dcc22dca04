package storage

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage/snap"
)

// CreateSnapshot durably stores a snapshot of the application state as of
// entry index (which must be committed and still in the log), with the
// membership cs in effect there. The log is not compacted: call Compact.
func (s *Store) CreateSnapshot(index uint64, cs raft.ConfState, data []byte) error {
	defer s.closeStaleSender() // after mu is released
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasSnap && index <= s.snapMeta.Index {
		return fmt.Errorf("storage: create snapshot at %d, have %d: %w", index, s.snapMeta.Index, raft.ErrSnapOutOfDate)
	}
	if c := s.wal.HardState().Commit; index > c {
		return fmt.Errorf("storage: create snapshot at %d beyond commit index %d", index, c)
	}
	t, err := s.wal.Term(index)
	if err != nil {
		return fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	meta := raft.SnapshotMeta{Index: index, Term: t, ConfState: cs}
	if err := s.snaps.Save(raft.Snapshot{Meta: meta, Data: data}); err != nil {
		return fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	s.snapMeta, s.hasSnap = meta, true
	return nil
}

// Snapshot implements raft.Storage: it reads the newest snapshot, data and
// all, into memory. To stream a large one use OpenSnapshot.
func (s *Store) Snapshot() (raft.Snapshot, error) {
	s.mu.Lock()
	meta, ok := s.snapMeta, s.hasSnap
	s.mu.Unlock()
	if !ok {
		return raft.Snapshot{}, nil
	}
	return s.snaps.Load(snap.Ref{Index: meta.Index, Term: meta.Term})
}

// SnapshotMeta returns the newest snapshot's metadata without reading its
// data; ok is false if there is none.
func (s *Store) SnapshotMeta() (meta raft.SnapshotMeta, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapMeta, s.hasSnap
}

// OpenSnapshot opens the newest snapshot for chunked reading (for sending
// InstallSnapshot): the checksum is verified by streaming before it returns,
// and the data is then served by Read/ReadAt without loading it whole.
func (s *Store) OpenSnapshot() (*snap.Reader, error) {
	s.mu.Lock()
	meta, ok := s.snapMeta, s.hasSnap
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("storage: no snapshot: %w", snap.ErrNotFound)
	}
	return s.snaps.Open(snap.Ref{Index: meta.Index, Term: meta.Term})
}

// SnapshotChunk implements raft.SnapshotReader: the leader reads each
// chunk it sends to a follower from the newest snapshot file, which is
// opened and verified once (its first chunk) and kept open for every
// transfer of it, instead of loading and verifying the whole file per
// chunk as Snapshot would. The checksum is the one the file carries,
// verified on opening.
func (s *Store) SnapshotChunk(off, max uint64) (raft.SnapshotChunk, error) {
	meta, ok := s.SnapshotMeta()
	if !ok {
		return raft.SnapshotChunk{}, nil
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.sendClosed {
		return raft.SnapshotChunk{}, fmt.Errorf("storage: read snapshot %d: store closed: %w", meta.Index, raft.ErrSnapshotTemporarilyUnavailable)
	}
	r := s.sender
	if r == nil || r.Meta().Index != meta.Index || r.Meta().Term != meta.Term {
		if r != nil {
			s.sender = nil
			r.Close()
		}
		var err error
		if r, err = s.snaps.Open(snap.Ref{Index: meta.Index, Term: meta.Term}); err != nil {
			return raft.SnapshotChunk{}, fmt.Errorf("storage: open snapshot %d to send: %w", meta.Index, err)
		}
		s.sender = r
	}
	size := uint64(r.Size())
	c := raft.SnapshotChunk{Meta: r.Meta(), Size: size, Checksum: r.Checksum()}
	if off < size {
		c.Data = make([]byte, min(max, size-off))
		if n, err := r.ReadAt(c.Data, int64(off)); n < len(c.Data) {
			return raft.SnapshotChunk{}, fmt.Errorf("storage: read snapshot %d at offset %d: %w", meta.Index, off, err)
		}
	}
	return c, nil
}

// closeStaleSender closes the reader SnapshotChunk keeps open if a newer
// snapshot replaced its own, so the file's space is not held after
// retention deletes it. Call it without mu held.
func (s *Store) closeStaleSender() {
	meta, _ := s.SnapshotMeta()
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if r := s.sender; r != nil && (r.Meta().Index != meta.Index || r.Meta().Term != meta.Term) {
		s.sender = nil
		r.Close()
	}
}

// ReceiveSnapshot starts writing a snapshot that arrives in chunks (an
// InstallSnapshot from the leader). After Writer.Commit the file is durable
// but not yet in effect: pass a raft.Snapshot with the same Meta to Save
// (as the core's Ready will) to install it; Save then skips rewriting it.
// If the node restarts in between, Open adopts the newest snapshot on disk
// as if Save had run (a snapshot is committed state, so this is safe).
func (s *Store) ReceiveSnapshot(meta raft.SnapshotMeta) (*snap.Writer, error) {
	return s.snaps.Create(meta)
}
