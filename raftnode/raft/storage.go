package raft

import (
	"fmt"
	"sync"
)

// MemoryStorage is an in-memory Storage plus the write methods a driver
// uses to persist a Ready. Tests and the simulator use it as "the disk":
// what it holds is exactly what survives a crash.
//
// ents[0] is a dummy entry at the snapshot's index and term, so that
// Term(FirstIndex()-1) is always answerable.
type MemoryStorage struct {
	mu       sync.Mutex
	hs       HardState
	snapshot Snapshot
	ents     []Entry
}

// NewMemoryStorage returns an empty storage (snapshot index 0).
func NewMemoryStorage() *MemoryStorage {
	return &MemoryStorage{ents: make([]Entry, 1)}
}

// BootstrapSnapshot is the snapshot a brand-new cluster starts from: index
// 1, term 1, no data, membership cs. Every initial member persists it (for
// MemoryStorage: ApplySnapshot) before creating its core; nodes that join
// later start empty and receive the configuration from the leader.
func BootstrapSnapshot(cs ConfState) Snapshot {
	return Snapshot{Meta: SnapshotMeta{Index: 1, Term: 1, ConfState: cs}}
}

// InitialState implements Storage.
func (ms *MemoryStorage) InitialState() (HardState, ConfState, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.hs, ms.snapshot.Meta.ConfState, nil
}

// SetHardState persists hs.
func (ms *MemoryStorage) SetHardState(hs HardState) {
	ms.mu.Lock()
	ms.hs = hs
	ms.mu.Unlock()
}

func (ms *MemoryStorage) firstIndex() uint64 { return ms.ents[0].Index + 1 }
func (ms *MemoryStorage) lastIndex() uint64  { return ms.ents[0].Index + uint64(len(ms.ents)) - 1 }

// Entries implements Storage.
func (ms *MemoryStorage) Entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	offset := ms.ents[0].Index
	if lo <= offset {
		return nil, ErrCompacted
	}
	if hi > ms.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	if lo >= hi {
		return nil, nil
	}
	return limitSize(ms.ents[lo-offset:hi-offset], maxBytes), nil
}

// Term implements Storage.
func (ms *MemoryStorage) Term(i uint64) (uint64, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	offset := ms.ents[0].Index
	if i < offset {
		return 0, ErrCompacted
	}
	if i-offset >= uint64(len(ms.ents)) {
		return 0, ErrUnavailable
	}
	return ms.ents[i-offset].Term, nil
}

// LastIndex implements Storage.
func (ms *MemoryStorage) LastIndex() (uint64, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.lastIndex(), nil
}

// FirstIndex implements Storage.
func (ms *MemoryStorage) FirstIndex() (uint64, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.firstIndex(), nil
}

// Snapshot implements Storage.
func (ms *MemoryStorage) Snapshot() (Snapshot, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.snapshot, nil
}

// ApplySnapshot replaces the storage's contents with snap (a snapshot
// received from the leader, or the bootstrap snapshot).
func (ms *MemoryStorage) ApplySnapshot(snap Snapshot) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if snap.Meta.Index <= ms.snapshot.Meta.Index {
		return ErrSnapOutOfDate
	}
	ms.snapshot = snap
	ms.ents = []Entry{{Index: snap.Meta.Index, Term: snap.Meta.Term}}
	return nil
}

// CreateSnapshot records an application snapshot at index i (which must be
// applied, hence in the log) with membership cs. Follow with Compact to
// drop the entries it covers.
func (ms *MemoryStorage) CreateSnapshot(i uint64, cs ConfState, data []byte) (Snapshot, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if i <= ms.snapshot.Meta.Index {
		return Snapshot{}, ErrSnapOutOfDate
	}
	offset := ms.ents[0].Index
	if i > ms.lastIndex() {
		return Snapshot{}, fmt.Errorf("raft: snapshot index %d beyond last index %d: %w", i, ms.lastIndex(), ErrUnavailable)
	}
	ms.snapshot = Snapshot{Meta: SnapshotMeta{Index: i, Term: ms.ents[i-offset].Term, ConfState: cs}, Data: data}
	return ms.snapshot, nil
}

// Compact discards entries before compactIndex; compactIndex itself
// becomes the dummy entry. It must not exceed the last index.
func (ms *MemoryStorage) Compact(compactIndex uint64) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	offset := ms.ents[0].Index
	if compactIndex <= offset {
		return ErrCompacted
	}
	if compactIndex > ms.lastIndex() {
		return fmt.Errorf("raft: compact %d beyond last index %d: %w", compactIndex, ms.lastIndex(), ErrUnavailable)
	}
	i := compactIndex - offset
	// Fresh array: slices previously returned by Entries stay valid.
	ents := make([]Entry, 1, uint64(len(ms.ents))-i)
	ents[0] = Entry{Index: ms.ents[i].Index, Term: ms.ents[i].Term}
	ms.ents = append(ents, ms.ents[i+1:]...)
	return nil
}

// Append persists entries, which must be contiguous. An entry that
// conflicts with a stored one (same index) replaces it and everything
// after it; entries already covered by the snapshot are skipped.
func (ms *MemoryStorage) Append(entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	first := ms.firstIndex()
	last := entries[0].Index + uint64(len(entries)) - 1
	if last < first {
		return nil
	}
	if first > entries[0].Index {
		entries = entries[first-entries[0].Index:]
	}
	offset := entries[0].Index - ms.ents[0].Index
	switch {
	case uint64(len(ms.ents)) > offset:
		// Truncating: copy so that slices handed out earlier (which may
		// sit in unsent messages) are never overwritten.
		ents := make([]Entry, offset, offset+uint64(len(entries)))
		copy(ents, ms.ents[:offset])
		ms.ents = append(ents, entries...)
	case uint64(len(ms.ents)) == offset:
		ms.ents = append(ms.ents, entries...)
	default:
		return fmt.Errorf("raft: missing log entry [last: %d, append at: %d]", ms.lastIndex(), entries[0].Index)
	}
	return nil
}

// limitSize returns the longest prefix of ents whose Data fits in maxBytes,
// but at least one entry.
func limitSize(ents []Entry, maxBytes uint64) []Entry {
	if len(ents) == 0 {
		return ents
	}
	size := uint64(len(ents[0].Data))
	n := 1
	for ; n < len(ents); n++ {
		size += uint64(len(ents[n].Data))
		if size > maxBytes {
			break
		}
	}
	return ents[:n]
}

func payloadSize(ents []Entry) uint64 {
	var s uint64
	for i := range ents {
		s += uint64(len(ents[i].Data))
	}
	return s
}
