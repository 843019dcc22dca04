package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// raftctl watch replays the changes under a prefix from --rev, with
// --prev, as lines or JSON objects, prints new ones as they happen, and
// exits 0 when interrupted; a compacted revision fails (exit 1) naming
// the oldest revision the node keeps and what to do.
func TestWatchCommandPrintsChangesUntilInterrupted(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0", "--history-revisions", "3")
	ep := node.addr
	mustCtl(t, ep, "put", "app/a", "1")   // 1
	mustCtl(t, ep, "put", "other", "x")   // 2
	mustCtl(t, ep, "put", "app/a", "2")   // 3
	mustCtl(t, ep, "del", "app/a")        // 4
	mustCtl(t, ep, "put", "app/b", "new") // 5

	// Replay from the oldest kept revision, as text with previous values.
	_, ctl := binaries(t)
	watch := exec.Command(ctl, "--endpoints", ep, "watch", "app/", "--rev", "3", "--prev")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	watch.Stderr = &errOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := []string{"3\tput\tapp/a\t2\tprev=1", "4\tdelete\tapp/a\tprev=2", "5\tput\tapp/b\tnew", "6\tput\tapp/c\tlive"}
	var got []string
	for len(got) < len(want) {
		if len(got) == 3 {
			mustCtl(t, ep, "put", "app/c", "live") // 6: a change after the replay
		}
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch exited early; stderr %q", errOut.String())
			}
			got = append(got, l)
		case <-time.After(30 * time.Second):
			t.Fatalf("watch printed %q so far; stderr %q", got, errOut.String())
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("watch printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := watch.Wait(); err != nil {
		t.Fatalf("watch after SIGINT: %v; stderr %q", err, errOut.String())
	}

	// One key, as JSON: read the replayed change, then interrupt.
	js := exec.Command(ctl, "--endpoints", ep, "-o", "json", "watch", "app/b", "--key", "--rev", "5")
	jout, err := js.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := js.Start(); err != nil {
		t.Fatal(err)
	}
	defer js.Process.Kill()
	var ev struct {
		Revision uint64 `json:"revision"`
		Type     string `json:"type"`
		KV       struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"kv"`
	}
	if err := json.NewDecoder(jout).Decode(&ev); err != nil {
		t.Fatal(err)
	}
	if ev.Revision != 5 || ev.Type != "put" || ev.KV.Key != "app/b" || ev.KV.Value != "new" {
		t.Fatalf("JSON event %+v", ev)
	}
	_ = js.Process.Signal(syscall.SIGINT)
	_ = js.Wait()

	// Revision 1 is compacted: exit 1, naming the oldest kept.
	_, e, code := raftctl(t, "--endpoints", ep, "watch", "app/", "--rev", "1")
	if code != 1 || !strings.Contains(e, "history starts at revision 4") || !strings.Contains(e, "raftctl range") {
		t.Fatalf("watch from a compacted revision: exit %d, %q", code, e)
	}
}
