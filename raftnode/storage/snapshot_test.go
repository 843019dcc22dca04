package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/raft"
)

func snapFile(t *testing.T, fs *crashfs.FS, dir string, index uint64) string {
	t.Helper()
	names, _ := fs.List(dir + "/snap")
	for _, n := range names {
		if strings.HasSuffix(n, ".snap") && n[:16] == fmt.Sprintf("%016x", index) {
			return dir + "/snap/" + n
		}
	}
	t.Fatalf("no snapshot file for index %d in %v", index, names)
	return ""
}

func TestCorruptNewestSnapshotFallsBackAndReplaysLog(t *testing.T) {
	fs := crashfs.New()
	var logBuf bytes.Buffer
	opts := memOpts(fs)
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: &logBuf, Level: hclog.Warn})
	s := mustOpen(t, "/d", opts)
	for i := uint64(1); i <= 200; i += 10 {
		if err := s.Save(raft.HardState{Term: 1, Commit: i + 9}, ents(i, i+9, 1), nil); err != nil {
			t.Fatal(err)
		}
		if i == 101 {
			if err := s.CreateSnapshot(100, raft.ConfState{Voters: []uint64{1}}, []byte("state@100")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.CreateSnapshot(180, raft.ConfState{Voters: []uint64{1}}, []byte("state@180")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(180); err != nil {
		t.Fatal(err)
	}
	s.Close()

	p := snapFile(t, fs, "/d", 180)
	b, _ := fs.ReadFile(p)
	b[len(b)-20] ^= 1
	fs.SetFile(p, b)

	s = mustOpen(t, "/d", opts)
	defer s.Close()
	if !strings.Contains(logBuf.String(), "falling back") {
		t.Fatalf("no warning logged: %q", logBuf.String())
	}
	snap, err := s.LoadSnapshot()
	if err != nil || snap.Meta.Index != 100 || string(snap.Data) != "state@100" {
		t.Fatalf("snapshot after fallback: %d %q %v", snap.Meta.Index, snap.Data, err)
	}
	// The log still reaches back to the older snapshot, so nothing is lost.
	if first, _ := s.FirstIndex(); first > 101 {
		t.Fatalf("first index %d: the log no longer reaches snapshot 100", first)
	}
	es, err := s.Entries(101, 201, 1<<30)
	if err != nil || len(es) != 100 {
		t.Fatalf("entries after fallback: %d %v", len(es), err)
	}
}

func TestMissingSnapshotForCompactedLogRefusesToOpen(t *testing.T) {
	fs := crashfs.New()
	opts := memOpts(fs)
	opts.KeepSnapshots = 1
	s := mustOpen(t, "/d", opts)
	for i := uint64(1); i <= 200; i += 10 {
		if err := s.Save(raft.HardState{Term: 1, Commit: i + 9}, ents(i, i+9, 1), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSnapshot(150, raft.ConfState{}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(150); err != nil {
		t.Fatal(err)
	}
	s.Close()
	p := snapFile(t, fs, "/d", 150)
	b, _ := fs.ReadFile(p)
	b[30] ^= 1
	fs.SetFile(p, b)
	_, err := Open("/d", opts)
	if !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("open with the only needed snapshot corrupt: %v, want ErrUnrecoverable", err)
	}
}

func TestInstallSnapshotStreamedInChunks(t *testing.T) {
	leaderFS, followerFS := crashfs.New(), crashfs.New()
	leader := mustOpen(t, "/l", memOpts(leaderFS))
	defer leader.Close()
	if err := leader.Save(raft.HardState{Term: 3, Commit: 50}, ents(1, 50, 3), nil); err != nil {
		t.Fatal(err)
	}
	state := bytes.Repeat([]byte("kv"), 50_000)
	if err := leader.CreateSnapshot(50, raft.ConfState{Voters: []uint64{1, 2}}, state); err != nil {
		t.Fatal(err)
	}

	follower := mustOpen(t, "/f", memOpts(followerFS))
	defer follower.Close()
	if err := follower.Save(raft.HardState{Term: 2, Commit: 3}, ents(1, 8, 2), nil); err != nil {
		t.Fatal(err)
	}
	r, err := leader.OpenSnapshot(50, 3)
	if err != nil {
		t.Fatal(err)
	}
	w, err := follower.ReceiveSnapshot(r.Meta())
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 8192)
	for {
		n, err := r.Read(chunk)
		if _, err := w.Write(chunk[:n]); err != nil {
			t.Fatal(err)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	r.Close()
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	// The core hands the snapshot back in a Ready; Save installs it without
	// rewriting the file. The follower's conflicting log is discarded.
	meta := r.Meta()
	if err := follower.Save(raft.HardState{Term: 3, Commit: 50}, nil, &raft.Snapshot{Meta: meta}); err != nil {
		t.Fatal(err)
	}
	if first, _ := follower.FirstIndex(); first != 51 {
		t.Fatalf("first index %d, want 51", first)
	}
	if last, _ := follower.LastIndex(); last != 50 {
		t.Fatalf("last index %d, want 50", last)
	}
	if tm, _ := follower.Term(50); tm != 3 {
		t.Fatalf("term(50) = %d", tm)
	}
	got, err := follower.LoadSnapshot()
	if err != nil || !bytes.Equal(got.Data, state) || len(got.Meta.ConfState.Voters) != 2 {
		t.Fatalf("installed snapshot: %v", err)
	}
	if err := follower.Save(raft.HardState{}, ents(51, 52, 3), nil); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotReceivedAgainAfterCorruptionIsWritten: a corrupt newest
// snapshot is set aside at open, so when the leader later sends a
// snapshot with the same index and term, Save writes it rather than
// taking the corrupt file for one already received.
func TestSnapshotReceivedAgainAfterCorruptionIsWritten(t *testing.T) {
	fs := crashfs.New()
	s := mustOpen(t, "/d", memOpts(fs))
	if err := s.Save(raft.HardState{Term: 1, Commit: 60}, ents(1, 60, 1), nil); err != nil {
		t.Fatal(err)
	}
	for _, i := range []uint64{30, 60} {
		if err := s.CreateSnapshot(i, raft.ConfState{Voters: []uint64{7}}, []byte(fmt.Sprint("state@", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	p := snapFile(t, fs, "/d", 60)
	fs.FlipBits(p, 40, 1)
	s = mustOpen(t, "/d", memOpts(fs))
	if meta, _ := s.SnapshotMeta(); meta.Index != 30 {
		t.Fatalf("snapshot %d after corruption, want the fallback 30", meta.Index)
	}
	snap := raft.Snapshot{Meta: raft.SnapshotMeta{Index: 60, Term: 1, ConfState: raft.ConfState{Voters: []uint64{7}}}, Data: []byte("state@60")}
	if err := s.Save(raft.HardState{Term: 1, Commit: 60}, nil, &snap); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, "/d", memOpts(fs))
	defer s.Close()
	got, err := s.LoadSnapshot()
	if err != nil || got.Meta.Index != 60 || string(got.Data) != "state@60" {
		t.Fatalf("snapshot after it was received again: %d %q %v", got.Meta.Index, got.Data, err)
	}
}
