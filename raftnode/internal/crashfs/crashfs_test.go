package crashfs

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

func write(t *testing.T, fs *FS, name string, data []byte, sync bool) {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSyncedDataAndDirEntriesSurvive(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	write(t, fs, "/d/a", []byte("durable"), true)
	fs.SyncDir("/d")
	for seed := int64(0); seed < 50; seed++ {
		fs.Crash(rand.New(rand.NewSource(seed)))
		if b, ok := fs.ReadFile("/d/a"); !ok || string(b) != "durable" {
			t.Fatalf("seed %d: synced file lost: %q %v", seed, b, ok)
		}
	}
}

func TestUnsyncedStateIsDroppedOrTornPrefix(t *testing.T) {
	sawDrop, sawTorn, sawLost := false, false, false
	for seed := int64(0); seed < 200; seed++ {
		fs := New()
		fs.MkdirAll("/d")
		write(t, fs, "/d/a", []byte("base"), true)
		fs.SyncDir("/d")
		f, _ := fs.OpenRW("/d/a")
		f.WriteAt([]byte("-appended-unsynced"), 4)
		write(t, fs, "/d/new", []byte("x"), true) // data synced, name not
		fs.Crash(rand.New(rand.NewSource(seed)))
		b, _ := fs.ReadFile("/d/a")
		full := []byte("base-appended-unsynced")
		if !bytes.HasPrefix(full, b) || len(b) < 4 {
			t.Fatalf("seed %d: %q is not a prefix of the written data containing the synced part", seed, b)
		}
		switch {
		case len(b) == 4:
			sawDrop = true
		case len(b) < len(full):
			sawTorn = true
		}
		if _, ok := fs.ReadFile("/d/new"); !ok {
			sawLost = true
		}
		if _, err := f.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrCrashed) {
			t.Fatalf("handle from before the crash still works: %v", err)
		}
	}
	if !sawDrop || !sawTorn || !sawLost {
		t.Fatalf("crash outcomes not all exercised: drop %v torn %v lost-name %v", sawDrop, sawTorn, sawLost)
	}
}

func TestRemoveAndRenameNeedDirSync(t *testing.T) {
	sawUndone := false
	for seed := int64(0); seed < 50; seed++ {
		fs := New()
		fs.MkdirAll("/d")
		write(t, fs, "/d/tmp", []byte("v2"), true)
		write(t, fs, "/d/old", []byte("v1"), true)
		fs.SyncDir("/d")
		fs.Rename("/d/tmp", "/d/cur")
		fs.Remove("/d/old")
		fs.Crash(rand.New(rand.NewSource(seed)))
		_, hasTmp := fs.ReadFile("/d/tmp")
		_, hasCur := fs.ReadFile("/d/cur")
		if hasTmp == hasCur {
			t.Fatalf("seed %d: rename neither or both: tmp %v cur %v", seed, hasTmp, hasCur)
		}
		if hasTmp {
			sawUndone = true
		}
	}
	if !sawUndone {
		t.Fatal("an unsynced rename always survived")
	}
}

func TestSetCrashAfterFailsLaterCalls(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	rng := rand.New(rand.NewSource(1))
	fs.SetCrashAfter(1, rng)
	f, err := fs.Create("/d/a") // call 1 succeeds
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("abcdef"), 0); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write at the crash point: %v", err)
	}
	if _, err := fs.Create("/d/b"); !errors.Is(err, ErrCrashed) {
		t.Fatalf("call after the crash point: %v", err)
	}
	fs.Crash(rng)
	if _, err := fs.Create("/d/c"); err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	if _, err := fs.Lock("/d/LOCK"); err != nil {
		t.Fatal(err)
	}
}

// TestSyncedImageMatchesWrites: after random writes and truncates ending in
// Sync, a crash restores exactly what the process saw.
func TestSyncedImageMatchesWrites(t *testing.T) {
	for seed := int64(0); seed < 100; seed++ {
		rng := rand.New(rand.NewSource(seed))
		fs := New()
		fs.MkdirAll("/d")
		f, _ := fs.Create("/d/f")
		fs.SyncDir("/d")
		for i := 0; i < 30; i++ {
			switch rng.Intn(4) {
			case 0:
				f.Truncate(int64(rng.Intn(300)))
			case 1:
				f.Sync()
			default:
				b := make([]byte, rng.Intn(100))
				rng.Read(b)
				f.WriteAt(b, int64(rng.Intn(300)))
			}
		}
		f.Sync()
		want, _ := fs.ReadFile("/d/f")
		fs.Crash(rng)
		got, _ := fs.ReadFile("/d/f")
		if !bytes.Equal(got, want) {
			t.Fatalf("seed %d: after crash %d bytes, synced %d bytes", seed, len(got), len(want))
		}
	}
}

// TestDirectWritesAreDurableAtOnce: a write through OpenDirect survives any
// crash without a Sync; unaligned writes and direct writes over unsynced
// buffered ones are refused (the kernel would refuse the first, and would
// not make the second's earlier writes durable).
func TestDirectWritesAreDurableAtOnce(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	write(t, fs, "/d/a", make([]byte, 8192), true)
	fs.SyncDir("/d")
	if _, err := fs.OpenDirect("/d/a"); !errors.Is(err, vfs.ErrDirectUnsupported) {
		t.Fatalf("OpenDirect before SetDirectIO: %v, want ErrDirectUnsupported", err)
	}
	fs.SetDirectIO(true)
	d, err := fs.OpenDirect("/d/a")
	if err != nil {
		t.Fatal(err)
	}
	block := vfs.AlignedBuffer(vfs.DirectAlign)
	copy(block, "direct")
	if _, err := d.WriteAt(block, vfs.DirectAlign); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		p   []byte
		off int64
	}{{block[:100], 0}, {block, 100}, {vfs.AlignedBuffer(2 * vfs.DirectAlign)[1 : 1+vfs.DirectAlign], 0}} {
		if _, err := d.WriteAt(bad.p, bad.off); err == nil {
			t.Fatalf("unaligned direct write of %d bytes at %d accepted", len(bad.p), bad.off)
		}
	}
	for seed := int64(0); seed < 20; seed++ {
		fs.Crash(rand.New(rand.NewSource(seed)))
		if b, _ := fs.ReadFile("/d/a"); len(b) != 8192 || !bytes.Equal(b[vfs.DirectAlign:], block) {
			t.Fatalf("seed %d: direct write lost", seed)
		}
	}
	f, _ := fs.OpenRW("/d/a")
	f.WriteAt([]byte("buffered"), 0)
	d, _ = fs.OpenDirect("/d/a")
	if _, err := d.WriteAt(block, 0); err == nil {
		t.Fatal("direct write over an unsynced buffered write accepted")
	}
	f.Sync()
	if _, err := d.WriteAt(block, 0); err != nil {
		t.Fatalf("direct write after sync: %v", err)
	}
}

// TestRenameAcrossDirectoriesIsAtomic: a file moved to another directory
// is, after any crash, in exactly one of the two places; SyncDir of either
// directory makes the move durable.
func TestRenameAcrossDirectoriesIsAtomic(t *testing.T) {
	sawOld, sawNew := false, false
	for seed := int64(0); seed < 100; seed++ {
		fs := New()
		fs.MkdirAll("/a")
		fs.MkdirAll("/b")
		write(t, fs, "/a/f", []byte("data"), true)
		fs.SyncDir("/a")
		write(t, fs, "/b/g", []byte("other"), true) // pending create in /b
		if err := fs.Rename("/a/f", "/b/f"); err != nil {
			t.Fatal(err)
		}
		switch seed % 3 {
		case 1:
			fs.SyncDir("/a")
		case 2:
			fs.SyncDir("/b")
		}
		fs.Crash(rand.New(rand.NewSource(seed)))
		_, inOld := fs.ReadFile("/a/f")
		b, inNew := fs.ReadFile("/b/f")
		if inOld == inNew {
			t.Fatalf("seed %d: file in /a %v, in /b %v: want exactly one", seed, inOld, inNew)
		}
		if inNew && string(b) != "data" {
			t.Fatalf("seed %d: moved file holds %q", seed, b)
		}
		if seed%3 != 0 && !inNew {
			t.Fatalf("seed %d: move lost although a directory was synced", seed)
		}
		sawOld, sawNew = sawOld || inOld, sawNew || inNew
	}
	if !sawOld || !sawNew {
		t.Fatalf("unsynced move always or never survived: old %v new %v", sawOld, sawNew)
	}
	if err := New().Rename("/x", "/nodir/x"); err == nil {
		t.Fatal("rename into a missing directory succeeded")
	}
}

// TestMediaDamageIsDurableAtOnce: FlipBits, TruncateFile and RemoveFile
// change what the disk holds, survive a crash, and are not file-system
// calls a crash point could land in.
func TestMediaDamageIsDurableAtOnce(t *testing.T) {
	fs := New()
	fs.MkdirAll("/d")
	write(t, fs, "/d/a", []byte("abcdef"), true)
	write(t, fs, "/d/b", []byte("gone"), true)
	fs.SyncDir("/d")
	ops := fs.Ops()
	if err := fs.FlipBits("/d/a", 1, 0x20); err != nil {
		t.Fatal(err)
	}
	if err := fs.TruncateFile("/d/a", 4); err != nil {
		t.Fatal(err)
	}
	if err := fs.RemoveFile("/d/b"); err != nil {
		t.Fatal(err)
	}
	if fs.Ops() != ops {
		t.Fatalf("damage counted as %d file-system calls", fs.Ops()-ops)
	}
	fs.Crash(rand.New(rand.NewSource(1)))
	if b, _ := fs.ReadFile("/d/a"); string(b) != "aBcd" {
		t.Fatalf("damaged file holds %q, want %q", b, "aBcd")
	}
	if _, ok := fs.ReadFile("/d/b"); ok {
		t.Fatal("removed file came back")
	}
	if err := fs.FlipBits("/d/a", 4, 1); err == nil {
		t.Fatal("flip past the end succeeded")
	}
	if err := fs.FlipBits("/d/a", 0, 0); err == nil {
		t.Fatal("flip with mask 0 succeeded")
	}
	if err := fs.TruncateFile("/d/a", 5); err == nil {
		t.Fatal("truncate beyond the end succeeded")
	}
	if err := fs.RemoveFile("/d/b"); err == nil {
		t.Fatal("removing a missing file succeeded")
	}
}
