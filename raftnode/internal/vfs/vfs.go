// Package vfs is the small file-system surface the write-ahead log and the
// snapshot store write through. Production code uses OS; crash tests use
// raftnode/internal/crashfs, which keeps written-but-unsynced data apart so a
// simulated power loss can drop or tear it.
//
// The surface is deliberately narrow: positional writes, explicit Sync of a
// file and of a directory, rename and remove. Everything durable in this
// project is reached through these calls, so a test implementation of them
// sees every ordering decision the storage code makes.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
)

// ErrLocked is returned by Lock when another holder owns the lock.
var ErrLocked = errors.New("vfs: lock held by another process")

// File is an open file. Writes go through WriteAt so the caller always knows
// the offset it is writing (the WAL needs it for its index); Sync makes
// everything written so far durable (data and the size needed to read it).
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes all data written to the file durable (fdatasync on Linux).
	Sync() error
	// Truncate changes the file size; it is not durable until Sync.
	Truncate(size int64) error
	// Size returns the current size as seen by this process.
	Size() (int64, error)
}

// FS is a file system. Names are slash or OS paths; directories must be
// fsynced with SyncDir for creates, renames and removes to survive a crash.
type FS interface {
	// Create creates or truncates name for reading and writing.
	Create(name string) (File, error)
	// OpenRW opens an existing file for reading and writing.
	OpenRW(name string) (File, error)
	// Open opens an existing file read-only.
	Open(name string) (File, error)
	// Remove deletes a file.
	Remove(name string) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// List returns the names (not paths) of the entries of dir, sorted.
	List(dir string) ([]string, error)
	// MkdirAll creates dir and its parents, durably.
	MkdirAll(dir string) error
	// SyncDir makes the directory's entries (creates, renames, removes) durable.
	SyncDir(dir string) error
	// Lock takes an exclusive advisory lock on name, creating it if needed.
	// It fails with ErrLocked (wrapped) if another holder has it.
	Lock(name string) (io.Closer, error)
}

// WriteFileAtomic makes the file name hold data, atomically and durably: it
// writes name+".tmp", fsyncs it, renames it over name and fsyncs the
// directory. After a crash name holds its old content or data, never a
// mix; once it returns nil, data. A leftover name+".tmp" (a crash before
// the rename) was never in effect; removing it is the caller's business.
func WriteFileAtomic(fs FS, name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := fs.Create(tmp)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, name); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	dir := filepath.Dir(name)
	if err := fs.SyncDir(dir); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// OS is the real file system.
var OS FS = osFS{}

type osFS struct{}

type osFile struct{ f *os.File }

func (f osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }
func (f osFile) Close() error                             { return f.f.Close() }
func (f osFile) Truncate(size int64) error                { return f.f.Truncate(size) }
func (f osFile) Sync() error                              { return fdatasync(f.f) }

func (f osFile) Size() (int64, error) {
	st, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (osFS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) OpenRW(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Open(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error             { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

func (osFS) List(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	return names, nil
}

func (fs osFS) MkdirAll(dir string) error {
	dir = filepath.Clean(dir)
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The new directory entry lives in the parent: sync it so the directory
	// itself survives a crash.
	return fs.SyncDir(filepath.Dir(dir))
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}
	return d.Close()
}

func (osFS) Lock(name string) (io.Closer, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("flock %s: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("flock %s: %w", name, err)
	}
	// Closing the descriptor releases the flock.
	return f, nil
}
