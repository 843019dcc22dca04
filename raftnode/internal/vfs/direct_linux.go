package vfs

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

type directFile struct{ f *os.File }

// OpenDirect opens name with O_DIRECT|O_DSYNC. A file system that does not
// support O_DIRECT (tmpfs) fails the open with EINVAL, reported as
// ErrDirectUnsupported.
func (osFS) OpenDirect(name string) (DirectWriter, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|syscall.O_DIRECT|syscall.O_DSYNC, 0)
	if err != nil {
		if errors.Is(err, syscall.EINVAL) {
			return nil, fmt.Errorf("open %s with O_DIRECT: %w (%w)", name, ErrDirectUnsupported, err)
		}
		return nil, err
	}
	return directFile{f}, nil
}

func (d directFile) WriteAt(p []byte, off int64) (int, error) {
	if !IsAligned(p, off) {
		// The kernel would say EINVAL; say what is wrong instead.
		return 0, fmt.Errorf("direct write to %s: %d bytes at offset %d not aligned to %d", d.f.Name(), len(p), off, DirectAlign)
	}
	n, err := d.f.WriteAt(p, off)
	if n == 0 && errors.Is(err, syscall.EINVAL) {
		// Opened, but the device wants a larger alignment than ours: the
		// kernel checks before any I/O, so nothing was written.
		return 0, fmt.Errorf("direct write to %s: %w (%w)", d.f.Name(), ErrDirectUnsupported, err)
	}
	return n, err
}

func (d directFile) Close() error { return d.f.Close() }
