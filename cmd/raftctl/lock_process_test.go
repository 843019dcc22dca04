package main_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bgCtl is a raftctl running in the background: its stdout lines arrive
// on lines, and done is closed once it exited (code is then set).
type bgCtl struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	code  int
	mu    sync.Mutex
	err   bytes.Buffer
}

func (b *bgCtl) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err.Write(p)
}

func (b *bgCtl) stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err.String()
}

// startCtl starts raftctl with args; it is killed when the test ends.
func startCtl(t *testing.T, args ...string) *bgCtl {
	t.Helper()
	_, ctl := binaries(t)
	b := &bgCtl{cmd: exec.Command(ctl, args...), lines: make(chan string, 100), done: make(chan struct{})}
	stdout, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd.Stderr = b
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
		_ = b.cmd.Wait()
		b.code = b.cmd.ProcessState.ExitCode()
		close(b.done)
	}()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.done
	})
	return b
}

// line returns the next line b prints.
func (b *bgCtl) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-b.lines:
		if !ok {
			t.Fatalf("raftctl %v exited early: stderr %q", b.cmd.Args[1:], b.stderr())
		}
		return l
	case <-time.After(30 * time.Second):
		t.Fatalf("raftctl %v printed nothing; stderr %q", b.cmd.Args[1:], b.stderr())
	}
	return ""
}

// interrupt sends SIGINT to b and returns its exit status.
func (b *bgCtl) interrupt(t *testing.T) int {
	t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	return b.wait(t)
}

// wait waits for b to exit and returns its status.
func (b *bgCtl) wait(t *testing.T) int {
	t.Helper()
	for range b.lines {
	}
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("raftctl %v did not exit; stderr %q", b.cmd.Args[1:], b.stderr())
	}
	return b.code
}

// awaitKeys waits until range PREFIX shows n keys.
func awaitKeys(t *testing.T, ep, prefix string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := mustCtl(t, ep, "-o", "json", "range", prefix)
		if got := strings.Count(out, `"create_revision"`); got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("range %s: want %d keys, have %s", prefix, n, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var lockLine = regexp.MustCompile(`^(jobs/nightly/[0-9a-f]{16})\trevision=([0-9]+)$`)

// raftctl lock holds the lock until interrupted (printing its key and
// token) or while a command runs (which sees them in its environment,
// and whose exit status lock returns); a second lock waits for the first
// and gets a larger token; nothing is left in the queue.
func TestLockCommandHoldsTheLockUntilInterruptedOrWhileACommandRuns(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr

	holder := startCtl(t, "--endpoints", ep, "lock", "jobs/nightly")
	m := lockLine.FindStringSubmatch(holder.line(t))
	if m == nil {
		t.Fatalf("lock printed an unexpected line; stderr %q", holder.stderr())
	}
	first, _ := strconv.ParseUint(m[2], 10, 64)

	waiter := startCtl(t, "--endpoints", ep, "lock", "jobs/nightly", "--",
		"sh", "-c", `echo "$RAFTCTL_LOCK_KEY $RAFTCTL_LOCK_REVISION"; exit 3`)
	awaitKeys(t, ep, "jobs/nightly/", 2)
	select {
	case l := <-waiter.lines:
		t.Fatalf("the command ran while the lock was held: %q", l)
	default:
	}
	if code := holder.interrupt(t); code != 0 {
		t.Fatalf("lock after SIGINT: exit %d; stderr %q", code, holder.stderr())
	}
	fields := strings.Fields(waiter.line(t))
	if len(fields) != 2 || !strings.HasPrefix(fields[0], "jobs/nightly/") {
		t.Fatalf("the command saw %q", fields)
	}
	second, _ := strconv.ParseUint(fields[1], 10, 64)
	if second <= first {
		t.Fatalf("the second holder's token %d is not above the first's %d", second, first)
	}
	if code := waiter.wait(t); code != 3 || !strings.Contains(waiter.stderr(), "exited with status 3") {
		t.Fatalf("lock -- a command that exits 3: exit %d; stderr %q", code, waiter.stderr())
	}
	awaitKeys(t, ep, "jobs/nightly/", 0)

	if _, errOut, code := raftctl(t, "--endpoints", ep, "lock", "a", "b"); code != 1 || !strings.Contains(errOut, "put the command after --") {
		t.Fatalf("lock NAME ARG: exit %d; stderr %q", code, errOut)
	}
}

var leaderLine = regexp.MustCompile(`^([0-9]+)\t(svc/[0-9a-f]{16})\t(.*)$`)

// raftctl elect campaigns and prints the leaders; interrupted, the leader
// resigns and the next candidate leads; elect --listen prints the same
// leaders without campaigning.
func TestElectCommandPrintsTheLeadersAndResignsWhenInterrupted(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr

	one := startCtl(t, "--endpoints", ep, "elect", "svc", "one")
	l1 := leaderLine.FindStringSubmatch(one.line(t))
	if l1 == nil || l1[3] != "one" {
		t.Fatalf("elect printed an unexpected first leader %q; stderr %q", l1, one.stderr())
	}
	listen := startCtl(t, "--endpoints", ep, "elect", "--listen", "svc")
	if got := listen.line(t); got != l1[0] {
		t.Fatalf("elect --listen printed %q, want %q", got, l1[0])
	}
	two := startCtl(t, "--endpoints", ep, "elect", "svc", "two")
	if got := two.line(t); got != l1[0] {
		t.Fatalf("the second candidate printed %q, want the leader %q", got, l1[0])
	}
	awaitKeys(t, ep, "svc/", 2)
	if code := one.interrupt(t); code != 0 {
		t.Fatalf("elect after SIGINT: exit %d; stderr %q", code, one.stderr())
	}
	l2 := leaderLine.FindStringSubmatch(listen.line(t))
	if l2 == nil || l2[3] != "two" || l2[2] == l1[2] {
		t.Fatalf("after the leader resigned, elect --listen printed %q", l2)
	}
	r1, _ := strconv.Atoi(l1[1])
	if r2, _ := strconv.Atoi(l2[1]); r2 <= r1 {
		t.Fatalf("the second leader's token %s is not above the first's %s", l2[1], l1[1])
	}
	if got := two.line(t); got != l2[0] {
		t.Fatalf("the second candidate printed %q, want %q", got, l2[0])
	}
	if code := two.interrupt(t); code != 0 {
		t.Fatalf("elect after SIGINT: exit %d; stderr %q", code, two.stderr())
	}
	if code := listen.interrupt(t); code != 0 {
		t.Fatalf("elect --listen after SIGINT: exit %d; stderr %q", code, listen.stderr())
	}
	awaitKeys(t, ep, "svc/", 0)

	if _, errOut, code := raftctl(t, "--endpoints", ep, "elect", "svc"); code != 1 || !strings.Contains(errOut, "--listen") {
		t.Fatalf("elect NAME: exit %d; stderr %q", code, errOut)
	}
}

// When the lock's session ends while a command runs under it (here its
// lease is revoked), the command gets SIGTERM and lock exits 1 saying the
// lock was lost.
func TestLockCommandStopsTheCommandWhenTheLockIsLost(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	held := startCtl(t, "--endpoints", ep, "lock", "--ttl", "2s", "jobs/long", "--",
		"sh", "-c", `echo "$RAFTCTL_LOCK_KEY"; trap 'echo terminated; exit 0' TERM; while :; do sleep 0.05; done`)
	key := held.line(t)
	hex := strings.TrimPrefix(key, "jobs/long/")
	lease, err := strconv.ParseUint(hex, 16, 64)
	if err != nil || len(hex) != 16 {
		t.Fatalf("the command saw key %q", key)
	}
	mustCtl(t, ep, "lease", "revoke", strconv.FormatUint(lease, 10))
	if got := held.line(t); got != "terminated" {
		t.Fatalf("the command printed %q after the lease was revoked, want terminated", got)
	}
	if code := held.wait(t); code != 1 || !strings.Contains(held.stderr(), "lock lost") {
		t.Fatalf("lock whose lease was revoked: exit %d; stderr %q", code, held.stderr())
	}
}
