package rpc_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

// A call whose message is over the dialling side's own limit is not
// sent: it fails with an error saying so, and the connection carries on.
func TestCallOverTheLimitFailsAloneWithAClearError(t *testing.T) {
	withBothExports(t, func(t *testing.T, serve serveFunc) {
		_, _, addr := serve(t, rpc.Config{})
		const limit = 1 << 20
		cc := rpctest.Dial(t, addr, rpc.DialConfig{MaxMessageSize: limit})
		e := echoOf(t, cc)
		mustPing(t, e, "before")

		_, err := ping(e, strings.Repeat("x", limit+1))
		var tooLarge *rpc.MessageTooLargeError
		if !errors.As(err, &tooLarge) {
			t.Fatalf("ping over the limit: %v (%T), want a *rpc.MessageTooLargeError", err, err)
		}
		if !tooLarge.Sent || tooLarge.Limit != limit || tooLarge.Size <= limit {
			t.Errorf("error %+v: want Sent, Limit %d and a Size over it", tooLarge, limit)
		}
		if !strings.Contains(err.Error(), "not sent") || strings.Contains(err.Error(), "broken pipe") {
			t.Errorf("error %q should say the message was not sent", err)
		}
		mustPing(t, e, "after")
		select {
		case <-cc.Done():
			t.Fatalf("connection ended after a refused call: %v", cc.Err())
		default:
		}
	})
}

// Results over the node's limit are replaced by an exception saying so:
// the caller gets an error, not a hang, and the connection carries on.
func TestResultsOverTheLimitFailTheCallNotTheConnection(t *testing.T) {
	withBothExports(t, func(t *testing.T, serve serveFunc) {
		const limit = 64 << 10
		_, _, addr := serve(t, rpc.Config{MaxMessageSize: limit})
		cc := rpctest.Dial(t, addr, rpc.DialConfig{})
		e := echoOf(t, cc)

		_, err := ping(e, "big:100000")
		if err == nil || !exc.IsType(err, exc.Failed) {
			t.Fatalf("ping answered with 100000 bytes over a %d-byte limit: %v, want a Failed exception", limit, err)
		}
		for _, want := range []string{"results of", "not sent", "--max-message-size"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		mustPing(t, e, "after")
	})
}

// nodeLimit is the node's message size limit in the tests of oversized
// messages it receives: large enough that a message over it does not fit
// in loopback socket buffers, so the node must read it to the end before
// its answer can reach a sender still writing.
const nodeLimit = 8 << 20

// A message over the node's limit (from a client that allows more) ends
// the connection, but the node first tells the sender why, and says so
// in its log; the sender does not fail on a broken pipe.
func TestMessageOverTheNodesLimitIsRefusedWithTheReason(t *testing.T) {
	const limit = nodeLimit
	logger, logs := rpctest.BufferLogger(hclog.Warn)
	_, _, addr := serve(t, rpc.Config{MaxMessageSize: limit, Logger: logger})
	cc := rpctest.Dial(t, addr, rpc.DialConfig{MaxMessageSize: 4 * limit})
	e := echoOf(t, cc)
	mustPing(t, e, "before")

	_, err := ping(e, strings.Repeat("x", limit+limit/2))
	if err == nil {
		t.Fatal("ping over the node's limit succeeded")
	}
	if strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "reset by peer") {
		t.Errorf("the call failed on the socket (%v), not on the node's refusal", err)
	}
	select {
	case <-cc.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed after an oversized message")
	}
	var abort *rpc.RemoteAbortError
	if !errors.As(cc.Err(), &abort) {
		t.Fatalf("ClientConn.Err() = %v (%T), want the node's reason as a *rpc.RemoteAbortError", cc.Err(), cc.Err())
	}
	want := "exceeds this node's limit of 8388608 bytes (--max-message-size)"
	if !strings.HasPrefix(abort.Reason, "message of ") || !strings.Contains(abort.Reason, want) {
		t.Errorf("the node's reason %q, want \"message of N bytes %s\"", abort.Reason, want)
	}
	rpctest.Eventually(t, 10*time.Second, "the node logged why it closed the connection", func() bool {
		return strings.Contains(logs.String(), want)
	})
}

// Any sender, not only this package's clients, gets an Abort saying why
// before the node closes the connection.
func TestOversizedFrameGetsAnAbortBeforeTheConnectionCloses(t *testing.T) {
	const limit = nodeLimit
	_, _, addr := serve(t, rpc.Config{MaxMessageSize: limit})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = limit + limit*7/8
	frame := append(frameHeader(size), make([]byte, size)...)
	if _, err := c.Write(frame); err != nil {
		t.Fatalf("writing the oversized frame: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := capnp.NewDecoder(c).Decode()
	if err != nil {
		t.Fatalf("reading the node's answer: %v", err)
	}
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil || m.Which() != rpccp.Message_Which_abort {
		t.Fatalf("the node answered %v (%v), want an Abort", m.Which(), err)
	}
	a, _ := m.Abort()
	reason, _ := a.Reason()
	if want := "message of 15728648 bytes exceeds this node's limit of 8388608 bytes (--max-message-size)"; reason != want {
		t.Errorf("Abort reason %q, want %q", reason, want)
	}
	expectClosedByServer(t, c, 10*time.Second)
}
