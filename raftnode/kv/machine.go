package kv

import (
	"fmt"
	"io"
	"runtime"

	"github.com/capraft/capraft/raftnode/statemachine"
)

// Machine is a Store as the driver sees it: a statemachine.Machine. Each
// entry's Result is a *Applied (nil for an entry without data and for one
// at or below the applied index); the services that proposed the entry
// read it, and the driver hands it on untouched.
type Machine struct{ s *Store }

var _ statemachine.Machine = Machine{}

// Machine returns the store as a statemachine.Machine.
func (s *Store) Machine() Machine { return Machine{s} }

// Apply applies a batch of committed entries in order. The store takes its
// lock once per entry, not per batch, so reads wait for one entry at most.
// It never fails.
func (m Machine) Apply(entries []statemachine.Entry) ([]statemachine.Result, error) {
	results := make([]statemachine.Result, len(entries))
	applied := m.s.AppliedIndex() // only this goroutine moves it
	var as []Applied              // one allocation per batch for the results
	for i, e := range entries {
		if e.Index <= applied {
			continue
		}
		applied = e.Index
		if len(e.Data) == 0 {
			m.s.SetApplied(e.Index)
			continue
		}
		if as == nil {
			// Room for every entry left: appending never moves the
			// Applieds the results already point to.
			as = make([]Applied, 0, len(entries)-i)
		}
		as = append(as, m.s.Apply(e.Index, e.Data))
		results[i] = &as[len(as)-1]
	}
	return results, nil
}

// Applied returns the store's applied index.
func (m Machine) Applied() uint64 { return m.s.AppliedIndex() }

// Snapshot returns the store's copy-on-write Snapshot; it never fails.
func (m Machine) Snapshot() (statemachine.Snapshot, error) { return m.s.Snapshot(), nil }

// Restore replaces the store's state with the snapshot read from r (zero
// bytes: an empty store) and sets the applied index to index. A snapshot
// applied beyond index is refused, the store unchanged.
//
// Once the snapshot's header is accepted, the store drops its state and
// collects it before it builds the new one, so a node never holds two
// states (installing a 10 GiB snapshot needs 10 GiB, not 20); the store's
// readers wait meanwhile, and never see the empty store in between. If
// the rest of the stream fails, the store is left empty (Applied 0): see
// statemachine.Machine.Restore.
func (m Machine) Restore(r io.Reader, index uint64) error {
	s := m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := decodeSnapshot(r, true, true, func(applied uint64) error {
		if err := checkIndex(applied, index); err != nil {
			return err
		}
		s.installLocked(emptyState(0))
		// Without a collection now, the heap would grow to about twice
		// the old state (its last goal) before the garbage collector
		// returned the old state's memory for the new one to use.
		runtime.GC()
		return nil
	})
	if err != nil {
		return err
	}
	if err := checkIndex(st.applied, index); err != nil {
		return err // the empty stream's state, at index 0, never is
	}
	st.applied = index
	s.installLocked(st)
	return nil
}

// Verify validates the snapshot read from r as Restore would, without
// building the state: it costs one pass over the stream and memory bounded
// by the largest key or value.
func (m Machine) Verify(r io.Reader, index uint64) error {
	st, err := decodeSnapshot(r, false, true, nil)
	if err != nil || st == nil {
		return err
	}
	return checkIndex(st.applied, index)
}

func checkIndex(applied, index uint64) error {
	if applied > index {
		return fmt.Errorf("%w snapshot: applied through index %d, beyond the index %d it is restored at", ErrMalformed, applied, index)
	}
	return nil
}

// Release does nothing: the snapshot holds no resource but memory, which
// the garbage collector frees.
func (sn *Snapshot) Release() {}
