package raft_test

import (
	"fmt"

	"github.com/capraft/capraft/raftnode/raft"
)

// Example drives a single-node cluster through the loop of the package
// documentation: tick until elected, propose, then persist, send, apply and
// advance.
func Example() {
	storage := raft.NewMemoryStorage()
	_ = storage.ApplySnapshot(raft.BootstrapSnapshot(raft.ConfState{Voters: []uint64{1}}))
	core, err := raft.New(raft.Config{ID: 1, Storage: storage, ElectionTick: 10, HeartbeatTick: 1, Seed: 1})
	if err != nil {
		panic(err)
	}
	send := func(ms []raft.Message) {} // a real driver hands these to the transport
	handle := func() {
		for core.HasReady() {
			rd := core.Ready()
			send(rd.Messages) // may go out while we persist
			if !rd.Snapshot.IsEmpty() {
				_ = storage.ApplySnapshot(rd.Snapshot)
			}
			_ = storage.Append(rd.Entries)
			if !rd.HardState.IsEmpty() {
				storage.SetHardState(rd.HardState)
			}
			send(rd.MessagesAfterPersist) // only now
			for _, e := range rd.CommittedEntries {
				if e.Type == raft.EntryNormal && len(e.Data) > 0 {
					fmt.Printf("apply %d: %s\n", e.Index, e.Data)
				}
			}
			core.Advance()
		}
	}
	for core.Status().Role != raft.StateLeader {
		core.Tick()
		handle()
	}
	_ = core.Propose([]byte("hello"))
	handle()
	fmt.Println("leader:", core.Lead())
	// Output:
	// apply 3: hello
	// leader: 1
}
