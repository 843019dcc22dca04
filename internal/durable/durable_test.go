package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteNewFileRefusesToReplaceAFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteNewFile(p, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := WriteNewFile(p, []byte("two")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second write: %v, want it refused as existing", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("file holds %q after a refused write, want %q", b, "one")
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("syncing a missing directory succeeded")
	}
}
