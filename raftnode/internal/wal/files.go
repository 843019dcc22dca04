package wal

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// The names of the files a WAL directory holds besides its segments
// (named by segName); the package documentation describes what each one
// contains. Recovery ignores any other name.
const (
	// spareName is the next segment while it is zero-filled ahead of use
	// (see prepareSpare); it is renamed to a segment name once its header is
	// durable, and a leftover one is removed at Open.
	spareName = "spare.wal.tmp"
	// cleanStopName is the clean-stop marker (see cleanStop), present only
	// while the log is stopped cleanly.
	cleanStopName = "clean-stop"
	// cleanStopTmp is the marker while Close writes it (the temporary name
	// vfs.WriteFileAtomic uses); a leftover one was never in effect and is
	// removed at Open.
	cleanStopTmp = cleanStopName + ".tmp"
)

// segName names the segment with sequence number seq whose first entry is
// at firstIndex, both in hex, so names sort in log order.
func segName(seq, firstIndex uint64) string {
	return fmt.Sprintf("%016x-%016x.wal", seq, firstIndex)
}

// parseSegName returns the sequence number of a segment file name; ok is
// false for any other name.
func parseSegName(name string) (seq uint64, ok bool) {
	base, found := strings.CutSuffix(name, ".wal")
	if !found || len(base) != 33 || base[16] != '-' {
		return 0, false
	}
	seq, err := strconv.ParseUint(base[:16], 16, 64)
	if err != nil {
		return 0, false
	}
	if _, err := strconv.ParseUint(base[17:], 16, 64); err != nil {
		return 0, false
	}
	return seq, true
}

// Empty reports whether dir holds no log, or only what creating one
// leaves before anything is written to it (a spare, the first segment
// holding nothing after its header). It changes nothing. The storage uses
// it to tell a directory whose creation was cut short from one that holds
// a log.
func Empty(fs vfs.FS, dir string) (bool, error) {
	names, err := fs.List(dir)
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("list wal dir %s: %w", dir, err)
	}
	for _, n := range names {
		switch n {
		case spareName, cleanStopTmp:
		case segName(1, 1):
			p := path.Join(dir, n)
			f, err := fs.Open(p)
			if err != nil {
				return false, fmt.Errorf("open wal segment %s: %w", p, err)
			}
			size, err := f.Size()
			empty := err == nil && zerosFrom(f, headerSize+segSize, size)
			f.Close()
			if err != nil {
				return false, fmt.Errorf("stat wal segment %s: %w", p, err)
			}
			if !empty {
				return false, nil
			}
		default:
			return false, nil
		}
	}
	return true, nil
}
