package wal

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

func ExampleWAL_Save() {
	fs := crashfs.New()
	fs.MkdirAll("/wal")
	w, _ := Open(Options{FS: fs, Dir: "/wal", Prealloc: PreallocOff})
	hs := raft.HardState{Term: 1, Vote: 1, Commit: 0}
	_ = w.Save(Batch{Entries: []raft.Entry{{Index: 1, Term: 1, Data: []byte("x")}}, HardState: &hs})
	fmt.Println(w.LastIndex(), w.HardState().Term)
	// Output: 1 1
}
