// Package rpctest helps test code that serves or dials capabilities: it
// starts Servers on loopback and provides a TCP proxy that can delay or
// hold traffic, for tests of pipelining, timeouts and faults.
package rpctest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
)

// Serve starts a Server for cfg on a free loopback port and returns it and
// its address. The server is closed when the test ends. If cfg has no
// Logger, the test's log receives the server's logs.
func Serve(t testing.TB, cfg rpc.Config) (*rpc.Server, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen on loopback: %v", err)
	}
	srv := rpc.NewServer(cfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, rpc.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv, ln.Addr().String()
}

// Dial connects to addr with cfg and closes the connection when the test
// ends.
func Dial(t testing.TB, addr string, cfg rpc.DialConfig) *rpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := rpc.Dial(ctx, addr, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// Logger returns an hclog.Logger that writes to the test's log at warn
// level and above (raise it with hclog's SetLevel when debugging).
func Logger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   t.Name(),
		Level:  hclog.Warn,
		Output: testWriter{t},
	})
}

// LogBuffer collects log output, safe for concurrent writers, for tests
// that check what was logged.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// BufferLogger returns a logger at level writing to a new LogBuffer, and
// the buffer.
func BufferLogger(level hclog.Level) (hclog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	return hclog.New(&hclog.LoggerOptions{Output: b, Level: level}), b
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// Eventually waits until cond holds, checking every few milliseconds, and
// fails the test with msg if it does not hold within timeout.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, msg)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
