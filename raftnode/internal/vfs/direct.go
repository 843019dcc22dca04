package vfs

import (
	"errors"
	"io"
	"unsafe"
)

// DirectAlign is the alignment direct writes need: of the buffer in memory,
// of the file offset and of the length. 4 KiB covers the logical block
// size of every disk we run on (512 or 4096) and the page size.
const DirectAlign = 4096

// ErrDirectUnsupported is returned (wrapped) by OpenDirect when the file
// system or platform cannot do direct, synchronous writes (tmpfs before
// Linux 6.6 refuses O_DIRECT; non-Linux builds do not try), and by a
// DirectWriter's WriteAt when the kernel refused the write before writing
// anything (EINVAL: the device needs a larger alignment). Callers fall back
// to WriteAt+Sync through an ordinary File.
var ErrDirectUnsupported = errors.New("vfs: direct I/O not supported")

// DirectWriter is a file opened for direct, synchronous writes
// (O_DIRECT|O_DSYNC on Linux): when WriteAt returns, the bytes written and
// the metadata needed to read them back (the file size, if the write
// extended it) are durable, so no Sync follows — an fdatasync would only
// issue another device flush. Only writes to aligned buffers at aligned
// offsets with aligned lengths (DirectAlign) are accepted. Reads go through
// a separately opened File: a direct descriptor refuses unaligned reads.
type DirectWriter interface {
	io.WriterAt
	io.Closer
}

// DirectFS is implemented by file systems that can open a DirectWriter.
// It is optional: code that uses it must also work through FS alone.
type DirectFS interface {
	// OpenDirect opens the existing file name for direct, synchronous
	// writes. It fails with ErrDirectUnsupported (wrapped) if the file
	// system refuses.
	OpenDirect(name string) (DirectWriter, error)
}

var _ DirectFS = osFS{}

// AlignedBuffer returns a zeroed slice of length n whose first byte is
// DirectAlign-aligned in memory. Go's collector does not move heap
// objects, so the alignment holds for the slice's life; the function is
// not inlined so that the buffer always escapes to the heap (a stack
// buffer moves when the stack grows).
//
//go:noinline
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+DirectAlign)
	k := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % DirectAlign); r != 0 {
		k = DirectAlign - r
	}
	return b[k : k+n]
}

// IsAligned reports whether p's memory, off and len(p) are all
// DirectAlign-aligned, as a DirectWriter needs.
func IsAligned(p []byte, off int64) bool {
	if off%DirectAlign != 0 || len(p)%DirectAlign != 0 {
		return false
	}
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%DirectAlign == 0
}
