package wal

import (
	"errors"
	"fmt"
	"path"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

const (
	// directBufSize is the initial capacity of the aligned write buffer.
	directBufSize = 256 << 10
	// maxKeptBuf: a write buffer grown beyond this by a big batch is
	// dropped after it, so one huge batch does not pin its memory.
	maxKeptBuf = 4 << 20
)

func alignDown(n int64) int64 { return n &^ (vfs.DirectAlign - 1) }
func alignUp(n int64) int64   { return alignDown(n + vfs.DirectAlign - 1) }

// startDirect opens the active segment for direct writes (closing the
// previous one's) and loads its partial last block into the aligned write
// buffer. If the file system refuses O_DIRECT, the WAL falls back to
// buffered writes for good, and says so. Called with wmu held, after the
// active segment's buffered writes (header, trim) are synced: a direct
// O_DSYNC write makes only itself durable, not earlier buffered writes.
func (w *WAL) startDirect() error {
	if w.dio != nil {
		if err := w.dio.Close(); err != nil {
			w.dio = nil
			return fmt.Errorf("close direct handle of wal segment: %w", err)
		}
		w.dio = nil
	}
	if !w.direct {
		w.setDioOn()
		return nil
	}
	p := path.Join(w.dir, w.active.name)
	d, err := w.fs.(vfs.DirectFS).OpenDirect(p)
	if err != nil {
		w.direct = false
		w.setDioOn()
		if errors.Is(err, vfs.ErrDirectUnsupported) {
			w.log.Info("direct I/O refused; wal writes are buffered with fdatasync", "file", p, "error", err)
		} else {
			w.log.Warn("opening wal segment for direct I/O failed; wal writes are buffered with fdatasync", "file", p, "error", err)
		}
		return nil
	}
	tailOff := alignDown(w.woff)
	buf := vfs.AlignedBuffer(int(w.bufSize))[:w.woff-tailOff]
	if len(buf) > 0 {
		if _, err := w.active.f.ReadAt(buf, tailOff); err != nil {
			d.Close()
			return fmt.Errorf("read last block of wal segment %s at offset %d: %w", p, tailOff, err)
		}
	}
	w.dio, w.tailOff, w.buf = d, tailOff, buf
	w.setDioOn()
	return nil
}

// stopDirect closes the direct handle and turns direct I/O off for good.
// Called with wmu held.
func (w *WAL) stopDirect() {
	if w.dio != nil {
		if err := w.dio.Close(); err != nil {
			w.log.Warn("closing direct handle of wal segment failed", "segment", w.active.name, "error", err)
		}
	}
	w.dio, w.direct = nil, false
	w.setDioOn()
}

func (w *WAL) setDioOn() {
	w.mu.Lock()
	w.dioOn = w.dio != nil
	w.mu.Unlock()
}

// writeDirect writes buf, which holds the active segment's bytes from
// tailOff on (the partial last block already durable, then the new
// records), as whole aligned blocks: padded with zeros to a DirectAlign
// multiple, at tailOff, through the O_DIRECT|O_DSYNC handle, so it is
// durable when the write returns and needs no fdatasync. Rewriting the
// durable prefix of the first block is harmless even if the write tears:
// those bytes are the same. The zeros after the last record read as the
// clean end of the log at recovery, as in a preallocated segment. It
// returns the buffer to keep, which holds just the new partial last block
// (on error: buf's bytes, unpadded). Called with wmu held.
func (w *WAL) writeDirect(buf []byte) ([]byte, error) {
	end := int64(len(buf))
	padded := alignUp(end)
	if int64(cap(buf)) < padded || !vfs.IsAligned(buf[:padded], w.tailOff) {
		// The records outgrew the aligned buffer and append moved them.
		nb := vfs.AlignedBuffer(int(max(padded, w.bufSize)))
		copy(nb, buf)
		buf = nb[:end]
	}
	buf = buf[:padded]
	clear(buf[end:])
	if _, err := w.dio.WriteAt(buf, w.tailOff); err != nil {
		return buf[:end], fmt.Errorf("direct write to wal segment %s at offset %d: %w", w.active.name, w.tailOff, err)
	}
	next := alignDown(w.tailOff + end)
	tail := buf[next-w.tailOff : end]
	if padded > w.bufKeep {
		buf = vfs.AlignedBuffer(int(w.bufSize)) // don't pin a huge batch's buffer
	}
	n := copy(buf, tail)
	w.tailOff = next
	return buf[:n], nil
}

// writeMode describes how commits are made durable, for the log.
func (w *WAL) writeMode() string {
	if w.dio != nil {
		return "direct (O_DIRECT|O_DSYNC aligned blocks)"
	}
	return "buffered (pwrite+fdatasync)"
}
