package storage_test

import (
	"fmt"
	"math/rand"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/wal"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// The driver's loop, and a simulated crash, in a few lines.
func Example() {
	// A simulated disk (a test-only knob; production leaves Knobs nil for
	// the real disk).
	fs := crashfs.New()
	opts := storage.Options{NodeID: 1, SegmentSize: 64 << 10, TrailingEntries: 2,
		Knobs: &storeknobs.Knobs{FS: fs, Prealloc: wal.PreallocSync}}
	st, err := storage.Open("/data/node1", opts)
	if err != nil {
		panic(err)
	}
	// One Ready: entries and hard state, durable with one fsync.
	ents := []raft.Entry{{Index: 1, Term: 1, Data: []byte("a")}, {Index: 2, Term: 1, Data: []byte("b")}, {Index: 3, Term: 1, Data: []byte("c")}}
	if err := st.Save(raft.HardState{Term: 1, Vote: 1, Commit: 3}, ents, nil); err != nil {
		panic(err)
	}
	// The application snapshots its state at index 3 and the log is compacted.
	if err := st.CreateSnapshot(3, raft.ConfState{Voters: []uint64{1}}, []byte("state")); err != nil {
		panic(err)
	}
	if err := st.Compact(3); err != nil {
		panic(err)
	}

	// Power loss: unsynced data is lost, synced data is not.
	fs.Crash(rand.New(rand.NewSource(1)))
	st, err = storage.Open("/data/node1", opts)
	if err != nil {
		panic(err)
	}
	defer st.Close()
	hs, _, _ := st.InitialState()
	last, _ := st.LastIndex()
	snap, _ := st.LoadSnapshot()
	fmt.Println(hs.Term, hs.Commit, last, snap.Meta.Index, string(snap.Data))
	// Output: 1 3 3 3 state
}
