package vfs

import (
	"os"
	"syscall"
)

// fdatasync flushes data and the metadata needed to read it back (the size),
// skipping timestamps: one fewer journal write than fsync for appends.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
