package rpc

import (
	"net"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// rpcMessage builds an rpc message of kind finish or bootstrap carrying id.
func rpcMessage(t *testing.T, finish bool, id uint32) *capnp.Message {
	t.Helper()
	msg, m, err := newRPCMessage()
	if err != nil {
		t.Fatal(err)
	}
	if finish {
		f, err := m.NewFinish()
		if err != nil {
			t.Fatal(err)
		}
		f.SetQuestionId(id)
	} else {
		b, err := m.NewBootstrap()
		if err != nil {
			t.Fatal(err)
		}
		b.SetQuestionId(id)
	}
	return msg
}

type received struct {
	which rpccp.Message_Which
	id    uint32
}

// readMessages decodes n messages from conn.
func readMessages(t *testing.T, conn net.Conn, n int) []received {
	t.Helper()
	dec := capnp.NewDecoder(conn)
	var out []received
	for len(out) < n {
		msg, err := dec.Decode()
		if err != nil {
			t.Fatalf("decode message %d: %v", len(out), err)
		}
		m, err := rpccp.ReadRootMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		r := received{which: m.Which()}
		switch r.which {
		case rpccp.Message_Which_finish:
			f, _ := m.Finish()
			r.id = f.QuestionId()
		case rpccp.Message_Which_bootstrap:
			b, _ := m.Bootstrap()
			r.id = b.QuestionId()
		}
		out = append(out, r)
	}
	return out
}

func loopbackPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Held Finish frames go out before the message that carries them, in the
// order they were encoded, and the stream stays well framed.
func TestHeldFinishesKeepTheirOrder(t *testing.T) {
	a, b := loopbackPair(t)
	c := newCodec(a, limits{}, nil)
	for _, m := range []*capnp.Message{
		rpcMessage(t, true, 1), rpcMessage(t, true, 2), rpcMessage(t, false, 3),
		rpcMessage(t, false, 4), rpcMessage(t, true, 5), rpcMessage(t, false, 6),
	} {
		if err := c.Encode(m); err != nil {
			t.Fatal(err)
		}
	}
	want := []received{
		{rpccp.Message_Which_finish, 1}, {rpccp.Message_Which_finish, 2}, {rpccp.Message_Which_bootstrap, 3},
		{rpccp.Message_Which_bootstrap, 4}, {rpccp.Message_Which_finish, 5}, {rpccp.Message_Which_bootstrap, 6},
	}
	got := readMessages(t, b, len(want))
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %+v, want %+v (all: %+v)", i, got[i], want[i], got)
		}
	}
}

// A Finish that no message comes to carry is written on its own after
// finishHoldTime, and more than maxHeldBytes of them are written at once.
func TestHeldFinishesAreWrittenWithoutOtherTraffic(t *testing.T) {
	a, b := loopbackPair(t)
	c := newCodec(a, limits{}, nil)
	if err := c.Encode(rpcMessage(t, true, 7)); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := readMessages(t, b, 1); got[0] != (received{rpccp.Message_Which_finish, 7}) {
		t.Fatalf("got %+v", got)
	}

	// With the timer out of the way, the size bound alone must write them.
	c.holdTime = time.Hour
	n := 0
	for {
		if err := c.Encode(rpcMessage(t, true, uint32(100+n))); err != nil {
			t.Fatal(err)
		}
		n++
		if len(c.held) == 0 {
			break
		}
		if n > 10000 {
			t.Fatalf("%d bytes of Finish frames still held", len(c.held))
		}
	}
	got := readMessages(t, b, n)
	for i, r := range got {
		if r != (received{rpccp.Message_Which_finish, uint32(100 + i)}) {
			t.Fatalf("message %d: got %+v", i, r)
		}
	}
}

// answeredFinish builds a Finish for an answered call, as go-capnp sends
// it after a Return arrives: releaseResultCaps false.
func answeredFinish(t *testing.T, id uint32) *capnp.Message {
	t.Helper()
	msg, m, err := newRPCMessage()
	if err != nil {
		t.Fatal(err)
	}
	f, err := m.NewFinish()
	if err != nil {
		t.Fatal(err)
	}
	f.SetQuestionId(id)
	f.SetReleaseResultCaps(false)
	return msg
}

// A Finish for an answered call waits for the next message past the short
// hold (which cancelling Finishes keep), and is written on its own after
// the long one when none comes; a cancelling Finish held after it brings
// the write forward to its own, shorter, hold.
func TestAnsweredFinishesWaitLongerThanCancellingOnes(t *testing.T) {
	a, b := loopbackPair(t)
	c := newCodec(a, limits{}, nil)
	c.holdTime = time.Millisecond
	c.holdLong = time.Hour
	if err := c.Encode(answeredFinish(t, 1)); err != nil {
		t.Fatal(err)
	}
	// Far past the short hold, the answered Finish is still held: the
	// next message carries it.
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var one [1]byte
	if n, err := b.Read(one[:]); n != 0 || err == nil {
		t.Fatalf("an answered Finish was written on its own within 50ms (read %d bytes, %v)", n, err)
	}
	if err := c.Encode(rpcMessage(t, false, 2)); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := readMessages(t, b, 2)
	want := []received{{rpccp.Message_Which_finish, 1}, {rpccp.Message_Which_bootstrap, 2}}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	// An answered Finish, then a cancelling one: both go out after the
	// cancelling one's hold, in order, with no other traffic.
	if err := c.Encode(answeredFinish(t, 3)); err != nil {
		t.Fatal(err)
	}
	if err := c.Encode(rpcMessage(t, true, 4)); err != nil {
		t.Fatal(err)
	}
	got = readMessages(t, b, 2)
	want = []received{{rpccp.Message_Which_finish, 3}, {rpccp.Message_Which_finish, 4}}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: got %+v, want %+v", i, got[i], want[i])
		}
	}

	// With only answered Finishes held, the long hold writes them.
	c.wmu.Lock()
	c.holdLong = 5 * time.Millisecond
	c.wmu.Unlock()
	if err := c.Encode(answeredFinish(t, 5)); err != nil {
		t.Fatal(err)
	}
	if got := readMessages(t, b, 1); got[0] != (received{rpccp.Message_Which_finish, 5}) {
		t.Fatalf("got %+v", got)
	}
}
