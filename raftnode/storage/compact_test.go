package storage

import (
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

// TestCompactionKeepsTrailingEntriesWithinTheirByteBound: entries kept
// before the compaction index for lagging followers are bounded by
// TrailingBytes as well as TrailingEntries, so a log of large entries is
// not kept whole; small entries are still kept by count.
func TestCompactionKeepsTrailingEntriesWithinTheirByteBound(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int
		wantFirst func(first uint64) bool
	}{
		// 1 KiB entries (plus framing): 8 KiB keeps 7 of the 1000 allowed by count
		// (whole 4 KiB segments are deleted, so up to ~4 more stay).
		{"large", 1 << 10, func(first uint64) bool { return first >= 300-8-5 && first <= 300-6 }},
		// 2-byte entries: the count (20) binds, not the bytes.
		{"small", 2, func(first uint64) bool { return first <= 300-20+1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := memOpts(crashfs.New())
			opts.TrailingEntries, opts.TrailingBytes = 1000, 8<<10
			if tc.size == 2 {
				opts.TrailingEntries = 20
			}
			s := mustOpen(t, "/data", opts)
			defer s.Close()
			var es []raft.Entry
			for i := uint64(1); i <= 300; i++ {
				es = append(es, raft.Entry{Index: i, Term: 1, Data: make([]byte, tc.size)})
			}
			if err := s.Save(raft.HardState{Term: 1, Commit: 300}, es, nil); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateSnapshot(300, raft.ConfState{Voters: []uint64{7}}, []byte("state")); err != nil {
				t.Fatal(err)
			}
			if err := s.Compact(300); err != nil {
				t.Fatal(err)
			}
			first, _ := s.FirstIndex()
			if !tc.wantFirst(first) {
				t.Fatalf("first index %d after compacting to 300", first)
			}
		})
	}
}
