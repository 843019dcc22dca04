package rpc

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"
	"github.com/hashicorp/go-hclog"
)

// Exporter turns capability implementations into clients whose calls are
// guarded: a handler that panics is recovered, logged with its stack, and
// its call fails with an error, and calls are counted so a Server can let
// the ones in flight finish before it closes connections.
//
// A Server gives each connection an Exporter (ConnInfo.Exporter). Code
// outside a Server, such as a client exporting a callback, uses
// NewExporter.
type Exporter struct {
	gate *callGate
	log  hclog.Logger
	// calls counts the calls in flight on the connection this Exporter
	// belongs to (nil outside a Server): a connection with calls in
	// flight is never closed to make room for another.
	calls *atomic.Int64
	// check, if set, runs before every call of the capabilities exported
	// through this Exporter; an error fails the call (see WithCheck).
	check func() error
}

// WithCheck returns an Exporter like e whose capabilities first run check
// before every call they receive, and fail the call with its error: a
// grant that can end (a token that expires or is revoked) is checked once
// per call, in one place, for every capability it granted. Checks add up:
// e's own check, if any, runs first.
func (e *Exporter) WithCheck(check func() error) *Exporter {
	c := *e
	if prev := e.check; prev != nil {
		c.check = func() error {
			if err := prev(); err != nil {
				return err
			}
			return check()
		}
	} else {
		c.check = check
	}
	return &c
}

// Check runs the Exporter's check (see WithCheck), if any: for work a
// capability does on its own, such as delivering to a listener, that must
// end with the grant as its calls do.
func (e *Exporter) Check() error { return e.admit() }

// admit runs the Exporter's check for a call that arrived.
func (e *Exporter) admit() error {
	if e.check == nil {
		return nil
	}
	return e.check()
}

// enter counts a call in, unless the server is draining.
func (e *Exporter) enter() bool {
	if !e.gate.enter() {
		return false
	}
	if e.calls != nil {
		e.calls.Add(1)
	}
	return true
}

// leave counts a call out once its answer is queued.
func (e *Exporter) leave() {
	if e.calls != nil {
		e.calls.Add(-1)
	}
	e.gate.leave()
}

// NewExporter returns an Exporter not tied to any Server; log receives
// recovered panics (nil discards them).
func NewExporter(log hclog.Logger) *Exporter {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Exporter{gate: newCallGate(), log: log}
}

// Export returns a client for a capability implemented by methods, as
// produced by a generated XXX_Methods(nil, impl) function. brand is
// usually impl; shutdown, if not nil, runs when the last reference to the
// capability is released (including when its connection ends). The caller
// owns the returned client.
func (e *Exporter) Export(methods []server.Method, brand any, shutdown server.Shutdowner) capnp.Client {
	return capnp.NewClient(e.serve(methods, brand, shutdown))
}

// serve returns go-capnp's server of methods, each handler's panics
// recovered, behind gatedServer.
func (e *Exporter) serve(methods []server.Method, brand any, shutdown server.Shutdowner) *gatedServer {
	guarded := make([]server.Method, len(methods))
	for i, m := range methods {
		guarded[i] = server.Method{Method: m.Method, Impl: e.guard(m)}
	}
	return &gatedServer{Server: server.New(guarded, brand, shutdown), ex: e}
}

// errShuttingDown is returned for calls that arrive while the server drains.
// It is of type Disconnected so clients treat it as "try another node".
var errShuttingDown = exc.New(exc.Disconnected, "", "node is shutting down; retry on another node")

// guard recovers a panicking handler: the call fails, the node carries on.
func (e *Exporter) guard(m server.Method) func(context.Context, *server.Call) error {
	impl := m.Impl
	name := m.Method.InterfaceName + "." + m.Method.MethodName
	return func(ctx context.Context, call *server.Call) (err error) {
		defer func() {
			if r := recover(); r != nil {
				e.log.Error("recovered panic in capability handler; the call fails, the node carries on",
					"method", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = exc.New(exc.Failed, "", fmt.Sprintf("internal error in %s (details are in the node's log)", name))
			}
		}()
		return impl(ctx, call)
	}
}

// gatedServer is go-capnp's server, with each call counted in the gate
// from its delivery until its answer is queued for sending: a graceful
// shutdown that waits for the gate, then for the queued answers to be
// written (serverConn.flush), loses none. (Counting only while the
// handler ran let the gate go idle before go-capnp queued the answer.)
type gatedServer struct {
	*server.Server
	ex *Exporter
}

// Recv starts a call delivered by the RPC system.
func (g *gatedServer) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	if err := g.ex.admit(); err != nil {
		r.Reject(err)
		return failedCaller(r.Method, err)
	}
	if !g.ex.enter() {
		r.Reject(errShuttingDown)
		return failedCaller(r.Method, errShuttingDown)
	}
	r.Returner = &gatedReturner{Returner: r.Returner, ex: g.ex}
	if pc := g.Server.Recv(ctx, r); pc != nil {
		return pc
	}
	// go-capnp's server answered at once (unimplemented) and returned
	// no pipeline caller.
	return failedCaller(r.Method, errUnimplemented)
}

// Send starts a call made in this process, counted like a delivered one.
func (g *gatedServer) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return sendAsRecv(ctx, s, g.Recv)
}

// gatedReturner leaves the gate once the answer is queued.
type gatedReturner struct {
	capnp.Returner
	ex   *Exporter
	once sync.Once
}

func (g *gatedReturner) Return() {
	g.Returner.Return()
	g.once.Do(g.ex.leave)
}

// callGate counts calls in flight and, once closed, refuses new ones.
type callGate struct {
	mu      sync.Mutex
	active  int
	closing bool
	idle    chan struct{} // closed once closing and active == 0
}

func newCallGate() *callGate { return &callGate{idle: make(chan struct{})} }

func (g *callGate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.active++
	return true
}

func (g *callGate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.closing && g.active == 0 {
		close(g.idle)
	}
}

// close refuses new calls from now on and returns a channel that is closed
// when the last call in flight has returned.
func (g *callGate) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing {
		g.closing = true
		if g.active == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
