package rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/schema"
)

// fuzzNode answers every Node method with an error; the fuzzer is after the
// receive path, not the handlers.
type fuzzNode struct{}

func (fuzzNode) Echo(context.Context, schema.Node_echo) error { return nil }
func (fuzzNode) Raft(context.Context, schema.Node_raft) error { return nil }
func (fuzzNode) Info(context.Context, schema.Node_info) error { return nil }

// validBootstrapFrames returns the bytes a real client sends to bootstrap
// and call node.info(), as a seed the fuzzer can mutate into near-valid
// messages.
func validBootstrapFrames(t testing.TB) []byte {
	client, server := net.Pipe()
	var captured bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		server.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := server.Read(buf)
			captured.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	conn := capnprpc.NewConn(capnprpc.NewStreamTransport(client), nil)
	node := schema.Node(conn.Bootstrap(context.Background()))
	_, release := node.Info(context.Background(), nil)
	<-done
	// Nobody answers, so close before releasing what waits on an answer.
	conn.Close()
	server.Close()
	release()
	node.Release()
	return captured.Bytes()
}

// FuzzServerConnection feeds arbitrary bytes to a served connection: the
// process must not panic, memory must stay bounded by the message size
// limit, and the connection must end once the peer hangs up.
//
//	go test -run '^$' -fuzz FuzzServerConnection -fuzztime 60s ./rpc/
func FuzzServerConnection(f *testing.F) {
	hdr := func(segs, size uint32) []byte {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, segs)
		binary.LittleEndian.PutUint32(b[4:], size)
		return b
	}
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(hdr(0, 60<<17))
	f.Add(hdr(0x7fffffff, 1))
	f.Add(append(hdr(0, 2), make([]byte, 16)...))
	f.Add(append(hdr(1, 1), hdr(1, 0)...))
	f.Add(validBootstrapFrames(f))

	log := hclog.NewNullLogger()
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		transport, _ := newTransport(server, limits{maxMessageSize: 1 << 20, frame: time.Second, write: time.Second}, nil)
		ex := &Exporter{gate: newCallGate(), log: log}
		impl := fuzzNode{}
		conn := capnprpc.NewConn(transport, &capnprpc.Options{
			BootstrapClient: ex.Export(schema.Node_Methods(nil, impl), impl, nil),
			Logger:          capnpLogger{log},
		})
		// Drain what the server writes so its sends never block.
		go func() { _, _ = bytes.NewBuffer(nil).ReadFrom(client) }()
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write(data)
		client.Close()
		select {
		case <-conn.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection still open 10s after its peer hung up")
		}
	})
}

func (fuzzNode) Kv(context.Context, schema.Node_kv) error               { return nil }
func (fuzzNode) Status(context.Context, schema.Node_status) error       { return nil }
func (fuzzNode) Admin(context.Context, schema.Node_admin) error         { return nil }
func (fuzzNode) Login(context.Context, schema.Node_login) error         { return nil }
func (fuzzNode) Challenge(context.Context, schema.Node_challenge) error { return nil }
func (fuzzNode) Identity(context.Context, schema.Node_identity) error   { return nil }
