package rpc

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"
)

// InlineServe starts a call to a method exported with
// Exporter.ExportInline. It runs on the goroutine that delivers the call
// (for a remote call, the connection's receive goroutine, in arrival
// order), so it must not block for long: it reads the arguments, hands
// the work on and returns. The call is answered by exactly one Return or
// ReturnResults, from any goroutine, during the call or later.
type InlineServe func(call *InlineCall)

// inlineMethod is one method served inline.
type inlineMethod struct {
	method capnp.Method
	serve  InlineServe
}

// ExportInline returns a client for a capability whose calls are served
// without go-capnp's per-capability queue: go-capnp's server package runs
// every call on a queue goroutine and, to let the next call start, on a
// goroutine of its own; ExportInline hands the call straight to its
// InlineServe on the delivering goroutine and lets whoever finishes the
// work answer it. For a hot method whose work is queued to another
// goroutine anyway (a Raft message or a write for the node's loop), that
// is three goroutine hand-offs and a goroutine start fewer per call.
//
// descs is the generated XXX_Methods(nil, nil) list of the interface:
// only its method ids and names are used. The methods named in inline are
// served inline; those named in rest are served as Export serves them
// (for methods that block or are rare). A method named in neither fails
// as unimplemented, and ExportInline logs it: a schema method without a
// server here.
//
// Calls are guarded as with Export: a handler that panics fails its call
// (the panic is logged with its stack), and calls count towards the
// Server's drain on shutdown until they are answered. A call whose
// context ends (the caller cancelled it, or the connection closed) is
// answered at once with the context's error; a later answer is ignored.
// Results must not carry capabilities. Calls to inline methods keep their
// order among themselves, and so do the others, but an inline call may
// overtake an earlier call to one of the rest. The caller owns the
// returned client. If brand implements server.Shutdowner, its Shutdown
// runs when the last reference to the capability is released (including
// when its connection ends), as Export's shutdown does.
func (e *Exporter) ExportInline(descs []server.Method, inline map[string]InlineServe,
	rest map[string]func(context.Context, *server.Call) error, brand any) capnp.Client {
	h := &inlineHook{e: e, brand: brand, methods: make(map[methodKey]inlineMethod, len(inline))}
	var others []server.Method
	for _, d := range descs {
		name := d.Method.MethodName
		if f := inline[name]; f != nil {
			h.methods[methodKey{d.Method.InterfaceID, d.Method.MethodID}] = inlineMethod{d.Method, f}
		} else if f := rest[name]; f != nil {
			others = append(others, server.Method{Method: d.Method, Impl: f})
		} else {
			e.log.Error("capability method has no server; its calls fail as unimplemented",
				"interface", d.Method.InterfaceName, "method", name)
		}
	}
	if len(others) > 0 {
		h.rest = e.serve(others, brand, nil)
	}
	return capnp.NewClient(h)
}

type methodKey struct {
	iface  uint64
	method uint16
}

// inlineHook is the capnp.ClientHook behind ExportInline.
type inlineHook struct {
	e       *Exporter
	brand   any
	methods map[methodKey]inlineMethod
	rest    *gatedServer // the methods served as Export does; nil if none
}

var errUnimplemented = capnp.Unimplemented("method not implemented by this capability")

// Recv starts a call delivered by the RPC system.
func (h *inlineHook) Recv(ctx context.Context, r capnp.Recv) capnp.PipelineCaller {
	m, ok := h.methods[methodKey{r.Method.InterfaceID, r.Method.MethodID}]
	if !ok {
		if h.rest != nil {
			return h.rest.Recv(ctx, r)
		}
		r.Reject(errUnimplemented)
		return failedCaller(r.Method, errUnimplemented)
	}
	if err := h.e.admit(); err != nil {
		r.Reject(err)
		return failedCaller(r.Method, err)
	}
	if !h.e.enter() {
		r.Reject(errShuttingDown)
		return failedCaller(r.Method, errShuttingDown)
	}
	call := &InlineCall{ctx: ctx, recv: r, ex: h.e, answers: capnp.NewAnswerQueue(r.Method)}
	// The lock keeps an already ended context's callback (run at once, on
	// its own goroutine) from answering before stopWatch is set.
	call.mu.Lock()
	call.stopWatch = context.AfterFunc(ctx, func() {
		call.Return(fmt.Errorf("%s.%s: %w", r.Method.InterfaceName, r.Method.MethodName, context.Cause(ctx)))
	})
	call.mu.Unlock()
	h.serve(m, call)
	call.mu.Lock()
	if !call.keepArgs {
		r.ReleaseArgs()
	}
	call.mu.Unlock()
	// Calls pipelined on this call's results queue here until it is
	// answered (as with go-capnp's own server).
	return call.answers
}

// failedCaller is the pipeline caller of a call answered with err: calls
// pipelined on it fail with err. Recv never returns nil, even for a call
// it has answered: go-capnp's AnswerQueue, delivering the calls that were
// queued on an answer, dereferences what Recv returns (a nil there
// crashed a node that was shutting down).
func failedCaller(m capnp.Method, err error) capnp.PipelineCaller {
	aq := capnp.NewAnswerQueue(m)
	aq.Reject(err)
	return aq
}

// serve runs m's InlineServe, turning a panic into a failed call.
func (h *inlineHook) serve(m inlineMethod, call *InlineCall) {
	defer func() {
		if r := recover(); r != nil {
			name := m.method.InterfaceName + "." + m.method.MethodName
			h.e.log.Error("recovered panic in capability handler; the call fails, the node carries on",
				"method", name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			call.Return(exc.New(exc.Failed, "", fmt.Sprintf("internal error in %s (details are in the node's log)", name)))
		}
	}()
	m.serve(call)
}

// Send starts a call made in this process on the client.
func (h *inlineHook) Send(ctx context.Context, s capnp.Send) (*capnp.Answer, capnp.ReleaseFunc) {
	return sendAsRecv(ctx, s, h.Recv)
}

// sendAsRecv makes the in-process call s through recv, as the RPC system
// would deliver it, so local calls are served and counted like remote
// ones.
func sendAsRecv(ctx context.Context, s capnp.Send, recv func(context.Context, capnp.Recv) capnp.PipelineCaller) (*capnp.Answer, capnp.ReleaseFunc) {
	r := capnp.Recv{Method: s.Method, ReleaseArgs: func() {}}
	if s.PlaceArgs != nil {
		_, seg := capnp.NewMultiSegmentMessage(nil)
		args, err := capnp.NewRootStruct(seg, s.ArgsSize)
		if err == nil {
			err = s.PlaceArgs(args)
		}
		if err != nil {
			seg.Message().Release()
			return capnp.ErrorAnswer(s.Method, exc.WrapError("place args", err)), func() {}
		}
		var once sync.Once
		r.Args = args
		r.ReleaseArgs = func() { once.Do(args.Message().Release) }
	}
	ret := new(capnp.StructReturner)
	r.Returner = ret
	return ret.Answer(s.Method, recv(ctx, r))
}

// Brand returns the brand given to ExportInline.
func (h *inlineHook) Brand() capnp.Brand { return capnp.Brand{Value: h.brand} }

// Shutdown releases the server of the other methods and runs the brand's
// Shutdown, if it has one; calls in flight still get answered.
func (h *inlineHook) Shutdown() {
	if h.rest != nil {
		h.rest.Shutdown()
	}
	if s, ok := h.brand.(server.Shutdowner); ok {
		s.Shutdown()
	}
}

func (h *inlineHook) String() string { return fmt.Sprintf("inline capability %T", h.brand) }

// InlineCall is one call to a capability exported with ExportInline.
type InlineCall struct {
	ctx       context.Context
	recv      capnp.Recv
	ex        *Exporter
	answers   *capnp.AnswerQueue
	stopWatch func() bool

	mu       sync.Mutex
	answered bool
	keepArgs bool // the arguments are released by KeepArgs' caller
}

// Context is the call's context: it ends when the caller cancels the call
// or the connection closes (the call has then been answered already).
func (c *InlineCall) Context() context.Context { return c.ctx }

// Args returns the call's parameters. They are valid until the
// InlineServe returns, unless it calls KeepArgs.
func (c *InlineCall) Args() capnp.Struct { return c.recv.Args }

// KeepArgs keeps the parameters (and byte slices read from them) valid
// after the InlineServe returns, for work that reads them on another
// goroutine, until that work calls the returned release function (which
// may be called more than once). The call may be answered before or
// after. It must be called during the InlineServe.
func (c *InlineCall) KeepArgs() (release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keepArgs = true
	var once sync.Once
	return func() { once.Do(c.recv.ReleaseArgs) }
}

// Return answers the call with err, or with empty results if err is nil.
// Only the first answer counts; later ones are ignored.
func (c *InlineCall) Return(err error) { c.answer(err, capnp.ObjectSize{}, nil) }

// ReturnResults answers the call with results of size sz, filled in by
// fill (an error from fill fails the call). Only the first answer counts;
// later ones are ignored, and their fill is not called.
func (c *InlineCall) ReturnResults(sz capnp.ObjectSize, fill func(capnp.Struct) error) {
	c.answer(nil, sz, fill)
}

func (c *InlineCall) answer(err error, sz capnp.ObjectSize, fill func(capnp.Struct) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.answered {
		return
	}
	c.answered = true
	c.stopWatch()
	ret := c.recv.Returner
	var results capnp.Struct
	if err == nil && fill != nil {
		results, err = ret.AllocResults(sz)
		if err == nil {
			err = fill(results)
		}
	}
	ret.PrepareReturn(err)
	if err == nil {
		c.answers.Fulfill(results.ToPtr())
	} else {
		c.answers.Reject(err)
	}
	ret.Return()
	ret.ReleaseResults()
	c.ex.leave()
}

// ResultsSize is the size of the results struct that newResults (a
// generated NewXXX_Results function) allocates: the size to give
// ReturnResults.
func ResultsSize[R ~capnp.StructKind](newResults func(*capnp.Segment) (R, error)) capnp.ObjectSize {
	_, seg := capnp.NewSingleSegmentMessage(nil)
	r, err := newResults(seg)
	if err != nil {
		// Allocating one struct in a fresh message does not fail.
		panic(fmt.Sprintf("rpc: sizing results: %v", err))
	}
	return capnp.Struct(r).Size()
}
