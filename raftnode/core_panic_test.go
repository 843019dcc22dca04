package raftnode

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A panic inside the Raft core (here an invariant it checks: Advance
// without a Ready; a failed read of its storage panics the same way)
// stops the node cleanly: Err says why, Done is closed, and a caller
// whose loop task made the core panic is answered, not left waiting.
func TestCorePanicStopsTheNodeCleanly(t *testing.T) {
	n := newLoneNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := onLoop(ctx, n, func() struct{} {
		n.core.Advance() // no Ready outstanding: the core panics
		return struct{}{}
	})
	if !errors.Is(err, errShuttingDown) {
		t.Errorf("the caller of the task that made the core panic: %v, want shuttingDown", err)
	}
	select {
	case <-n.Done():
	case <-ctx.Done():
		t.Fatal("the node did not stop after the core panicked")
	}
	if err := n.Err(); err == nil || !strings.Contains(err.Error(), "raft core failed") || !strings.Contains(err.Error(), "Advance") {
		t.Errorf("Err after the core panicked: %v", err)
	}
	if _, _, err := n.Members(ctx); !errors.Is(err, errShuttingDown) {
		t.Errorf("Members on the stopped node: %v, want shuttingDown", err)
	}
}

// envLoopPanic makes TestPanicOutsideTheCoreCrashes play the crashing
// process.
const envLoopPanic = "CAPRAFT_TEST_LOOP_PANIC"

// A panic in the node's own code on the loop (not inside the core) is a
// bug: it is not recovered into a quiet stop but crashes the process, with
// its stack, so tests catch it.
func TestPanicOutsideTheCoreCrashes(t *testing.T) {
	if os.Getenv(envLoopPanic) == "1" {
		n := newLoneNode(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		onLoop(ctx, n, func() struct{} { panic("a bug in the node's own code") })
		t.Fatal("the node survived a panic in its own code")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicOutsideTheCoreCrashes$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLoopPanic+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the process with a panic on the loop: %v, want it to exit with an error; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "panic: a bug in the node's own code") || !strings.Contains(string(out), "core_panic_test.go") ||
		!strings.Contains(string(out), "(*Node).run") || strings.Contains(string(out), "[recovered") {
		t.Errorf("the crash does not show the panic and where it happened:\n%s", out)
	}
	if strings.Contains(string(out), "the node survived") {
		t.Errorf("the panic was recovered:\n%s", out)
	}
}
