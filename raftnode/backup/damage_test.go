package backup_test

import (
	"bytes"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/backup"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
)

// validBackup returns a well-formed backup of an empty store at index 7,
// and the offset its data starts at.
func validBackup(t *testing.T) ([]byte, int) {
	t.Helper()
	var data bytes.Buffer
	if err := driver.WriteSnapshotEnvelope(&data, map[uint64]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.New(kv.Config{}).Snapshot().WriteTo(&data); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h := backup.Header{ClusterID: 99, NodeID: 2, Index: 7, Term: 3, Voters: []uint64{1, 2}, Size: uint64(data.Len()),
		Checksum: crc32.Checksum(data.Bytes(), crc32.MakeTable(crc32.Castagnoli)), Created: time.Unix(1, 0)}
	if err := backup.WriteHeader(&out, h); err != nil {
		t.Fatal(err)
	}
	off := out.Len()
	out.Write(data.Bytes())
	return out.Bytes(), off
}

func TestVerifyDescribesAGoodBackup(t *testing.T) {
	b, _ := validBackup(t)
	sum, err := backup.Verify(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != 7 || sum.Term != 3 || sum.NodeID != 2 || len(sum.Members) != 2 || sum.Members[1].Address != "127.0.0.1:7002" {
		t.Fatalf("summary %+v", sum)
	}
}

// A backup cut short anywhere, or with any one bit flipped, is refused
// with an error that wraps ErrDamaged and names the problem.
func TestTruncatedOrBitFlippedBackupIsRefusedNamingTheProblem(t *testing.T) {
	b, dataOff := validBackup(t)
	for n := 0; n < len(b); n++ {
		_, err := backup.Verify(bytes.NewReader(b[:n]))
		if !errors.Is(err, backup.ErrDamaged) {
			t.Fatalf("cut to %d of %d bytes: %v, want ErrDamaged", n, len(b), err)
		}
		if n > 8 && !strings.Contains(err.Error(), "truncated") && !strings.Contains(err.Error(), "empty") {
			t.Fatalf("cut to %d of %d bytes: %q does not say it is truncated", n, len(b), err)
		}
	}
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	for i := range len(b) {
		c := bytes.Clone(b)
		c[i] ^= 1 << rng.IntN(8)
		_, err := backup.Verify(bytes.NewReader(c))
		if !errors.Is(err, backup.ErrDamaged) {
			// The version byte names a format this build does not read.
			if i == 8 && err != nil && strings.Contains(err.Error(), "version") {
				continue
			}
			t.Fatalf("seed %d: byte %d flipped: %v, want ErrDamaged", seed, i, err)
		}
		want := "header"
		switch {
		case i < 8:
			want = "not a capraft backup"
		case i >= dataOff:
			want = "CRC-32C"
		}
		if !strings.Contains(err.Error(), want) && !strings.Contains(err.Error(), "truncated") &&
			!strings.Contains(err.Error(), "length") && !strings.Contains(err.Error(), "follow") {
			t.Fatalf("seed %d: byte %d flipped: %q does not name the problem (%s)", seed, i, err, want)
		}
	}
	_, err := backup.Verify(bytes.NewReader(append(bytes.Clone(b), 0)))
	if !errors.Is(err, backup.ErrDamaged) || !strings.Contains(err.Error(), "follow") {
		t.Fatalf("a byte after the data: %v", err)
	}
}

// A save that received data other than the node announced leaves no file;
// a good one leaves exactly the verified backup, and is not replaced
// without force.
func TestBackupFileIsWrittenOnlyWhenItVerifies(t *testing.T) {
	b, off := validBackup(t)
	h, err := backup.ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "b.db")

	f, err := backup.Create(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Begin(h); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(b[off:])
	bad[len(bad)/2] ^= 0x10
	if err := f.Write(bad); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(); err == nil || !strings.Contains(err.Error(), "CRC-32C") {
		t.Fatalf("commit of damaged data: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused save left %v", ents)
	}

	f, err = backup.Create(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Begin(h); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(b[off:]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("saved %d bytes (%v), want the %d of the backup", len(got), err, len(b))
	}
	if _, err := backup.Create(path, false); err == nil {
		t.Fatal("an existing backup was not refused")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left %v", ents)
	}
}
