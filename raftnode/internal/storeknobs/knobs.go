// Package storeknobs holds the storage settings that only tests and
// simulations inside this module turn: a file system that injects faults
// or simulates crashes, and how the log preallocates its segments. They
// reach a store as storage.Options.Knobs (through a node,
// raftnode.Config.StorageKnobs): the public API names no internal type,
// and nothing outside this module can build knobs a store would read.
package storeknobs

import (
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
)

// Knobs are a store's test-only settings; the zero value is production's.
type Knobs struct {
	// FS is the file system the store works through (nil: vfs.OS).
	// Tests pass a crashfs.FS, or a wrapper that injects faults.
	FS vfs.FS
	// Prealloc chooses how log segments are zero-filled ahead of use
	// (zero: wal.PreallocAsync). Simulations and crash tests over
	// crashfs should use wal.PreallocSync (deterministic) together with
	// a small segment size, since crashfs keeps every byte in memory.
	Prealloc wal.PreallocMode
}

// StorageKnobs marks *Knobs as storage.Knobs.
func (*Knobs) StorageKnobs() {}
