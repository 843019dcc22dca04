package rpc_test

import (
	"context"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// An inline capability called in its own process (no connection) goes
// through the hook's Send: it answers, fails a panicking call, and says
// "unimplemented" for a method it does not serve.
func TestInlineCapabilityInProcess(t *testing.T) {
	svc := newTestService()
	e := &testEcho{svc: svc}
	echo := e.exportInline(rpc.NewExporter(rpctest.Logger(t)), false)
	defer echo.Release()

	mustPing(t, echo, "local")
	if _, err := ping(echo, "panic"); !exc.IsType(err, exc.Failed) {
		t.Fatalf("panicking inline handler: %v (type %v), want Failed", err, exc.TypeOf(err))
	}
	mustPing(t, echo, "after-panic")
	checkSubscribeUnimplemented(t, echo)
}

// Over a connection, a method the inline capability does not serve fails
// as unimplemented, and the capability keeps serving the others.
func TestInlineUnimplementedMethodOverTheNetwork(t *testing.T) {
	_, _, addr := serveExport(t, rpc.Config{}, true)
	echo := echoOf(t, rpctest.Dial(t, addr, rpc.DialConfig{}))
	checkSubscribeUnimplemented(t, echo)
	mustPing(t, echo, "still-served")
}

func checkSubscribeUnimplemented(t *testing.T, echo schema.Echo) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, release := echo.Subscribe(ctx, nil)
	defer release()
	if _, err := f.Struct(); !exc.IsType(err, exc.Unimplemented) {
		t.Fatalf("subscribe on an inline capability without it: %v (type %v), want Unimplemented", err, exc.TypeOf(err))
	}
}

// Methods given as rest are served as Export serves them, beside the
// inline ones, in process and over a connection.
func TestInlineWithRestServesTheOtherMethods(t *testing.T) {
	e := &testEcho{svc: newTestService()}
	echo := e.exportInline(rpc.NewExporter(rpctest.Logger(t)), true)
	defer echo.Release()
	mustPing(t, echo, "inline")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, release := echo.Subscribe(ctx, nil)
	defer release()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("subscribe, served by the rest: %v", err)
	}
}

// A call pipelined on the promise of an inline capability waits in
// go-capnp's queue until the promise resolves. When it is then delivered
// and refused (here: a method the capability does not serve), it fails
// and the server carries on. go-capnp dereferences the pipeline caller
// the capability returns there: a nil one crashed the process.
func TestInlineCallQueuedOnAPromiseIsRefusedCleanly(t *testing.T) {
	svc := newTestService()
	svc.inline = true
	svc.echoGate = make(chan struct{})
	_, addr := rpctest.Serve(t, rpc.Config{Bootstrap: svc.bootstrap})
	cc := rpctest.Dial(t, addr, rpc.DialConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ef, erel := cc.Node().Echo(ctx, nil)
	defer erel()
	// Read the pipelined capability once: a second ef.Echo() before the
	// answer resolves hangs in go-capnp (notes/capnp-go.md, section 5).
	echo := ef.Echo()
	sf, srel := echo.Subscribe(ctx, nil)
	defer srel()
	// One connection's calls are read in order: once info is answered,
	// the pipelined subscribe has been read and queued behind echo().
	inf, irel := cc.Node().Info(ctx, nil)
	_, err := inf.Struct()
	irel()
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	close(svc.echoGate)
	if _, err := sf.Struct(); !exc.IsType(err, exc.Unimplemented) {
		t.Fatalf("subscribe pipelined on an inline capability without it: %v (type %v), want Unimplemented", err, exc.TypeOf(err))
	}
	mustPing(t, echo, "after-refusal")
}

// shutdownBrand is a brand that counts its Shutdown calls.
type shutdownBrand struct{ n int }

func (b *shutdownBrand) Shutdown() { b.n++ }

// An inline capability whose brand has a Shutdown runs it once, when its
// last reference is released (as Export's shutdown runs), with or without
// other methods.
func TestInlineBrandShutdownRunsOnLastRelease(t *testing.T) {
	for _, withRest := range []bool{false, true} {
		b := &shutdownBrand{}
		var rest map[string]func(context.Context, *server.Call) error
		if withRest {
			rest = map[string]func(context.Context, *server.Call) error{
				"subscribe": func(context.Context, *server.Call) error { return nil },
			}
		}
		c := rpc.NewExporter(rpctest.Logger(t)).ExportInline(schema.Echo_Methods(nil, nil), nil, rest, b)
		extra := c.AddRef()
		c.Release()
		if b.n != 0 {
			t.Fatalf("rest %v: Shutdown ran with a reference left", withRest)
		}
		extra.Release()
		if b.n != 1 {
			t.Fatalf("rest %v: Shutdown ran %d times after the last release, want once", withRest, b.n)
		}
	}
}
