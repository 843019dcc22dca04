package wal

import (
	"bytes"
	"errors"
	"math/rand"
	"path"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

const dir = "/w"

// newFS returns a crashfs with direct I/O enabled: the WAL's default path.
func newFS(t *testing.T) *crashfs.FS {
	fs := crashfs.New()
	fs.SetDirectIO(true)
	if err := fs.MkdirAll(dir); err != nil {
		t.Fatal(err)
	}
	return fs
}

func open(t *testing.T, fs vfs.FS, log hclog.Logger) *WAL {
	t.Helper()
	w, err := Open(Options{FS: fs, Dir: dir, SegmentSize: 1 << 10, Logger: log, Prealloc: PreallocSync})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return w
}

func entries(lo, hi, term uint64) []raft.Entry {
	var out []raft.Entry
	for i := lo; i <= hi; i++ {
		out = append(out, raft.Entry{Index: i, Term: term, Data: bytes.Repeat([]byte{byte(i)}, 40)})
	}
	return out
}

// noDirect hides crashfs's OpenDirect: the WAL writes buffered, with fsync.
type noDirect struct{ vfs.FS }

// fill writes 100 entries (several segments), then stops the log: with
// Close (a clean stop) if crash is nil, else by a power failure of crash
// (which loses nothing: every Save was durable). It returns the segment
// names.
func fill(t *testing.T, fs vfs.FS, crash *crashfs.FS) []string {
	t.Helper()
	w := open(t, fs, nil)
	for i := uint64(1); i <= 100; i += 10 {
		hs := raft.HardState{Term: 1, Commit: i}
		if err := w.Save(Batch{Entries: entries(i, i+9, 1), HardState: &hs}); err != nil {
			t.Fatal(err)
		}
	}
	if crash != nil {
		powerFail(crash)
	} else if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names := segments(fs)
	if len(names) < 3 {
		t.Fatalf("want several segments, got %v", names)
	}
	return names
}

// segments lists the segment files in dir.
func segments(fs vfs.FS) []string {
	all, _ := fs.List(dir)
	var names []string
	for _, n := range all {
		if strings.HasSuffix(n, ".wal") {
			names = append(names, n)
		}
	}
	return names
}

// powerFail crashes fs (what is durable survives; the rest is dropped or
// torn, with a fixed seed).
func powerFail(fs *crashfs.FS) { fs.Crash(rand.New(rand.NewSource(1))) }

func logger() (hclog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Warn}), &buf
}

func flip(t *testing.T, fs *crashfs.FS, name string, off int) {
	b, _ := fs.ReadFile(path.Join(dir, name))
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x40
	fs.SetFile(path.Join(dir, name), b)
}

// fillOpts is what fill opens the log with.
var fillOpts = Options{Dir: dir, SegmentSize: 1 << 10, Prealloc: PreallocSync}

func openWith(fs *crashfs.FS, repair func(*DamageError) error) (*WAL, error) {
	o := fillOpts
	o.FS, o.Repair = fs, repair
	return Open(o)
}

// recordOffsets returns the offsets of the records of segment p.
func recordOffsets(t *testing.T, fs *crashfs.FS, p string) []int64 {
	t.Helper()
	b, _ := fs.ReadFile(p)
	var offs []int64
	for off := 0; off < len(b); {
		_, n, err := DecodeRecord(b[off:], DefaultMaxRecordSize)
		if err != nil {
			break
		}
		offs = append(offs, int64(off))
		off += n
	}
	return offs
}

func wantDamage(t *testing.T, err error, file string, off int64) *DamageError {
	t.Helper()
	var d *DamageError
	if !errors.As(err, &d) {
		t.Fatalf("open: %v, want a DamageError", err)
	}
	if d.File != file || (off >= 0 && d.Offset != off) {
		t.Fatalf("damage at %s offset %d, want %s offset %d (%v)", d.File, d.Offset, file, off, d)
	}
	if !strings.Contains(d.Error(), file) {
		t.Fatalf("error %q does not name %s", d, file)
	}
	return d
}
