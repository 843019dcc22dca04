package raftnode_test

import "github.com/capraft/capraft/raftnode/internal/vfs"

// noSyncFS is the OS file system with fsync turned into a no-op. It is
// for benchmarks only: it shows what the node costs apart from the disk.
type noSyncFS struct{ vfs.FS }

type noSyncFile struct{ vfs.File }

func (noSyncFile) Sync() error { return nil }

func (fs noSyncFS) Create(name string) (vfs.File, error) { return wrapNoSync(fs.FS.Create(name)) }
func (fs noSyncFS) OpenRW(name string) (vfs.File, error) { return wrapNoSync(fs.FS.OpenRW(name)) }
func (fs noSyncFS) SyncDir(string) error                 { return nil }

func wrapNoSync(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}
