package backup

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"

	"github.com/capraft/capraft/internal/durable"
)

// File writes a backup to a file atomically: to a temporary file beside
// it, renamed into place only once the data is complete, matches its
// header's size and checksum, and the whole backup verifies (Verify). An
// interrupted or failed save leaves no file at the destination, and never
// replaces a good backup with a bad one.
type File struct {
	path  string
	force bool

	f   *os.File
	bw  *bufio.Writer
	h   Header
	n   uint64
	crc uint32
}

// Create starts a backup to path. Unless force, an existing file there is
// refused (before anything is transferred) rather than replaced.
func Create(path string, force bool) (*File, error) {
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s exists: choose another file, or give --force to replace it", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".partial-")
	if err != nil {
		return nil, fmt.Errorf("create a temporary file beside %s: %w", path, err)
	}
	return &File{path: path, force: force, f: f, bw: bufio.NewWriterSize(f, 256<<10)}, nil
}

// Begin writes the header.
func (b *File) Begin(h Header) error {
	b.h = h
	return WriteHeader(b.bw, h)
}

// Write appends data.
func (b *File) Write(p []byte) error {
	if _, err := b.bw.Write(p); err != nil {
		return fmt.Errorf("write %s: %w", b.f.Name(), err)
	}
	b.n += uint64(len(p))
	b.crc = crc32.Update(b.crc, castagnoli, p)
	return nil
}

// Written returns the bytes of data written so far.
func (b *File) Written() uint64 { return b.n }

// Commit checks what was written, syncs it, verifies the whole file and
// renames it into place. It returns the backup's description.
func (b *File) Commit() (Summary, error) {
	tmp := b.f.Name()
	if b.n != b.h.Size || b.crc != b.h.Checksum {
		b.Abort()
		return Summary{}, fmt.Errorf("received %d bytes with CRC-32C %08x, the node announced %d bytes with %08x: save again",
			b.n, b.crc, b.h.Size, b.h.Checksum)
	}
	err := b.bw.Flush()
	if err == nil {
		err = b.f.Sync()
	}
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return Summary{}, fmt.Errorf("write %s: %w", tmp, err)
	}
	// Read back: what is on disk is what is kept.
	sum, err := VerifyFile(tmp)
	if err != nil {
		os.Remove(tmp)
		return Summary{}, fmt.Errorf("the backup written does not verify (bad disk?): %w", err)
	}
	if !b.force {
		// Link fails if the destination appeared meanwhile; rename
		// would replace it.
		if err := os.Link(tmp, b.path); err != nil {
			os.Remove(tmp)
			return Summary{}, fmt.Errorf("move the backup into place: %w", err)
		}
		os.Remove(tmp)
	} else if err := os.Rename(tmp, b.path); err != nil {
		os.Remove(tmp)
		return Summary{}, fmt.Errorf("move the backup into place: %w", err)
	}
	if err := durable.SyncDir(filepath.Dir(b.path)); err != nil {
		return Summary{}, err
	}
	return sum, nil
}

// Abort removes the temporary file.
func (b *File) Abort() {
	b.f.Close()
	os.Remove(b.f.Name())
}
