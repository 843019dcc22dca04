package raft

import "errors"

// raftLog is the core's view of the log: what Storage holds (persisted)
// followed by the unstable tail (appended, not yet persisted).
//
// Invariants: applied <= committed; committed <= lastIndex();
// unstable entries start at unstable.offset.
type raftLog struct {
	storage  Storage
	unstable unstable

	committed uint64
	// applying is the highest index handed to the application in a
	// Ready; applied is the highest the application confirmed (Advance).
	applying uint64
	applied  uint64

	maxApplyingBytes uint64
}

// unstable holds entries (and possibly a snapshot) not yet persisted.
// If snapshot != nil, entries follow it (offset == snapshot index + 1).
type unstable struct {
	snapshot *Snapshot
	entries  []Entry
	offset   uint64
}

func newLog(storage Storage, maxApplyingBytes uint64) (*raftLog, error) {
	first, err := storage.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := storage.LastIndex()
	if err != nil {
		return nil, err
	}
	l := &raftLog{storage: storage, maxApplyingBytes: maxApplyingBytes}
	l.unstable.offset = last + 1
	l.committed = first - 1
	l.applying = first - 1
	l.applied = first - 1
	return l, nil
}

func (l *raftLog) firstIndex() uint64 {
	if s := l.unstable.snapshot; s != nil {
		return s.Meta.Index + 1
	}
	i, err := l.storage.FirstIndex()
	if err != nil {
		panic(err) // a Storage that cannot answer is unusable
	}
	return i
}

func (l *raftLog) lastIndex() uint64 {
	if n := len(l.unstable.entries); n > 0 {
		return l.unstable.offset + uint64(n) - 1
	}
	if s := l.unstable.snapshot; s != nil {
		return s.Meta.Index
	}
	i, err := l.storage.LastIndex()
	if err != nil {
		panic(err)
	}
	return i
}

// stableIndex is the highest index known to be persisted.
func (l *raftLog) stableIndex() uint64 {
	if l.unstable.snapshot != nil {
		return 0
	}
	return l.unstable.offset - 1
}

// term returns the term of entry i, ErrCompacted if i is before the
// snapshot, ErrUnavailable if beyond the last entry.
func (l *raftLog) term(i uint64) (uint64, error) {
	u := &l.unstable
	if s := u.snapshot; s != nil {
		if i == s.Meta.Index {
			return s.Meta.Term, nil
		}
		if i < s.Meta.Index {
			return 0, ErrCompacted
		}
	}
	if i >= u.offset {
		if i-u.offset < uint64(len(u.entries)) {
			return u.entries[i-u.offset].Term, nil
		}
		return 0, ErrUnavailable
	}
	if u.snapshot != nil {
		return 0, ErrUnavailable
	}
	t, err := l.storage.Term(i)
	if err == nil || errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
		return t, err
	}
	panic(err)
}

// termOr0 is term(i), with 0 for unknown indexes.
func (l *raftLog) termOr0(i uint64) uint64 {
	t, err := l.term(i)
	if err != nil {
		return 0
	}
	return t
}

func (l *raftLog) lastTerm() uint64 { return l.termOr0(l.lastIndex()) }

func (l *raftLog) matchTerm(i, t uint64) bool {
	tt, err := l.term(i)
	return err == nil && tt == t
}

// isUpToDate is the election restriction (§5.4.1): a candidate's log is at
// least as up to date as ours if its last term is higher, or equal with an
// index at least as high.
func (l *raftLog) isUpToDate(lastIndex, lastTerm uint64) bool {
	myTerm := l.lastTerm()
	return lastTerm > myTerm || (lastTerm == myTerm && lastIndex >= l.lastIndex())
}

// entries returns entries in [lo, hi) within maxBytes (at least one).
func (l *raftLog) entries(lo, hi, maxBytes uint64) ([]Entry, error) {
	if lo >= hi {
		return nil, nil
	}
	if lo < l.firstIndex() {
		return nil, ErrCompacted
	}
	if hi > l.lastIndex()+1 {
		return nil, ErrUnavailable
	}
	u := &l.unstable
	var ents []Entry
	if lo < u.offset {
		stored, err := l.storage.Entries(lo, min(hi, u.offset), maxBytes)
		if err != nil {
			if errors.Is(err, ErrCompacted) || errors.Is(err, ErrUnavailable) {
				return nil, err
			}
			panic(err) // see "Storage errors" in doc.go
		}
		// Storage may return fewer (size limit): then stop there.
		if uint64(len(stored)) < min(hi, u.offset)-lo {
			return stored, nil
		}
		ents = stored
	}
	if hi > u.offset {
		from := max(lo, u.offset)
		tail := u.entries[from-u.offset : hi-u.offset]
		if len(ents) == 0 {
			return limitSize(tail, maxBytes), nil
		}
		// Combine without writing into storage's backing array.
		size := payloadSize(ents)
		combined := make([]Entry, len(ents), len(ents)+len(tail))
		copy(combined, ents)
		for _, e := range tail {
			size += uint64(len(e.Data))
			if size > maxBytes {
				break
			}
			combined = append(combined, e)
		}
		return combined, nil
	}
	return ents, nil
}

// append adds entries after a possibly conflicting suffix is cut. Callers
// guarantee ents[0].Index > committed.
func (l *raftLog) append(ents ...Entry) uint64 {
	if len(ents) == 0 {
		return l.lastIndex()
	}
	l.unstable.truncateAndAppend(ents)
	return l.lastIndex()
}

func (u *unstable) truncateAndAppend(ents []Entry) {
	after := ents[0].Index
	switch {
	case after == u.offset+uint64(len(u.entries)):
		u.entries = append(u.entries, ents...)
	case after <= u.offset:
		// Replace the whole unstable tail; storage's conflicting suffix
		// is cut when the driver persists these (Append truncates).
		u.offset = after
		u.entries = append([]Entry(nil), ents...)
	default:
		// Keep the prefix; copy so slices already handed out in Ready or
		// messages are never overwritten.
		keep := u.entries[:after-u.offset]
		n := make([]Entry, len(keep), len(keep)+len(ents))
		copy(n, keep)
		u.entries = append(n, ents...)
	}
}

// findConflict returns the index of the first entry in ents that is not
// in the log (absent or with a different term), or 0 if all are present.
func (l *raftLog) findConflict(ents []Entry) uint64 {
	for _, e := range ents {
		if !l.matchTerm(e.Index, e.Term) {
			return e.Index
		}
	}
	return 0
}

// maybeAppend is the follower's AppendEntries receiver (Figure 2, steps
// 2-5). It returns the last index of the new entries and whether the log
// matched at (prevIndex, prevTerm).
func (l *raftLog) maybeAppend(prevIndex, prevTerm, commit uint64, ents []Entry) (uint64, bool) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false
	}
	lastNew := prevIndex + uint64(len(ents))
	ci := l.findConflict(ents)
	if ci != 0 {
		if ci <= l.committed {
			// A conflict below our commit index means the sender is not a
			// legitimate leader (Leader Completeness). Refuse it rather
			// than corrupt committed state.
			return 0, false
		}
		l.append(ents[ci-(prevIndex+1):]...)
	}
	// Step 5: commit only what this message proves we share with the leader.
	l.commitTo(min(commit, lastNew))
	return lastNew, true
}

func (l *raftLog) commitTo(c uint64) {
	if c > l.committed {
		if c > l.lastIndex() {
			return // never commit what we do not hold
		}
		l.committed = c
	}
}

// firstIndexOfTerm returns the first index at or below i that holds the
// same term as i, scanning back no further than the first retained entry.
func (l *raftLog) firstIndexOfTerm(i uint64) uint64 {
	t := l.termOr0(i)
	first := l.firstIndex()
	for i > first {
		pt, err := l.term(i - 1)
		if err != nil || pt != t {
			break
		}
		i--
	}
	return i
}

// nextCommitted returns committed entries not yet handed to the
// application, limited to persisted ones (so the application may apply
// them while the current Ready's entries are still being written).
func (l *raftLog) nextCommitted() []Entry {
	hi := min(l.committed, l.stableIndex())
	if hi <= l.applying {
		return nil
	}
	ents, err := l.entries(l.applying+1, hi+1, l.maxApplyingBytes)
	if err != nil {
		return nil // compacted under us: a snapshot will cover it
	}
	return ents
}

func (l *raftLog) hasNextCommitted() bool {
	return min(l.committed, l.stableIndex()) > l.applying && l.applying+1 >= l.firstIndex()
}

// stableTo marks entries up to (i, t) persisted; if the entry at i no
// longer has term t it was replaced meanwhile and nothing is marked.
func (l *raftLog) stableTo(i, t uint64) {
	u := &l.unstable
	if u.snapshot != nil || i < u.offset || i-u.offset >= uint64(len(u.entries)) {
		return
	}
	if u.entries[i-u.offset].Term != t {
		return
	}
	n := i + 1 - u.offset
	u.entries = u.entries[n:]
	u.offset = i + 1
	if len(u.entries) == 0 {
		u.entries = nil // let the backing array go
	}
}

func (l *raftLog) stableSnapTo(i uint64) {
	if s := l.unstable.snapshot; s != nil && s.Meta.Index == i {
		l.unstable.snapshot = nil
	}
}

// restore replaces the log with a snapshot.
func (l *raftLog) restore(s Snapshot) {
	l.committed = s.Meta.Index
	l.unstable.snapshot = &s
	l.unstable.offset = s.Meta.Index + 1
	l.unstable.entries = nil
	if l.applying < s.Meta.Index {
		l.applying = s.Meta.Index
	}
}
