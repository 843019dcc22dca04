package raftnode_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

func serveNode(t *testing.T) string {
	t.Helper()
	n, err := raftnode.New(raftnode.Config{ID: 7, Version: "test", Advertise: "node-7", DataDir: t.TempDir(), Logger: rpctest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	_, addr := rpctest.Serve(t, rpc.Config{Bootstrap: n.Bootstrap})
	return addr
}

// pipelinedPing makes bootstrap.echo().ping(msg) without waiting for any
// intermediate answer and returns the reply.
func pipelinedPing(ctx context.Context, node schema.Node, msg string) (string, error) {
	ef, erel := node.Echo(ctx, nil)
	defer erel()
	echo := ef.Echo() // read the pipelined capability once (go-capnp deadlocks on a second read)
	pf, prel := echo.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg(msg) })
	defer prel()
	res, err := pf.Struct()
	if err != nil {
		return "", err
	}
	return res.Reply()
}

// With every answer from the node held back by the proxy, the node still
// receives and answers the ping: the client sent bootstrap, echo() and
// ping() without waiting for a single reply. Without pipelining the ping
// would never leave the client and the reply would never appear.
func TestPipelinedPingNeedsNoIntermediateAnswer(t *testing.T) {
	addr := serveNode(t)
	proxy := rpctest.NewProxy(t, addr, 0)
	proxy.Hold()
	cc := rpctest.Dial(t, proxy.Addr(), rpc.DialConfig{KeepAlive: -1})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	result := make(chan string, 1)
	go func() {
		reply, err := pipelinedPing(ctx, cc.Node(), "pipelined-probe")
		if err != nil {
			reply = "error: " + err.Error()
		}
		result <- reply
	}()
	rpctest.Eventually(t, 20*time.Second, "the node's reply to the pipelined ping, held at the proxy", func() bool {
		return bytes.Contains(proxy.Held(), []byte("echo:pipelined-probe"))
	})
	select {
	case r := <-result:
		t.Fatalf("client got %q while every answer was held", r)
	default:
	}
	proxy.Release()
	if r := <-result; r != "echo:pipelined-probe" {
		t.Fatalf("reply %q", r)
	}
}

func TestInfoDescribesTheNode(t *testing.T) {
	cc := rpctest.Dial(t, serveNode(t), rpc.DialConfig{})
	f, release := cc.Node().Info(context.Background(), nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	info, _ := res.Info()
	version, _ := info.Version()
	listen, _ := info.Listen()
	if info.Id() != 7 || version != "test" || listen != "node-7" {
		t.Fatalf("info: id %d version %q listen %q", info.Id(), version, listen)
	}
}

func TestNewRejectsNodeIDZero(t *testing.T) {
	if _, err := raftnode.New(raftnode.Config{}); err == nil {
		t.Fatal("New accepted node id 0")
	}
}
