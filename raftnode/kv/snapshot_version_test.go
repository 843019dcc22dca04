package kv

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// goldenV2 is a version-2 snapshot of snapshotSeeds' fourth state (keys,
// sessions, token keys, revocations), written before version 3 existed.
var goldenV2 = filepath.Join("testdata", "snapshot", "v2.snap")

// goldenV3 is a version-3 snapshot of snapshotSeeds' fifth state (the
// fourth's and leases), rewritten by -update-corpus.
var goldenV3 = filepath.Join("testdata", "snapshot", "v3.snap")

// TestVersion1SnapshotRestores checks a version-1 snapshot written by the
// previous code restores to the state it was taken of, with no token keys
// or revocations, which then snapshots to its version-2 encoding.
func TestVersion1SnapshotRestores(t *testing.T) {
	v1 := v1Snapshot(t)
	if v1[len(snapMagic)] != snapVersionV1 {
		t.Fatalf("%s is not a version-1 snapshot", "testdata/snapshot/v1.snap")
	}
	s := restored(t, Config{}, v1)
	if want := snapshotSeeds(t)[2]; !bytes.Equal(snapBytes(t, s), want) {
		t.Fatalf("the restored version-1 snapshot is not the state it was taken of:\n got  %x\n want %x", snapBytes(t, s), want)
	}
	if kv, found, _ := s.Get([]byte("a")); !found || string(kv.Value) != "2" || s.Sessions() != 2 {
		t.Fatalf("restored version 1: key a %q %v, %d sessions", kv.Value, found, s.Sessions())
	}
	if _, _, ok := s.CurrentTokenKey(); ok || s.Revoked(tokenID(1, 0)) {
		t.Fatal("a version-1 snapshot restored token keys or revocations")
	}
}

// TestVersion2SnapshotRestores checks a version-2 snapshot written by the
// previous code restores to the state it was taken of, with no leases,
// which then snapshots to its version-3 encoding.
func TestVersion2SnapshotRestores(t *testing.T) {
	v2, err := os.ReadFile(goldenV2)
	if err != nil {
		t.Fatal(err)
	}
	if v2[len(snapMagic)] != snapVersionV2 {
		t.Fatalf("%s is not a version-2 snapshot", goldenV2)
	}
	s := restored(t, Config{}, v2)
	if want := snapshotSeeds(t)[3]; !bytes.Equal(snapBytes(t, s), want) {
		t.Fatalf("the restored version-2 snapshot is not the state it was taken of:\n got  %x\n want %x", snapBytes(t, s), want)
	}
	if s.LeaseCount() != 0 || !s.Revoked(tokenID(1, 0)) {
		t.Fatal("a version-2 snapshot restored leases, or lost its revocations")
	}
}

// TestSnapshotEncodingIsStable checks the store still writes the committed
// version-3 golden snapshot for the same state (an encoding change must be
// a new version), and that it restores to the same bytes.
func TestSnapshotEncodingIsStable(t *testing.T) {
	seeds := snapshotSeeds(t)
	if *updateCorpus {
		if err := os.WriteFile(goldenV3, seeds[4], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(goldenV3)
	if err != nil {
		t.Fatalf("read %s: %v (run go test -run TestSnapshotEncodingIsStable -update-corpus)", goldenV3, err)
	}
	if !bytes.Equal(seeds[4], golden) {
		t.Fatalf("the snapshot of the golden state differs from %s:\n got  %x\n want %x", goldenV3, seeds[4], golden)
	}
	s := restored(t, Config{}, golden)
	if !bytes.Equal(snapBytes(t, s), golden) {
		t.Fatal("the golden snapshot restores to a store that snapshots differently")
	}
	if s.LeaseCount() != 2 {
		t.Fatalf("golden leases: %d", s.LeaseCount())
	}
	if kv, _, _ := s.Get([]byte("la")); kv.Lease == 0 {
		t.Fatal("golden key la lost its lease")
	}
	if kv, _, _ := s.Get([]byte("lc")); kv.Lease != 0 {
		t.Fatal("golden key lc, re-put without its lease, has one")
	}
	if id, key, ok := s.CurrentTokenKey(); !ok || id != 7 || !bytes.Equal(key, secret(MinTokenKeySize, 0xa5)) {
		t.Fatalf("golden current token key %d %x %v", id, key, ok)
	}
	if key, ok := s.TokenKey(2); !ok || !bytes.Equal(key, secret(MaxTokenKeySize, 0x5a)) {
		t.Fatalf("golden token key 2: %x %v", key, ok)
	}
	if !s.Revoked(tokenID(1, 0)) || !s.Revoked(tokenID(1, 1)) || !s.Revoked(tokenID(0, 1)) || s.Revoked(tokenID(0, 0)) {
		t.Fatal("golden revocations differ")
	}
}
