package wal

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"strconv"
	"strings"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// cleanStopHead is the first line of the clean-stop marker: its format.
const cleanStopHead = "capraft-wal-clean-stop 1"

// cleanStop is the content of the clean-stop marker: where the log ended
// when it was closed.
type cleanStop struct {
	seg  string // name of the active segment
	seq  uint64
	off  int64 // end of its last record
	last uint64
	term uint64 // term of entry last
}

func (c cleanStop) encode() []byte {
	body := fmt.Sprintf("%s\nsegment %s\noffset %d\nlast %d %d\n", cleanStopHead, c.seg, c.off, c.last, c.term)
	return fmt.Appendf([]byte(body), "crc %08x\n", crc32.Checksum([]byte(body), crcTable))
}

func decodeCleanStop(b []byte) (cleanStop, error) {
	var c cleanStop
	s := string(b)
	k := strings.LastIndex(s, "crc ")
	if k < 0 || !strings.HasSuffix(s, "\n") {
		return c, errors.New("no checksum line")
	}
	want, err := strconv.ParseUint(strings.TrimSpace(s[k+4:]), 16, 32)
	if err != nil || uint32(want) != crc32.Checksum(b[:k], crcTable) {
		return c, errors.New("checksum mismatch")
	}
	lines := strings.Split(s[:k], "\n")
	if len(lines) != 5 || lines[0] != cleanStopHead || lines[4] != "" {
		return c, errors.New("unknown format")
	}
	seg, ok := strings.CutPrefix(lines[1], "segment ")
	c.seg = seg
	if c.seq, ok = parseSegName(seg); !ok || seg == lines[1] {
		return c, fmt.Errorf("bad segment name %q", c.seg)
	}
	if _, err := fmt.Sscanf(lines[2], "offset %d", &c.off); err != nil || c.off <= 0 {
		return c, fmt.Errorf("bad offset line %q", lines[2])
	}
	if _, err := fmt.Sscanf(lines[3], "last %d %d", &c.last, &c.term); err != nil {
		return c, fmt.Errorf("bad last line %q", lines[3])
	}
	return c, nil
}

// writeCleanStop records where the log ends, durably (vfs.WriteFileAtomic:
// a marker that exists is complete). Called by Close with wmu held, once
// everything written is durable.
func (w *WAL) writeCleanStop() error {
	last := w.lastIndex()
	term, _ := w.term(last)
	c := cleanStop{seg: w.active.name, seq: w.active.seq, off: w.woff, last: last, term: term}
	return vfs.WriteFileAtomic(w.fs, path.Join(w.dir, cleanStopName), c.encode())
}

// readCleanStop reads the marker; a marker that does not decode is damage.
func (w *WAL) readCleanStop() (*cleanStop, *DamageError, error) {
	p := path.Join(w.dir, cleanStopName)
	f, err := w.fs.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, nil, fmt.Errorf("stat %s: %w", p, err)
	}
	var c cleanStop
	err = fmt.Errorf("%d bytes", size)
	if size <= 4096 {
		b := make([]byte, size)
		if _, rerr := f.ReadAt(b, 0); rerr != nil && !errors.Is(rerr, io.EOF) {
			return nil, nil, fmt.Errorf("read %s: %w", p, rerr)
		}
		c, err = decodeCleanStop(b)
	}
	if err != nil {
		return nil, &DamageError{
			File: p, Repairable: true,
			msg: fmt.Sprintf("wal clean-stop marker %s is damaged (%v): the log may have lost entries since it was stopped", p, err),
		}, nil
	}
	return &c, nil, nil
}
