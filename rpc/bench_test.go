package rpc_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// BenchmarkPing measures ping calls over loopback with 1, 16 and 128 calls
// in flight on one connection, for Cap'n Proto through this package
// (echo().ping(), 16-byte message), for the same calls over go-capnp's
// plain stream transport with unguarded capabilities (what our limits,
// deadlines and panic guards cost), and for a raw TCP baseline (4-byte
// length prefix, same payload, one write per message, replies matched in
// FIFO order). The rows of each window sit side by side; calls/s and
// allocs/op are per call, client and server together (both run in this
// process; the harness's per-call closure is 1 alloc in every row).
//
//	go test -run '^$' -bench BenchmarkPing -benchtime 3s ./rpc/
func BenchmarkPing(b *testing.B) {
	msg := "0123456789abcdef"
	for _, inflight := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("inflight=%d/capnp", inflight), func(b *testing.B) {
			_, _, addr := serve(b, rpc.Config{})
			benchEchoPing(b, echoOf(b, rpctest.Dial(b, addr, rpc.DialConfig{KeepAlive: -1})), inflight, msg)
		})
		b.Run(fmt.Sprintf("inflight=%d/capnp-unhardened", inflight), func(b *testing.B) {
			benchEchoPing(b, echoOf(b, dialPlain(b, servePlain(b))), inflight, msg)
		})
		b.Run(fmt.Sprintf("inflight=%d/raw", inflight), func(b *testing.B) {
			addr := serveRaw(b)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := make([]byte, 4+len(msg))
			binary.BigEndian.PutUint32(req, uint32(len(msg)))
			copy(req[4:], msg)
			r := bufio.NewReader(c)
			resp := make([]byte, len(req))
			runWindow(b, inflight, func() func() error {
				if _, err := c.Write(req); err != nil {
					return func() error { return err }
				}
				return func() error {
					_, err := io.ReadFull(r, resp)
					return err
				}
			})
		})
	}
}

// benchEchoPing runs the windowed benchmark of e.ping(msg).
func benchEchoPing(b *testing.B, e schema.Echo, inflight int, msg string) {
	mustPing(b, e, "warm-up")
	ctx := context.Background()
	runWindow(b, inflight, func() func() error {
		f, release := e.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg(msg) })
		return func() error {
			defer release()
			_, err := f.Struct()
			return err
		}
	})
}

// runWindow issues b.N calls from one goroutine, keeping at most inflight
// of them outstanding; a second goroutine waits for the answers in order.
func runWindow(b *testing.B, inflight int, issue func() (wait func() error)) {
	b.ReportAllocs()
	tokens := make(chan struct{}, inflight)
	pending := make(chan func() error, inflight)
	errc := make(chan error, 1)
	go func() {
		var first error
		for wait := range pending {
			if err := wait(); err != nil && first == nil {
				first = err
			}
			<-tokens
		}
		errc <- first
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tokens <- struct{}{}
		pending <- issue()
	}
	close(pending)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// serveRaw runs the raw-TCP baseline server: it echoes length-prefixed
// messages, one write per reply.
func serveRaw(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				var hdr [4]byte
				buf := make([]byte, 0, 64)
				for {
					if _, err := io.ReadFull(r, hdr[:]); err != nil {
						return
					}
					n := binary.BigEndian.Uint32(hdr[:])
					if n > 1<<20 {
						return
					}
					if need := 4 + int(n); cap(buf) < need {
						buf = make([]byte, need)
					}
					buf = buf[:4+n]
					copy(buf, hdr[:])
					if _, err := io.ReadFull(r, buf[4:]); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// servePlain serves the test service with go-capnp's own stream transport
// and unguarded capabilities: the baseline for what this package adds.
func servePlain(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	svc := newTestService()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := &plainNode{svc: svc}
			conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), &capnprpc.Options{
				BootstrapClient: capnp.Client(schema.Node_ServerToClient(n)),
			})
			b.Cleanup(func() { conn.Close() })
		}
	}()
	return ln.Addr().String()
}

// plainNode hands out unguarded Echo capabilities.
type plainNode struct{ svc *testService }

func (n *plainNode) Echo(_ context.Context, call schema.Node_echo) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetEcho(schema.Echo_ServerToClient(&testEcho{svc: n.svc}))
}
func (n *plainNode) Raft(context.Context, schema.Node_raft) error { return nil }
func (n *plainNode) Info(context.Context, schema.Node_info) error { return nil }

// dialPlain connects with go-capnp's stream transport.
func dialPlain(b *testing.B, addr string) *plainConn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(c), nil)
	pc := &plainConn{conn: conn, node: schema.Node(conn.Bootstrap(context.Background()))}
	b.Cleanup(func() { pc.node.Release(); conn.Close() })
	return pc
}

type plainConn struct {
	conn *capnprpc.Conn
	node schema.Node
}

func (p *plainConn) Node() schema.Node { return p.node }

func (*plainNode) Kv(context.Context, schema.Node_kv) error               { return nil }
func (*plainNode) Status(context.Context, schema.Node_status) error       { return nil }
func (*plainNode) Admin(context.Context, schema.Node_admin) error         { return nil }
func (*plainNode) Login(context.Context, schema.Node_login) error         { return nil }
func (*plainNode) Challenge(context.Context, schema.Node_challenge) error { return nil }
func (*plainNode) Identity(context.Context, schema.Node_identity) error   { return nil }
