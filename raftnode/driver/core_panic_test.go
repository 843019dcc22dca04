package driver

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
// stops the driver cleanly: Err says why, Done is closed, and a caller
// whose loop task made the core panic is answered, not left waiting.
func TestCorePanicStopsTheNodeCleanly(t *testing.T) {
	d := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := onLoop(ctx, d.Driver, func() struct{} {
		d.core.Advance() // no Ready outstanding: the core panics
		return struct{}{}
	})
	if !errors.Is(err, ErrStopped) {
		t.Errorf("the caller of the task that made the core panic: %v, want shuttingDown", err)
	}
	select {
	case <-d.Done():
	case <-ctx.Done():
		t.Fatal("the driver did not stop after the core panicked")
	}
	if err := d.Err(); err == nil || !strings.Contains(err.Error(), "raft core failed") || !strings.Contains(err.Error(), "Advance") {
		t.Errorf("Err after the core panicked: %v", err)
	}
	if _, _, err := d.Members(ctx); !errors.Is(err, ErrStopped) {
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
		d := newLoneDriver(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		onLoop(ctx, d.Driver, func() struct{} { panic("a bug in the node's own code") })
		t.Fatal("the driver survived a panic in its own code")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicOutsideTheCoreCrashes$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLoopPanic+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the process with a panic on the loop: %v, want it to exit with an error; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "panic: a bug in the node's own code") || !strings.Contains(string(out), "core_panic_test.go") ||
		!strings.Contains(string(out), "(*Driver).run") || strings.Contains(string(out), "[recovered") {
		t.Errorf("the crash does not show the panic and where it happened:\n%s", out)
	}
	if strings.Contains(string(out), "the driver survived") {
		t.Errorf("the panic was recovered:\n%s", out)
	}
}
