// Package statemachine is the boundary between a node's driver and the
// replicated state machine it drives: the driver hands committed log
// entries to a Machine in log order, snapshots it, and restores it from a
// snapshot stream, and knows nothing else of it. Any Machine that keeps
// the contract below can be replicated; raftnode/kv is one.
//
// The package holds only the contract (no goroutines, no I/O), so a state
// machine depends on it without depending on the Raft core or the driver.
//
// # The driver's side
//
//   - Apply receives every committed entry after Applied, in log order and
//     each exactly once per run, in batches, on one goroutine (the driver's
//     loop). After a restart the driver replays the log from the snapshot it
//     restored; entries at or below Applied are ignored, so a replay is
//     harmless.
//   - Snapshot is called on that goroutine between batches; the returned
//     Snapshot is written to disk on another goroutine while Apply goes on,
//     then released.
//   - Restore is called on that goroutine, never concurrently with Apply:
//     when the node starts from a snapshot on disk and when it installs one
//     a leader sent. Verify may run on any goroutine, concurrently with
//     Apply.
//   - The driver matches the results to the proposals that produced them by
//     log index and term, never by looking into a Result: a Result is handed
//     as is to whoever waits for the entry (and to the services' observer of
//     applied entries).
//   - Snapshot streams are stored and sent by the driver inside its own
//     envelope, as opaque bytes.
package statemachine

import "io"

// Entry is one committed log entry, as the state machine sees it.
type Entry struct {
	// Index is the entry's position in the log (> 0); Term the term of the
	// leader that appended it.
	Index, Term uint64
	// Data is what was proposed. It is empty for an entry the state
	// machine has no part in (a membership change, a new leader's empty
	// entry): applying it only moves Applied. Data is valid until Apply
	// returns: a Machine keeps copies, not the slice.
	Data []byte
}

// Result is what the state machine reports for one applied entry: opaque
// to the driver, which hands it to the entry's waiter. It is nil for an
// entry with no Data and for an entry Apply ignored.
type Result any

// Machine is a replicated state machine.
//
// Apply is deterministic: machines that apply the same entries from the
// same state (a restored one included) reach the same state and return
// equal Results. An entry it cannot make sense of is still applied (as a
// no-op, say, with a Result saying why), on every node alike, or the
// replicas would diverge.
type Machine interface {
	// Apply applies entries, which hold increasing indexes (gaps allowed),
	// and returns one Result per entry, in the same order. An entry at or
	// below Applied is ignored (its Result is nil), so replaying a log
	// suffix is harmless. Results may be kept by their receivers after
	// the next Apply: a Machine must not reuse them.
	//
	// An error says the machine cannot go on (its own storage failed, say);
	// it is never about an entry. The driver stops the node, and the
	// entries' waiters learn that their outcome is unknown.
	Apply(entries []Entry) ([]Result, error)

	// Applied returns the index of the last entry applied (or restored).
	// It may be called from any goroutine.
	Applied() uint64

	// Snapshot returns a view of the state as of Applied: cheap (a
	// copy-on-write view, not a copy), because the driver takes it between
	// batches and Apply waits meanwhile. The view stays consistent while
	// Apply continues, until Release.
	Snapshot() (Snapshot, error)

	// Restore replaces the whole state with the one r holds, written by a
	// Snapshot's WriteTo, and sets Applied to index, the log index the
	// snapshot covers (the state it holds was applied at or below index;
	// a stream claiming more fails). A stream of zero bytes stands for the
	// initial state: a new cluster's first snapshot carries none.
	// It must reject a damaged stream (truncated, altered, trailing
	// bytes) rather than install part of it: on error the machine holds
	// either its state from before the call or its initial state (Applied
	// 0), never a part of the stream.
	//
	// A Machine may drop its current state before it reads the new one
	// (once the stream's header says it is acceptable), so that restoring
	// a state as large as memory allows never needs twice that; reads
	// through the machine's own API wait or fail meanwhile, never see a
	// state that was not applied. The driver calls Restore only with a
	// stream it trusts (its own checksummed snapshot file, or one Verify
	// accepted as it arrived), and stops the node if Restore fails anyway
	// (a read error, say): the next start restores from disk again.
	Restore(r io.Reader, index uint64) error

	// Verify reads a snapshot stream as Restore would and returns the
	// error Restore would, without changing the state. The driver calls it
	// on a snapshot a leader sent before writing it to disk, so one this
	// node could not restore is refused rather than installed.
	Verify(r io.Reader, index uint64) error
}

// Snapshot is a consistent, read-only view of a Machine's state, taken by
// Machine.Snapshot.
type Snapshot interface {
	// Index is the Applied index the view was taken at.
	Index() uint64
	// WriteTo writes the state's encoding to w, for Machine.Restore. It
	// may run on any goroutine, concurrently with Apply, and more than
	// once.
	WriteTo(w io.Writer) (int64, error)
	// Release ends the view (the Machine may free what it kept for it).
	// The Snapshot is not used after it.
	Release()
}
