package driver

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// Backups (Admin.saveSnapshot): an operator copies a stored snapshot out
// of the node. The driver's part is to make sure the snapshot covers
// every write committed before the request, and to open its file; the
// caller (the services) streams it, off the loop.

// BackupSource is a stored snapshot opened for a backup: its data read
// once, from start to end, checked against the checksum recorded with it
// as the read reaches the end (storage.SnapshotReader). Close it when done.
type BackupSource struct {
	// Meta names the snapshot: index, term and configuration.
	Meta raft.SnapshotMeta
	*storage.SnapshotReader
}

// backupRounds bounds OpenBackup's attempts: a snapshot under way that
// turned out older than needed, then a fresh one, then one that a newer
// snapshot replaced before it could be opened.
const backupRounds = 3

// OpenBackup opens a snapshot of this node's state that covers at least
// every write committed before the call: it confirms a read index first
// (a follower asks its leader, and waits until it has applied that far),
// then uses the newest stored snapshot if it covers everything applied,
// waits for the snapshot being written, or takes a fresh one. Taking a
// snapshot costs the loop a copy-on-write view (the file is written in
// the background, as for any snapshot), so the backup is as fresh as the
// request: an older snapshot would silently miss recent writes.
//
// The file is opened before OpenBackup returns. A newer snapshot may
// replace it and compaction delete it while it is read: an open file
// stays readable until it is closed (POSIX unlink semantics, as for a
// leader sending a snapshot to a follower), so the backup reads the
// snapshot it was given, whole.
func (d *Driver) OpenBackup(ctx context.Context) (BackupSource, error) {
	if err := d.ReadIndex(ctx); err != nil {
		return BackupSource{}, fmt.Errorf("backup: confirm the read index: %w", err)
	}
	var need uint64 // the applied index the snapshot must reach
	var last error
	for range backupRounds {
		meta, err := d.snapshotCovering(ctx, &need)
		if err != nil {
			return BackupSource{}, err
		}
		if meta == nil {
			continue // waited for a snapshot that was older than need
		}
		s, err := d.store.OpenSnapshot(meta.Index, meta.Term)
		if errors.Is(err, storage.ErrSnapshotNotFound) {
			// A newer snapshot replaced it between the two steps: the
			// next round finds that one.
			last = err
			continue
		}
		if err != nil {
			return BackupSource{}, fmt.Errorf("backup: open snapshot %d: %w", meta.Index, err)
		}
		return BackupSource{Meta: *meta, SnapshotReader: s}, nil
	}
	return BackupSource{}, fmt.Errorf("backup: no snapshot could be opened in %d rounds (snapshots replaced each other too fast: retry): %v", backupRounds, last)
}

// snapshotCovering returns the newest stored snapshot if it covers
// *need (set to the applied index on the first call), or waits for a
// snapshot to be written and returns nil (the caller asks again).
func (d *Driver) snapshotCovering(ctx context.Context, need *uint64) (*raft.SnapshotMeta, error) {
	type step struct {
		meta *raft.SnapshotMeta
		wait <-chan error
		err  error
	}
	s, err := onLoop(ctx, d, func() step {
		if *need == 0 {
			*need = d.sm.Applied()
		}
		if meta, ok := d.store.SnapshotMeta(); ok && meta.Index >= *need {
			return step{meta: &meta}
		}
		if d.loop.stopping != nil {
			return step{err: fmt.Errorf("%w: %v", ErrStopped, d.loop.stopping)}
		}
		if !d.loop.snapshotting {
			d.startSnapshot()
			if d.loop.stopping != nil {
				// Persisting the commit index first failed: the node stops.
				return step{err: fmt.Errorf("%w: %v", ErrStopped, d.loop.stopping)}
			}
		}
		// The snapshot under way (ours or one started before) answers.
		done := make(chan error, 1)
		d.loop.snapWaiters = append(d.loop.snapWaiters, done)
		return step{wait: done}
	})
	if err != nil {
		return nil, err
	}
	if s.err != nil || s.meta != nil {
		return s.meta, s.err
	}
	select {
	case err := <-s.wait:
		if err != nil {
			return nil, fmt.Errorf("backup: the snapshot failed: %w", err)
		}
		return nil, nil
	case <-ctx.Done():
		return nil, ErrTimeout
	case <-d.done:
		return nil, d.StoppedError()
	}
}

// ReadSnapshotEnvelope reads the envelope at the start of a node
// snapshot's data (the members' addresses as of the snapshot) from r and
// returns the address book and the state machine's stream, which is the
// rest of r (through a buffer). Data of zero bytes has no addresses and
// an empty stream. Backups are described and restored with it.
func ReadSnapshotEnvelope(r io.Reader) (map[uint64]string, io.Reader, error) {
	addrs, sm, err := readSnapshot(r)
	if err != nil {
		return nil, nil, err
	}
	return addrs, sm, nil
}

// WriteSnapshotEnvelope writes the envelope of a node snapshot whose
// address book is addrs to w; the state machine's stream follows it. A
// restore writes a new one, so a new cluster never learns the old
// members' addresses.
func WriteSnapshotEnvelope(w io.Writer, addrs map[uint64]string) error {
	return writeSnapshot(w, addrs, nil)
}
