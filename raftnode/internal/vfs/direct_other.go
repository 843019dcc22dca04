//go:build !linux

package vfs

import "fmt"

// OpenDirect is not implemented outside Linux: callers use WriteAt+Sync.
func (osFS) OpenDirect(name string) (DirectWriter, error) {
	return nil, fmt.Errorf("open %s for direct writes: %w on this platform", name, ErrDirectUnsupported)
}
