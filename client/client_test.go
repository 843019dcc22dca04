package client_test

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

// startNode serves a node on addr ("127.0.0.1:0" for any port) and returns
// its server and address.
func startNode(t *testing.T, addr string) (*rpc.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := raftnode.New(raftnode.Config{ID: 1, DataDir: t.TempDir(), Advertise: ln.Addr().String(), Logger: rpctest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	srv := rpc.NewServer(rpc.Config{Bootstrap: n.Bootstrap, Logger: rpctest.Logger(t)})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return srv, ln.Addr().String()
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newClient(t *testing.T, endpoints ...string) *client.Client {
	t.Helper()
	c, err := client.New(endpoints, client.WithDialTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestUsesTheFirstReachableEndpoint(t *testing.T) {
	_, live := startNode(t, "127.0.0.1:0")
	c := newClient(t, deadAddr(t), live)
	reply, err := c.Ping(ctx(t), "x")
	if err != nil || reply != "echo:x" {
		t.Fatalf("Ping = %q, %v", reply, err)
	}
}

func TestUnavailableWhenNoEndpointAnswers(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	_, err := newClient(t, a, b).Ping(ctx(t), "x")
	if !client.IsUnavailable(err) {
		t.Fatalf("error %v (%T), want unavailable", err, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error %v does not wrap ECONNREFUSED", err)
	}
	want := "no endpoint reachable: cannot reach " + a + ": connection refused; cannot reach " + b + ": connection refused"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
}

func TestReconnectsAfterTheNodeRestarts(t *testing.T) {
	srv, addr := startNode(t, "127.0.0.1:0")
	c := newClient(t, addr)
	if _, err := c.Ping(ctx(t), "before"); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	// The first call after the node went away fails and says so...
	_, err := c.Ping(ctx(t), "during")
	var ce *client.CallError
	if !(errors.As(err, &ce) && ce.ConnectionLost) && !client.IsUnavailable(err) {
		t.Fatalf("Ping to a stopped node: %v, want connection lost or unavailable", err)
	}
	// ...and once a node serves the address again, the client redials.
	startNode(t, addr)
	rpctest.Eventually(t, 10*time.Second, "ping succeeds after restart", func() bool {
		reply, err := c.Ping(ctx(t), "after")
		return err == nil && reply == "echo:after"
	})
}

func TestCallsOnAClosedClientFail(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newClient(t, addr)
	c.Close()
	if _, err := c.Ping(ctx(t), "x"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Ping after Close: %v, want ErrClosed", err)
	}
}

func TestNewNeedsEndpoints(t *testing.T) {
	if _, err := client.New(nil); err == nil {
		t.Fatal("New with no endpoints succeeded")
	}
}

func TestInfo(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	info, err := newClient(t, addr).Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != 1 {
		t.Fatalf("info %+v", info)
	}
}
