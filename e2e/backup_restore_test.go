package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/cluster"
)

// Disaster recovery on real processes (issue 17 item 3): a backup saved
// with raftctl from a follower, the whole cluster destroyed, a new
// cluster restored from the backup with raftnode restore on new ports
// under a new name.

var (
	raftctlOnce sync.Once
	raftctlBin  string
	raftctlErr  error
)

// raftctl builds raftctl once (TestMain builds only raftnode) and runs it
// with args, returning its stdout; it fails the test if raftctl fails.
func (e *env) raftctl(args ...string) []byte {
	e.t.Helper()
	raftctlOnce.Do(func() {
		dir := filepath.Dir(raftnodeBin)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		raftctlErr = cluster.Build(ctx, dir, os.Getenv("E2E_RACE") == "1", "github.com/capraft/capraft/cmd/raftctl")
		raftctlBin = filepath.Join(dir, "raftctl")
	})
	if raftctlErr != nil {
		e.t.Fatal(raftctlErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, raftctlBin, append([]string{"--token", e.token}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("raftctl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

func TestClusterRestoredFromAFollowersBackupHasEveryKeyWithItsRevisions(t *testing.T) {
	e := newEnv(t, envConfig{})
	old := e.c
	cl := e.client(old.Addrs()...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Keys written, some overwritten (version > 1, mod above create),
	// some deleted: revisions matter.
	n := 20 + e.rng.Intn(20)
	for i := range n {
		if _, err := cl.Put(ctx, fmt.Sprintf("key/%03d", i), []byte(fmt.Sprintf("first-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	deleted := map[string]bool{}
	for i := range n {
		key := fmt.Sprintf("key/%03d", i)
		switch e.rng.Intn(3) {
		case 0:
			if _, err := cl.Put(ctx, key, []byte(fmt.Sprintf("second-%d", i))); err != nil {
				t.Fatal(err)
			}
		case 1:
			e.raftctl("--endpoints", old.Addr(1), "del", key)
			deleted[key] = true
		}
	}
	want := map[string]keyValue{}
	for i := range n {
		key := fmt.Sprintf("key/%03d", i)
		if deleted[key] {
			continue
		}
		kv, err := cl.Get(ctx, key, false)
		if err != nil {
			t.Fatal(err)
		}
		want[key] = kv
	}
	st := e.statuses(old.IDs())
	lead, _ := e.leaderAmong(old.IDs())
	follower := e.others(lead)[0]
	t.Logf("%d keys, %d deleted; leader %d, saving from follower %d", len(want), len(deleted), lead, follower)

	// Saved from the follower, through the leader's endpoint.
	file := filepath.Join(t.TempDir(), "backup.db")
	var saved struct {
		Node, Index, Revision, Keys uint64
	}
	if err := json.Unmarshal(e.raftctl("--endpoints", old.Addr(lead), "-o", "json", "snapshot", "save", file, "--node", fmt.Sprint(follower)), &saved); err != nil {
		t.Fatal(err)
	}
	if saved.Node != follower || saved.Keys != uint64(len(want)) {
		t.Fatalf("saved %+v, want %d keys from node %d", saved, len(want), follower)
	}
	var status struct {
		ChecksumOK bool `json:"checksum_ok"`
		Revision   uint64
		Keys       uint64
		Members    []struct{ ID uint64 }
	}
	if err := json.Unmarshal(e.raftctl("-o", "json", "snapshot", "status", file), &status); err != nil {
		t.Fatal(err)
	}
	if !status.ChecksumOK || status.Revision != saved.Revision || status.Keys != saved.Keys || len(status.Members) != 3 {
		t.Fatalf("status %+v of the backup saved as %+v", status, saved)
	}
	if revAtSave := st[lead].Revision; saved.Revision < revAtSave {
		t.Fatalf("the backup's revision %d is below the leader's %d before the save", saved.Revision, revAtSave)
	}

	// The whole cluster destroyed.
	for _, id := range old.IDs() {
		if err := old.Kill(id); err != nil {
			t.Fatal(err)
		}
		if err := old.Wipe(id); err != nil {
			t.Fatal(err)
		}
	}

	// A new cluster on new ports, every member restored from the file.
	const name = "capraft-restored"
	dir := t.TempDir()
	fresh, err := cluster.New(cluster.Config{
		Binary: raftnodeBin, Size: 3, Dir: dir,
		HeartbeatInterval: heartbeat, ElectionTimeout: electionTimeout, RequestTimeout: requestTimeout,
		Args: []string{"--cluster-name", name, "--cluster-secret-file", e.secretFile, "--anonymous", "none"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fresh.Close(); err != nil {
			t.Errorf("close the restored cluster: %v", err)
		}
		for _, id := range fresh.IDs() {
			if p := fresh.Problems(id); len(p) > 0 {
				t.Errorf("restored node %d's log reports %d runtime problem(s), first: %s", id, len(p), p[0])
			}
		}
		if t.Failed() {
			fresh.DumpTails(t, 50)
		}
	})
	for _, id := range fresh.IDs() {
		out, err := exec.Command(raftnodeBin, "restore", file, "--id", fmt.Sprint(id), "--data-dir", fresh.Node(id).DataDir,
			"--peers", fresh.Peers(id), "--cluster-name", name).CombinedOutput()
		if err != nil {
			t.Fatalf("raftnode restore for node %d: %v\n%s", id, err, out)
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	if err := fresh.Start(sctx); err != nil {
		t.Fatal(err)
	}
	// The old operator token still works: the token keys are part of the
	// state restored.
	ncl := e.client(fresh.Addrs()...)
	for key, w := range want {
		got, err := ncl.Get(ctx, key, false)
		if err != nil {
			t.Fatalf("%s after the restore: %v", key, err)
		}
		if !bytes.Equal(got.Value, w.Value) || got.CreateRevision != w.CreateRevision || got.ModRevision != w.ModRevision || got.Version != w.Version {
			t.Errorf("%s restored as %q create %d mod %d version %d, want %q create %d mod %d version %d", key,
				got.Value, got.CreateRevision, got.ModRevision, got.Version, w.Value, w.CreateRevision, w.ModRevision, w.Version)
		}
	}
	for key := range deleted {
		if _, err := ncl.Get(ctx, key, false); !isNotFound(err) {
			t.Errorf("deleted key %s after the restore: %v, want not found", key, err)
		}
	}
	rev, err := ncl.Put(ctx, "after/restore", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if rev <= saved.Revision {
		t.Errorf("the first write after the restore has revision %d, not above the backup's %d", rev, saved.Revision)
	}
	// A new cluster identity: survivors of the old one would be refused.
	for _, id := range fresh.IDs() {
		ns, err := ncl.Status(ctx, fresh.Addr(id))
		if err != nil {
			t.Fatalf("status of restored node %d: %v", id, err)
		}
		if ns.ClusterID == st[lead].ClusterID {
			t.Errorf("restored node %d has the old cluster's id %d", id, ns.ClusterID)
		}
	}
	// Every member is a voter of the new cluster at its new address; none
	// of the old addresses is known.
	var ms struct {
		Members []struct {
			ID      uint64
			Address string
			Learner bool
		}
	}
	if err := json.Unmarshal(e.raftctl("--endpoints", fresh.Addr(1), "-o", "json", "members"), &ms); err != nil {
		t.Fatal(err)
	}
	if len(ms.Members) != 3 {
		t.Fatalf("members after the restore: %+v", ms.Members)
	}
	for _, m := range ms.Members {
		if m.Learner || m.Address != fresh.Addr(m.ID) {
			t.Errorf("member %+v after the restore, want a voter at %s", m, fresh.Addr(m.ID))
		}
	}
}
