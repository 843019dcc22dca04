package storage

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/internal/snap"
	"github.com/capraft/capraft/raftnode/raft"
)

// SnapshotWriter writes a snapshot into the store as a stream: one of the
// application's state (NewSnapshot) or one a leader sends
// (ReceiveSnapshot). Nothing is visible until Commit.
type SnapshotWriter struct {
	s *Store
	w *snap.Writer
	// received: a leader's snapshot, which Commit makes durable but
	// leaves for Save to install.
	received bool
}

// NewSnapshot starts writing a snapshot of the application state as of
// entry index (which must be committed and still in the log), with the
// membership cs in effect there. Write the state into the returned
// writer, then Commit it (or Abort). The writing holds no lock of the
// store: a node's loop goes on saving, reading and installing meanwhile.
// The log is not compacted: call Compact after Commit.
func (s *Store) NewSnapshot(index uint64, cs raft.ConfState) (*SnapshotWriter, error) {
	s.mu.Lock()
	if s.hasSnap && index <= s.snapMeta.Index {
		have := s.snapMeta.Index
		s.mu.Unlock()
		return nil, fmt.Errorf("storage: create snapshot at %d, have %d: %w", index, have, raft.ErrSnapOutOfDate)
	}
	s.mu.Unlock()
	if c := s.wal.HardState().Commit; index > c {
		return nil, fmt.Errorf("storage: create snapshot at %d beyond commit index %d", index, c)
	}
	t, err := s.wal.Term(index)
	if err != nil {
		return nil, fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	w, err := s.snaps.Create(raft.SnapshotMeta{Index: index, Term: t, ConfState: cs})
	if err != nil {
		return nil, fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	return &SnapshotWriter{s: s, w: w}, nil
}

// Write appends state to the snapshot.
func (w *SnapshotWriter) Write(p []byte) (int, error) { return w.w.Write(p) }

// Meta returns the metadata of the snapshot being written.
func (w *SnapshotWriter) Meta() raft.SnapshotMeta { return w.w.Meta() }

// Size returns the number of bytes written so far.
func (w *SnapshotWriter) Size() uint64 { return w.w.Size() }

// Checksum returns the CRC-32C (Castagnoli) of the bytes written so far.
func (w *SnapshotWriter) Checksum() uint32 { return w.w.Checksum() }

// Commit makes the snapshot durable and, unless a newer one was installed
// meanwhile, the store's newest; a received snapshot it only makes
// durable (see ReceiveSnapshot). The file is synced and renamed without
// the store's lock; only the switch to it takes the lock.
func (w *SnapshotWriter) Commit() error {
	meta := w.w.Meta()
	if err := w.w.Commit(); err != nil {
		return fmt.Errorf("storage: commit snapshot at %d: %w", meta.Index, err)
	}
	if w.received {
		return nil
	}
	s := w.s
	s.mu.Lock()
	if !s.hasSnap || meta.Index > s.snapMeta.Index {
		s.snapMeta, s.hasSnap = meta, true
	}
	s.mu.Unlock()
	return nil
}

// Abort discards the snapshot being written.
func (w *SnapshotWriter) Abort() error { return w.w.Abort() }

// CreateSnapshot durably stores a snapshot whose data is in memory: it
// writes data through NewSnapshot and commits it. A large state is better
// streamed into NewSnapshot's writer.
func (s *Store) CreateSnapshot(index uint64, cs raft.ConfState, data []byte) error {
	w, err := s.NewSnapshot(index, cs)
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return fmt.Errorf("storage: create snapshot at %d: %w", index, err)
	}
	return w.Commit()
}

// Snapshot implements raft.Storage: it returns the newest snapshot's
// metadata, without reading its data (the core reads no more). To read
// the data, stream it (OpenSnapshot) or load it (LoadSnapshot).
func (s *Store) Snapshot() (raft.Snapshot, error) {
	meta, _ := s.SnapshotMeta()
	return raft.Snapshot{Meta: meta}, nil
}

// LoadSnapshot reads the newest snapshot, data and all, into memory,
// verifying it first. For small snapshots and tests: a large one is
// better streamed (OpenSnapshot).
func (s *Store) LoadSnapshot() (raft.Snapshot, error) {
	meta, ok := s.SnapshotMeta()
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

// Errors of the stored snapshots.
var (
	// ErrSnapshotNotFound: the store no longer has (or never had) the
	// snapshot asked for.
	ErrSnapshotNotFound = snap.ErrNotFound
	// ErrSnapshotCorrupt: a snapshot file is damaged (its checksum does
	// not match its data).
	ErrSnapshotCorrupt = snap.ErrCorrupt
)

// SnapshotReader reads one stored snapshot's data once, from start to
// end (OpenSnapshot).
type SnapshotReader struct{ r *snap.Stream }

// Meta returns the snapshot's metadata.
func (r *SnapshotReader) Meta() raft.SnapshotMeta { return r.r.Meta() }

// Size returns the length of the data in bytes.
func (r *SnapshotReader) Size() int64 { return r.r.Size() }

// Checksum returns the CRC-32C (Castagnoli) of the whole data, as
// recorded when it was written.
func (r *SnapshotReader) Checksum() uint32 { return r.r.Checksum() }

// Read reads the next bytes. At the end it checks the data read against
// the checksum, and fails with an error wrapping ErrSnapshotCorrupt
// instead of io.EOF if they differ.
func (r *SnapshotReader) Read(p []byte) (int, error) { return r.r.Read(p) }

// Close closes the file.
func (r *SnapshotReader) Close() error { return r.r.Close() }

// OpenSnapshot opens the snapshot at index and term for one sequential
// read of its data, which checks the data's checksum as it reaches the
// end: each byte is read from disk once, to send it to a follower or to
// restore from it. Errors wrap ErrSnapshotNotFound when the store no
// longer has (or never had) that snapshot, and ErrSnapshotCorrupt when
// its file is damaged.
func (s *Store) OpenSnapshot(index, term uint64) (*SnapshotReader, error) {
	r, err := s.snaps.Stream(snap.Ref{Index: index, Term: term})
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &SnapshotReader{r}, nil
}

// SnapshotBytesRead is how many bytes of snapshot files the store has read
// since it was opened (verifying and streaming them).
func (s *Store) SnapshotBytesRead() int64 { return s.snaps.BytesRead() }

// ReceiveSnapshot starts writing a snapshot that arrives in chunks (from
// the leader). After SnapshotWriter.Commit the file is durable but not yet in
// effect: pass a raft.Snapshot with the same Meta to Save (as the core's
// Ready will, metadata only) to install it; Save then finds the file and
// does not write it again. If the node restarts in between, Open adopts
// the newest snapshot on disk as if Save had run (a snapshot is committed
// state, so this is safe). Each call has its own temporary file, so a
// transfer that replaces an abandoned one of the same snapshot does not
// collide with it.
func (s *Store) ReceiveSnapshot(meta raft.SnapshotMeta) (*SnapshotWriter, error) {
	w, err := s.snaps.Create(meta)
	if err != nil {
		return nil, fmt.Errorf("storage: receive snapshot at %d: %w", meta.Index, err)
	}
	return &SnapshotWriter{s: s, w: w, received: true}, nil
}
