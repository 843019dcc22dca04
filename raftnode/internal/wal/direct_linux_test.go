package wal

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// TestDirectIOOnRealFileSystems runs the WAL over vfs.OS in the test's
// temporary directory and, if /dev/shm is a tmpfs, there (tmpfs refuses
// O_DIRECT before Linux 6.6 and accepts it since). Where O_DIRECT is
// refused the WAL must fall back to buffered writes and say so; either way
// it must log its write mode and read back what it wrote.
func TestDirectIOOnRealFileSystems(t *testing.T) {
	dirs := []string{t.TempDir()}
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == tmpfsMagic {
		d, err := os.MkdirTemp("/dev/shm", "capraft-wal")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		var st syscall.Statfs_t
		if err := syscall.Statfs(d, &st); err != nil {
			t.Fatal(err)
		}
		var logBuf bytes.Buffer
		log := hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Debug})
		opts := Options{Dir: d, SegmentSize: 8 << 10, Prealloc: PreallocSync, Logger: log}
		w, err := Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		direct := w.Stats().Direct
		t.Logf("%s (fs type %#x): direct=%v", d, st.Type, direct)
		if refused := bytes.Contains(logBuf.Bytes(), []byte("direct I/O refused")); refused == direct {
			t.Fatalf("%s: direct=%v, log %q; a refusal must be logged and fall back", d, direct, logBuf.String())
		}
		if !bytes.Contains(logBuf.Bytes(), []byte("write_mode")) {
			t.Fatalf("write mode not logged: %q", logBuf.String())
		}
		for i := uint64(1); i <= 300; i += 10 { // several segments
			if err := w.Save(Batch{Entries: entries(i, i+9, 1)}); err != nil {
				t.Fatal(err)
			}
		}
		w.Close()
		if w, err = Open(opts); err != nil {
			t.Fatal(err)
		}
		got, err := w.Entries(1, 301, 1<<30)
		if err != nil || len(got) != 300 {
			t.Fatalf("%s: read back %d entries: %v", d, len(got), err)
		}
		for _, e := range got {
			if !bytes.Equal(e.Data, bytes.Repeat([]byte{byte(e.Index)}, 40)) {
				t.Fatalf("%s: entry %d reads back wrong", d, e.Index)
			}
		}
		w.Close()
	}
}
