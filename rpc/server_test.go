package rpc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

func TestPingOverLoopback(t *testing.T) { withBothExports(t, testPingOverLoopback) }

func testPingOverLoopback(t *testing.T, serve serveFunc) {
	_, _, addr := serve(t, rpc.Config{})
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	mustPing(t, echoOf(t, cc), "hello")
}

func TestEachConnectionGetsItsOwnBootstrap(t *testing.T) {
	svc, _, addr := serve(t, rpc.Config{})
	ids := map[uint64]string{}
	for i := 0; i < 3; i++ {
		cc := rpctest.Dial(t, addr, rpc.DialConfig{})
		f, release := cc.Node().Info(context.Background(), nil)
		res, err := f.Struct()
		if err != nil {
			t.Fatalf("info: %v", err)
		}
		info, _ := res.Info()
		remote, _ := info.Listen()
		id := info.Id()
		release() // results die here: read everything first
		// The handler saw its own connection: the remote address it
		// reports is this client's local address.
		if got, want := remote, localAddr(t, cc); got != want {
			t.Errorf("connection %d: handler saw remote %s, client is %s", i, got, want)
		}
		ids[id] = remote
	}
	if len(ids) != 3 {
		t.Errorf("connection ids %v: want 3 distinct", ids)
	}
	if n := svc.bootstraps.Load(); n != 3 {
		t.Errorf("Bootstrap called %d times for 3 connections", n)
	}
}

func localAddr(t *testing.T, cc *rpc.ClientConn) string {
	t.Helper()
	return cc.LocalAddr().String()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestHandlerPanicFailsOnlyThatCall(t *testing.T) {
	withBothExports(t, testHandlerPanicFailsOnlyThatCall)
}

func testHandlerPanicFailsOnlyThatCall(t *testing.T, serve serveFunc) {
	_, _, addr := serve(t, rpc.Config{})
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	e := echoOf(t, cc)
	other := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))

	_, err := ping(e, "panic")
	if err == nil {
		t.Fatal("panicking handler: call succeeded")
	}
	if !exc.IsType(err, exc.Failed) {
		t.Errorf("panicking handler: error type %v, want Failed: %v", exc.TypeOf(err), err)
	}
	// The same connection and capability keep working, and so do others.
	mustPing(t, e, "after-panic")
	mustPing(t, other, "other-conn")
}

func TestMaxConnsRefusesTheExtraConnection(t *testing.T) {
	_, srv, addr := serve(t, rpc.Config{MaxConns: 2})
	a := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	b := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	mustPing(t, a, "a")
	mustPing(t, b, "b")

	extra := rpctest.Dial(t, addr, rpc.DialConfig{})
	select {
	case <-extra.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("third connection over MaxConns=2 was not closed")
	}
	if _, err := ping(echoOf(t, extra), "x"); err == nil {
		t.Fatal("call on refused connection succeeded")
	}
	mustPing(t, a, "a-still-served")
	if n := srv.NumConns(); n != 2 {
		t.Errorf("NumConns = %d, want 2", n)
	}
}

func TestShutdownLetsCallsInFlightFinish(t *testing.T) {
	withBothExports(t, testShutdownLetsCallsInFlightFinish)
}

func testShutdownLetsCallsInFlightFinish(t *testing.T, serve serveFunc) {
	svc, srv, addr := serve(t, rpc.Config{})
	e := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	late := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	mustPing(t, late, "warm-up") // resolve its capability before shutdown

	result := make(chan error, 1)
	go func() {
		reply, err := ping(e, "block-inflight")
		if err == nil && reply != "echo:block-inflight" {
			err = fmt.Errorf("reply %q", reply)
		}
		result <- err
	}()
	<-svc.entered // the call is in its handler

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()

	// Draining has begun once new calls are refused.
	rpctest.Eventually(t, 10*time.Second, "new calls refused during shutdown", func() bool {
		_, err := ping(late, "late")
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while a call was in flight", err)
	default:
	}

	close(svc.block)
	if err := <-result; err != nil {
		t.Fatalf("call in flight during Shutdown: %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if n := srv.NumConns(); n != 0 {
		t.Errorf("after Shutdown, NumConns = %d", n)
	}
}

func TestShutdownDeadlineClosesConnections(t *testing.T) {
	withBothExports(t, testShutdownDeadlineClosesConnections)
}

func testShutdownDeadlineClosesConnections(t *testing.T, serve serveFunc) {
	svc, srv, addr := serve(t, rpc.Config{})
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	e := echoOf(t, cc)
	result := make(chan error, 1)
	go func() { _, err := ping(e, "block-forever"); result <- err }()
	<-svc.entered

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stuck call: %v, want DeadlineExceeded", err)
	}
	// Disconnected, not Failed: it is what tells a client to fail over.
	if err := <-result; !exc.IsType(err, exc.Disconnected) {
		t.Fatalf("call cut off by shutdown: %v (type %v), want Disconnected", err, exc.TypeOf(err))
	}
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client connection still open after Shutdown")
	}
}

func TestServeAfterCloseReturnsErrServerClosed(t *testing.T) {
	srv := rpc.NewServer(rpc.Config{Bootstrap: newTestService().bootstrap})
	srv.Close()
	ln := listen(t)
	if err := srv.Serve(ln); !errors.Is(err, rpc.ErrServerClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestDialRefusedSaysCannotReach(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err := rpc.Dial(context.Background(), addr, rpc.DialConfig{})
	var de *rpc.DialError
	if !errors.As(err, &de) {
		t.Fatalf("dial closed port: %v (%T), want *rpc.DialError", err, err)
	}
	if want := "cannot reach " + addr + ": connection refused"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// A caller that gives up sends a Finish, which the codec holds back for a
// message to ride with; with no other traffic, it must still reach the
// server on its own, and cancel the handler.
func TestCancelledCallCancelsTheHandler(t *testing.T) {
	withBothExports(t, testCancelledCallCancelsTheHandler)
}

func testCancelledCallCancelsTheHandler(t *testing.T, serve serveFunc) {
	svc, _, addr := serve(t, rpc.Config{})
	e := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	ctx, cancel := context.WithCancel(context.Background())
	f, release := e.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg("block-cancel") })
	defer release()
	waitFor(t, svc.entered, "block-cancel", "the handler to start")
	cancel()
	if _, err := f.Struct(); err == nil {
		t.Fatal("a cancelled call succeeded")
	}
	waitFor(t, svc.cancelled, "block-cancel", "the handler to see the cancellation")
}

// waitFor waits (at most 10 s) for want on ch.
func waitFor(t *testing.T, ch <-chan string, want, what string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("waiting for %s: got %q, want %q", what, got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}
