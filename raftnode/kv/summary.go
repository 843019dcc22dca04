package kv

import (
	"fmt"
	"io"
)

// SnapshotSummary describes a snapshot stream without loading it.
type SnapshotSummary struct {
	// Applied is the log index the state was applied through, Revision
	// the store's revision.
	Applied, Revision uint64
	// Keys counts the live keys, Sessions the client sessions and
	// TokenKeys the keys tokens are signed with.
	Keys, Sessions uint64
	TokenKeys      int
}

// SummarizeSnapshot validates the snapshot stream r as Restore would (one
// pass, memory bounded by the largest key or value, not by the state) and
// describes it. Errors wrap ErrMalformed for a stream that is not a valid
// snapshot. An empty stream is the empty state.
func SummarizeSnapshot(r io.Reader) (SnapshotSummary, error) {
	st, err := decodeSnapshot(r, false, true, nil)
	if err != nil {
		return SnapshotSummary{}, err
	}
	if st == nil {
		return SnapshotSummary{}, nil
	}
	sum := SnapshotSummary{
		Applied: st.applied, Revision: st.rev, Keys: st.keys, Sessions: st.nsessions,
		TokenKeys: len(st.tokenKeys),
	}
	return sum, nil
}

// String describes the summary in one line.
func (s SnapshotSummary) String() string {
	return fmt.Sprintf("applied %d, revision %d, %d keys, %d sessions", s.Applied, s.Revision, s.Keys, s.Sessions)
}
