package rpc_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// testService is a Node whose Echo can be made to panic or block, to test
// the server rather than the echo service.
type testService struct {
	inline     bool          // serve Echo with ExportInline instead of Export
	echoGate   chan struct{} // if set, Node.echo() answers once it is closed
	bootstraps atomic.Int64
	block      chan struct{} // "block" pings wait for this to close
	entered    chan string   // each "block" ping reports here on entry
	cancelled  chan string   // each "block" ping whose call is cancelled reports here
}

func newTestService() *testService {
	return &testService{block: make(chan struct{}), entered: make(chan string, 16), cancelled: make(chan string, 16)}
}

func (s *testService) bootstrap(ci *rpc.ConnInfo) capnp.Client {
	s.bootstraps.Add(1)
	n := &testNode{svc: s, ci: ci}
	return ci.Exporter.Export(schema.Node_Methods(nil, n), n, nil)
}

type testNode struct {
	svc *testService
	ci  *rpc.ConnInfo
}

func (n *testNode) Echo(ctx context.Context, call schema.Node_echo) error {
	if g := n.svc.echoGate; g != nil {
		call.Go() // let the connection's other calls through meanwhile
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e := &testEcho{svc: n.svc}
	if n.svc.inline {
		return res.SetEcho(e.exportInline(n.ci.Exporter, false))
	}
	return res.SetEcho(schema.Echo(n.ci.Exporter.Export(schema.Echo_Methods(nil, e), e, nil)))
}

// Raft marks the connection as a peer's, as a node does when a peer asks
// for its Raft capability (the capability itself is not served here).
func (n *testNode) Raft(context.Context, schema.Node_raft) error {
	n.ci.MarkPeer()
	return nil
}

// Info reports the connection id the handler's context carries, so tests
// can check that handlers see their own connection.
func (n *testNode) Info(ctx context.Context, call schema.Node_info) error {
	ci, ok := rpc.ConnFromContext(ctx)
	if !ok {
		panic("no ConnInfo in handler context")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	info, err := res.NewInfo()
	if err != nil {
		return err
	}
	info.SetId(ci.ID)
	return info.SetListen(ci.RemoteAddr.String())
}

type testEcho struct{ svc *testService }

func (e *testEcho) Ping(ctx context.Context, call schema.Echo_ping) error {
	msg, err := call.Args().Msg()
	if err != nil {
		return err
	}
	switch {
	case msg == "panic":
		panic("handler panicked on purpose")
	case strings.HasPrefix(msg, "block"):
		if err := e.block(ctx, msg); err != nil {
			return err
		}
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if big, ok := bigReply(msg); ok {
		return res.SetReply(big)
	}
	return res.SetReply("echo:" + msg)
}

// bigReply is the test service's answer to a ping of "big:N": N bytes.
// (Other pings are answered "echo:" + msg, built where it is set, so that
// benchmarks see no extra allocation.)
func bigReply(msg string) (string, bool) {
	if size, ok := strings.CutPrefix(msg, "big:"); ok {
		if n, err := strconv.Atoi(size); err == nil {
			return strings.Repeat("x", n), true
		}
	}
	return "", false
}

func (e *testEcho) Subscribe(context.Context, schema.Echo_subscribe) error { return nil }

// block serves a "block" ping: it reports msg on entered and waits for
// the service's block channel to close, or for ctx to end (reporting msg
// on cancelled and returning ctx's error).
func (e *testEcho) block(ctx context.Context, msg string) error {
	e.svc.entered <- msg
	select {
	case <-e.svc.block:
		return nil
	case <-ctx.Done():
		select {
		case e.svc.cancelled <- msg:
		default:
		}
		return ctx.Err()
	}
}

// exportInline exports e through ExportInline: ping served as Ping does,
// on a goroutine of its own (as a node's loop would) that answers the
// call; subscribe, if withRest, by go-capnp's server, else unimplemented.
func (e *testEcho) exportInline(exp *rpc.Exporter, withRest bool) schema.Echo {
	var rest map[string]func(context.Context, *server.Call) error
	if withRest {
		rest = map[string]func(context.Context, *server.Call) error{
			"subscribe": func(ctx context.Context, c *server.Call) error {
				return e.Subscribe(ctx, schema.Echo_subscribe{Call: c})
			},
		}
	}
	inline := map[string]rpc.InlineServe{"ping": e.servePing}
	return schema.Echo(exp.ExportInline(schema.Echo_Methods(nil, nil), inline, rest, e))
}

var pingResultsSize = rpc.ResultsSize(schema.NewEcho_ping_Results)

func (e *testEcho) servePing(call *rpc.InlineCall) {
	msg, err := schema.Echo_ping_Params(call.Args()).Msg()
	if err != nil {
		call.Return(err)
		return
	}
	if msg == "panic" {
		panic("handler panicked on purpose")
	}
	ctx := call.Context()
	go func() {
		if strings.HasPrefix(msg, "block") {
			_ = e.block(ctx, msg)
		}
		// After a cancellation the call is answered already; this
		// answer is then ignored.
		call.ReturnResults(pingResultsSize, func(s capnp.Struct) error {
			if big, ok := bigReply(msg); ok {
				return schema.Echo_ping_Results(s).SetReply(big)
			}
			return schema.Echo_ping_Results(s).SetReply("echo:" + msg)
		})
	}()
}

// serve starts a test service with cfg (Bootstrap is filled in).
func serve(t testing.TB, cfg rpc.Config) (*testService, *rpc.Server, string) {
	t.Helper()
	return serveExport(t, cfg, false)
}

// serveFunc starts a test service.
type serveFunc func(t testing.TB, cfg rpc.Config) (*testService, *rpc.Server, string)

// withBothExports runs test with Echo served through Export and through
// ExportInline: both must behave the same for callers.
func withBothExports(t *testing.T, test func(t *testing.T, serve serveFunc)) {
	for _, inline := range []bool{false, true} {
		name := map[bool]string{false: "Export", true: "ExportInline"}[inline]
		t.Run(name, func(t *testing.T) {
			test(t, func(t testing.TB, cfg rpc.Config) (*testService, *rpc.Server, string) {
				t.Helper()
				return serveExport(t, cfg, inline)
			})
		})
	}
}

// serveExport is serve, with Echo exported inline if inline is set.
func serveExport(t testing.TB, cfg rpc.Config, inline bool) (*testService, *rpc.Server, string) {
	t.Helper()
	svc := newTestService()
	svc.inline = inline
	cfg.Bootstrap = svc.bootstrap
	srv, addr := rpctest.Serve(t, cfg)
	return svc, srv, addr
}

// nodeConn is what echoOf needs of a connection.
type nodeConn interface{ Node() schema.Node }

// echoOf pipelines node.echo() once and keeps the capability.
func echoOf(t testing.TB, cc nodeConn) schema.Echo {
	t.Helper()
	f, release := cc.Node().Echo(context.Background(), nil)
	e := f.Echo().AddRef()
	release()
	t.Cleanup(e.Release)
	return e
}

// ping calls e.ping(msg) with a bounded wait and returns reply or error.
func ping(e schema.Echo, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, release := e.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg(msg) })
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", err
	}
	return res.Reply()
}

// mustPing fails the test unless e answers msg correctly.
func mustPing(t testing.TB, e schema.Echo, msg string) {
	t.Helper()
	reply, err := ping(e, msg)
	if err != nil {
		t.Fatalf("ping %q: %v", msg, err)
	}
	if reply != "echo:"+msg {
		t.Fatalf("ping %q: reply %q", msg, reply)
	}
}

func (n *testNode) Kv(context.Context, schema.Node_kv) error               { return nil }
func (n *testNode) Status(context.Context, schema.Node_status) error       { return nil }
func (n *testNode) Admin(context.Context, schema.Node_admin) error         { return nil }
func (n *testNode) Login(context.Context, schema.Node_login) error         { return nil }
func (n *testNode) Challenge(context.Context, schema.Node_challenge) error { return nil }

// Identity reports what the connection's verified client certificate
// names, as rpc.ConnInfo.Certificate reads it inside a handler: the role
// in the flag of its name, and the subject.
func (n *testNode) Identity(ctx context.Context, call schema.Node_identity) error {
	ci, ok := rpc.ConnFromContext(ctx)
	if !ok {
		panic("no ConnInfo in handler context")
	}
	role, subject, ok := ci.Certificate()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	id, err := res.NewIdentity()
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	id.SetPeer(role == rpc.RolePeer)
	id.SetOperator(role == rpc.RoleOperator)
	id.SetClient(role == rpc.RoleClient)
	return id.SetSubject(subject)
}
