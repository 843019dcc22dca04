package rpc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// frameHeader returns a Cap'n Proto stream header for one segment of the
// given size in bytes.
func frameHeader(size uint32) []byte {
	h := make([]byte, 8)
	binary.LittleEndian.PutUint32(h[0:], 0)      // segment count - 1
	binary.LittleEndian.PutUint32(h[4:], size/8) // size in words
	return h
}

// expectClosedByServer reads from c until the server closes it, failing
// the test if that does not happen within limit.
func expectClosedByServer(t *testing.T, c net.Conn, limit time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(limit))
	buf := make([]byte, 4096)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue // an Abort message, typically
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("server did not close the connection within %v", limit)
		}
		return // EOF or reset: closed
	}
}

// healthyPinger pings on one long-lived connection until stopped and
// reports how many calls succeeded and the first failure.
type healthyPinger struct {
	ok   atomic.Int64
	err  atomic.Value
	stop chan struct{}
	done chan struct{}
}

func startHealthyPinger(t *testing.T, addr string) *healthyPinger {
	e := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	mustPing(t, e, "first")
	h := &healthyPinger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		for i := 0; ; i++ {
			select {
			case <-h.stop:
				return
			default:
			}
			msg := fmt.Sprintf("healthy-%d", i)
			reply, err := ping(e, msg)
			if err == nil && reply != "echo:"+msg {
				err = fmt.Errorf("reply %q to %q", reply, msg)
			}
			if err != nil {
				h.err.CompareAndSwap(nil, err)
				return
			}
			h.ok.Add(1)
		}
	}()
	return h
}

// check stops the pinger and fails the test if any call failed.
func (h *healthyPinger) check(t *testing.T) {
	t.Helper()
	close(h.stop)
	<-h.done
	if err, _ := h.err.Load().(error); err != nil {
		t.Fatalf("a healthy client failed while another connection misbehaved: %v", err)
	}
	if h.ok.Load() == 0 {
		t.Fatal("the healthy client completed no calls")
	}
}

func TestMisbehavingConnectionsAffectOnlyThemselves(t *testing.T) {
	_, srv, addr := serve(t, rpc.Config{FrameTimeout: 300 * time.Millisecond})
	healthy := startHealthyPinger(t, addr)
	rng := rand.New(rand.NewSource(1))
	garbage := make([]byte, 4096)
	rng.Read(garbage)

	cases := []struct {
		name string
		send []byte
	}{
		{"garbage bytes", garbage},
		{"eight zero bytes", make([]byte, 8)}, // crashed go-capnp v3.0.x servers
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: raftnode\r\n\r\n")},
		{"header claiming 60 MiB", frameHeader(60 << 20)},
		{"truncated frame", append(frameHeader(800), make([]byte, 10)...)},
		{"segment count of 2^31", []byte{0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			expectClosedByServer(t, c, 10*time.Second)
		})
	}

	t.Run("abrupt close mid-frame", func(t *testing.T) {
		// The cases above see their connection closed before the server
		// has counted it gone: wait until only the pinger's is left, or
		// one of theirs could leave between here and the count below.
		rpctest.Eventually(t, 10*time.Second, "only the pinger's connection left", func() bool { return srv.NumConns() == 1 })
		const before = 1
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		rpctest.Eventually(t, 10*time.Second, "server accepted the connection", func() bool { return srv.NumConns() == before+1 })
		_, _ = c.Write(frameHeader(4096)[:5])
		_ = c.(*net.TCPConn).SetLinger(0) // close with RST
		c.Close()
		rpctest.Eventually(t, 10*time.Second, "server dropped the reset connection", func() bool { return srv.NumConns() == before })
	})

	healthy.check(t)
}

func TestOversizedFrameClaimsDoNotAllocate(t *testing.T) {
	_, _, addr := serve(t, rpc.Config{}) // default MaxMessageSize
	healthy := startHealthyPinger(t, addr)

	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if _, err := c.Write(frameHeader(60 << 20)); err != nil {
				t.Error(err)
				return
			}
			expectClosedByServer(t, c, 10*time.Second)
		}()
	}
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// Without the limit each claim would allocate 60 MiB: 960 MiB in all.
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("16 connections claiming 60 MiB frames made the process allocate %d MiB", grew>>20)
	}
	healthy.check(t)
}

func TestHandshakeTimeoutClosesSilentConnections(t *testing.T) {
	_, _, addr := serve(t, rpc.Config{HandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expectClosedByServer(t, c, 10*time.Second)
}

func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	_, _, addr := serve(t, rpc.Config{IdleTimeout: idle})

	t.Run("closes a silent client", func(t *testing.T) {
		cc := rpctest.Dial(t, addr, rpc.DialConfig{KeepAlive: -1})
		mustPing(t, echoOf(t, cc), "once")
		select {
		case <-cc.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("connection silent for longer than IdleTimeout=%v still open", idle)
		}
	})
	t.Run("keepalives hold a quiet client open", func(t *testing.T) {
		cc := rpctest.Dial(t, addr, rpc.DialConfig{KeepAlive: idle / 6})
		e := echoOf(t, cc)
		mustPing(t, e, "once")
		// Stay quiet for several idle periods; only keepalives flow.
		select {
		case <-cc.Done():
			t.Fatal("connection with keepalives was closed as idle")
		case <-time.After(4 * idle):
		}
		mustPing(t, e, "still-here")
	})
}

// stallingConn is a connection whose reads block until it is closed: a
// peer that sends requests but never reads the answers.
type stallingConn struct {
	net.Conn
	closed chan struct{}
	once   sync.Once
}

func (c *stallingConn) Read([]byte) (int, error) { <-c.closed; return 0, net.ErrClosed }
func (c *stallingConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestWriteTimeoutClosesPeersThatDoNotRead(t *testing.T) {
	_, srv, addr := serve(t, rpc.Config{WriteTimeout: 300 * time.Millisecond})
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := &stallingConn{Conn: raw, closed: make(chan struct{})}
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(sc), nil)
	rpctest.Eventually(t, 10*time.Second, "server accepted the connection", func() bool { return srv.NumConns() == 1 })

	node := schema.Node(conn.Bootstrap(context.Background()))
	f, release := node.Echo(context.Background(), nil)
	e := f.Echo()
	releases := []func(){release, node.Release}
	big := strings.Repeat("x", 1<<20)
	// Replies of 1 MiB each fill the socket buffers quickly; the server
	// must give up on the writes rather than hang.
	for i := 0; i < 64; i++ {
		_, rel := e.Ping(context.Background(), func(p schema.Echo_ping_Params) error { return p.SetMsg(big) })
		releases = append(releases, rel)
	}
	rpctest.Eventually(t, 20*time.Second, "server closed the connection that stopped reading", func() bool { return srv.NumConns() == 0 })

	// This client never reads, so it cannot learn that the server left:
	// close its end before releasing what waits on it.
	sc.Close()
	conn.Close()
	for _, rel := range releases {
		rel()
	}
}
