package rpc_test

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

// dialPeer connects as a peer node does: it asks for the Raft capability
// at once (which marks the connection as a peer's) and waits for it.
func dialPeer(t *testing.T, addr string) *rpc.ClientConn {
	t.Helper()
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, release := cc.Node().Raft(ctx, nil)
	defer release()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("peer connection: raft(): %v", err)
	}
	return cc
}

// busyClient connects and starts a call that stays in flight until the
// test service's block channel closes; it returns once the call is in
// its handler, so the server has admitted the connection.
func busyClient(t *testing.T, svc *testService, addr, name string) (*rpc.ClientConn, <-chan error) {
	t.Helper()
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	e := echoOf(t, cc)
	done := make(chan error, 1)
	go func() { _, err := ping(e, "block-"+name); done <- err }()
	waitFor(t, svc.entered, "block-"+name, name+"'s call to start")
	return cc, done
}

// waitClosed waits (at most 10 s) for cc to be closed by the server.
func waitClosed(t *testing.T, cc *rpc.ClientConn, what string) {
	t.Helper()
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s was not closed", what)
	}
}

// Busy clients fill every client slot and try for the reserved one too;
// a peer that connects next still gets in, and once in is not pushed
// out by later connections.
func TestBusyClientsDoNotKeepAPeerOut(t *testing.T) {
	svc, srv, addr := serve(t, rpc.Config{MaxConns: 3, PeerConns: 1, HandshakeTimeout: time.Second})
	var calls []<-chan error
	for _, name := range []string{"a", "b"} {
		_, done := busyClient(t, svc, addr, name)
		calls = append(calls, done)
	}
	// A third busy client finds the client slots full and is let into
	// the reserved slot on probation; not becoming a peer, it loses it.
	third, _ := busyClient(t, svc, addr, "c")
	waitClosed(t, third, "a client in the reserved slot after its handshake timeout")
	rpctest.Eventually(t, 10*time.Second, "the reserved slot is free again", func() bool { return srv.Stats().OnProbation == 0 })

	peer := dialPeer(t, addr)
	mustPing(t, echoOf(t, peer), "peer")
	if st := srv.Stats(); st.Peers != 1 || st.Clients != 2 {
		t.Fatalf("stats %+v: want 2 clients and 1 peer", st)
	}
	// The table is full now: a newcomer is refused, the peer stays.
	late := rpctest.Dial(t, addr, rpc.DialConfig{})
	waitClosed(t, late, "a connection over MaxConns with every slot busy")
	mustPing(t, echoOf(t, peer), "peer-still-served")

	close(svc.block)
	for i, done := range calls {
		if err := <-done; err != nil {
			t.Errorf("busy client %d: %v", i, err)
		}
	}
}

// A full table of clients, one of them idle: a newcomer replaces the
// idle one, never a busy client or a peer.
func TestIdleClientIsClosedToMakeRoom(t *testing.T) {
	svc, srv, addr := serve(t, rpc.Config{MaxConns: 3, PeerConns: -1, EvictIdle: time.Nanosecond})
	idle := rpctest.Dial(t, addr, rpc.DialConfig{})
	mustPing(t, echoOf(t, idle), "once")
	_, busy := busyClient(t, svc, addr, "busy")
	peer := dialPeer(t, addr)

	newcomer := dialPeer(t, addr)
	waitClosed(t, idle, "the idle client")
	mustPing(t, echoOf(t, newcomer), "newcomer")
	mustPing(t, echoOf(t, peer), "peer")
	if st := srv.Stats(); st.Evicted != 1 || st.Peers != 2 || st.Clients != 1 {
		t.Fatalf("stats %+v: want 1 evicted, 2 peers, 1 client", st)
	}

	// Nothing idle left to close: the next one is refused.
	late := rpctest.Dial(t, addr, rpc.DialConfig{})
	waitClosed(t, late, "a connection with only busy clients and peers in the table")
	close(svc.block)
	if err := <-busy; err != nil {
		t.Fatalf("the busy client's call: %v", err)
	}
}
