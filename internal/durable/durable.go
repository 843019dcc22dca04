// Package durable holds the few file-system steps that make a file or a
// directory entry survive a crash, for the tools that write files outside
// the node's storage (backups, restore): the storage has its own, on its
// file-system seam.
package durable

import (
	"fmt"
	"os"
)

// SyncDir makes dir's entries (a file created, renamed or removed in it)
// durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// WriteNewFile creates path, which must not exist, writes b to it and
// syncs it. Its directory entry is durable only after SyncDir.
func WriteNewFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
