package transport

import (
	"context"
	"fmt"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Handler is implemented by the node's driver.
type Handler interface {
	// Handle delivers an inbound message to the driver's loop and waits
	// for the response message the core produces for it (ok=false: none,
	// answered with term 0). It returns early with ctx's error.
	//
	// The message's slices are the driver's to keep.
	//
	// Handle is called from one goroutine per call. For the calls of one
	// capability (one peer connection), the calls to Handle start in
	// arrival order, but two goroutines may race to the driver. Implement
	// Deliverer to make the order strict (and to save the goroutine).
	Handle(ctx context.Context, m raft.Message) (resp raft.Message, ok bool, err error)
}

// Deliverer is an optional extension of Handler for a driver that answers
// from its own goroutine. If the Handler implements it, the server calls
// Deliver (and not Handle) for the calls of one capability one after
// another in arrival order, on the connection's receive goroutine.
type Deliverer interface {
	// Deliver hands m to the driver's loop without blocking. The driver
	// then calls reply exactly once, from any goroutine, with the same
	// meaning as Handle's results; reply encodes the response and queues
	// it for sending without blocking. m's slices are the driver's to keep.
	Deliver(m raft.Message, reply func(resp raft.Message, ok bool, err error))
}

// ServerConfig configures the Raft capability served on one connection.
type ServerConfig struct {
	// ClusterID and LocalID are this node's: a request whose header names
	// another cluster or another receiver is refused.
	ClusterID, LocalID uint64
	// Handler receives the inbound messages.
	Handler Handler
	// Logger receives refusals and handler errors; nil uses the
	// connection's logger.
	Logger hclog.Logger
	// PeerID, when non-zero, is the member the connection proved to be
	// (the id its credential named): a request whose header names another
	// sender is refused, so a member cannot speak for another.
	PeerID uint64
	// ForwardKV and ForwardAdmin return the capabilities a member hands
	// its clients' and operators' calls to (Raft.kv and Raft.admin):
	// unrestricted, since the forwarding node confined each call to its
	// caller's grant. The caller owns the returned client. Nil refuses
	// the method.
	ForwardKV    func() schema.KV
	ForwardAdmin func() schema.Admin
	// MaxInFlight bounds the calls of one capability the Handler holds
	// at once (default 256, beyond any sender's window); a further call
	// waits, and the connection is not read meanwhile, until one is
	// answered, which holds back a peer that pipelines without bound.
	MaxInFlight int
}

// DefaultMaxInFlight is the default ServerConfig.MaxInFlight.
const DefaultMaxInFlight = 256

// errNoHandler fails every call of a capability created without a Handler.
var errNoHandler = exc.New(exc.Failed, "", "raft: this node has no Raft handler")

// NewServer returns the Raft capability that Node.raft() hands out on one
// connection, exported inline through conn.Exporter (handler panics are
// recovered). The caller owns the returned client.
//
// Each call is decoded and validated on the connection's receive
// goroutine (a malformed or refused request fails the call with an error
// and is logged; nothing panics), handed to the Handler in arrival order,
// and answered with the response the core produced, encoded by whoever
// delivers it.
func NewServer(cfg ServerConfig, conn *rpc.ConnInfo) capnp.Client {
	log := cfg.Logger
	if log == nil {
		log = conn.Logger
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	s := &raftServer{cfg: cfg, log: log.Named("raft-server"), slots: make(chan struct{}, cfg.MaxInFlight)}
	s.dlv, _ = cfg.Handler.(Deliverer)
	return conn.Exporter.ExportInline(schema.Raft_Methods(nil, nil), s.inlineMethods(), s.restMethods(), s)
}

// raftServer serves one connection's Raft capability.
type raftServer struct {
	cfg ServerConfig
	log hclog.Logger
	dlv Deliverer
	// slots holds a token per call the Handler holds (MaxInFlight).
	slots chan struct{}
}

// inlineMethods returns the servers of the capability's methods, by
// name in the schema.
func (s *raftServer) inlineMethods() map[string]rpc.InlineServe {
	return map[string]rpc.InlineServe{
		"requestVote":     serveInline(s, "requestVote", decodeVote, schema.NewRequestVote_requestVote_Results, encodeVoteResp),
		"appendEntries":   serveInline(s, "appendEntries", decodeAppend, schema.NewAppendEntries_appendEntries_Results, encodeAppendResp),
		"installSnapshot": serveInline(s, "installSnapshot", decodeSnap, schema.NewInstallSnapshot_installSnapshot_Results, encodeSnapResp),
		"readIndex":       serveInline(s, "readIndex", decodeReadIndex, schema.NewReadIndex_readIndex_Results, encodeReadIndexResp),
		"timeoutNow":      s.timeoutNow,
	}
}

// refuse logs and returns the error for a request that is not accepted.
func (s *raftServer) refuse(method string, err error) error {
	s.log.Warn("refused Raft request", "method", method, "error", err)
	return exc.New(exc.Failed, "", fmt.Sprintf("raft %s: %v", method, err))
}

// deliver hands m to the Handler, holding a slot until it replies. It
// must be called in arrival order; reply runs exactly once.
func (s *raftServer) deliver(call *rpc.InlineCall, m raft.Message, reply func(raft.Message, bool, error)) {
	if s.cfg.Handler == nil {
		call.Return(errNoHandler)
		return
	}
	ctx := call.Context()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		call.Return(ctx.Err())
		return
	}
	done := func(resp raft.Message, ok bool, err error) {
		<-s.slots
		reply(resp, ok, err)
	}
	if s.dlv != nil {
		s.dlv.Deliver(m, done)
		return
	}
	go func() { done(s.cfg.Handler.Handle(ctx, m)) }()
}

// answer checks the Handler's response against the request.
func (s *raftServer) answer(req, resp raft.Message, ok bool, err error) (raft.Message, bool, error) {
	if err != nil {
		s.log.Debug("handler failed", "msg", req.Type, "from", req.From, "error", err)
		return resp, false, fmt.Errorf("raft %s from %d: %w", req.Type, req.From, err)
	}
	if ok && (!Carries(req.Type, resp) || resp.Term == 0) {
		s.log.Warn("handler answered with a message the call cannot carry; answering none",
			"request", req.Type, "response", resp.String())
		ok = false
	}
	return resp, ok, nil
}

// serveInline returns the server of one request method: decode and check
// the request, hand it to the driver, and answer with the response the
// core produced, or "no response".
func serveInline[P, R ~capnp.StructKind](s *raftServer, name string,
	decode func(P, uint64, uint64) (raft.Message, error),
	newResults func(*capnp.Segment) (R, error),
	encode func(R, raft.Message, bool) error) rpc.InlineServe {
	size := rpc.ResultsSize(newResults)
	return func(call *rpc.InlineCall) {
		m, err := decode(P(call.Args()), s.cfg.ClusterID, s.cfg.LocalID)
		if err == nil {
			err = s.checkSender(m.From)
		}
		if err != nil {
			call.Return(s.refuse(name, err))
			return
		}
		s.deliver(call, m, func(resp raft.Message, ok bool, err error) {
			if resp, ok, err = s.answer(m, resp, ok, err); err != nil {
				call.Return(err)
				return
			}
			call.ReturnResults(size, func(res capnp.Struct) error { return encode(R(res), resp, ok) })
		})
	}
}

// timeoutNow serves MsgTimeoutNow; the call has no result.
func (s *raftServer) timeoutNow(call *rpc.InlineCall) {
	m, err := decodeTimeoutNow(schema.TimeoutNow_timeoutNow_Params(call.Args()), s.cfg.ClusterID, s.cfg.LocalID)
	if err == nil {
		err = s.checkSender(m.From)
	}
	if err != nil {
		call.Return(s.refuse("timeoutNow", err))
		return
	}
	s.deliver(call, m, func(_ raft.Message, _ bool, err error) {
		if err != nil {
			s.log.Debug("handler failed", "msg", m.Type, "from", m.From, "error", err)
			err = fmt.Errorf("raft %s from %d: %w", m.Type, m.From, err)
		}
		call.Return(err)
	})
}

// checkSender refuses a message whose sender is not the member the
// connection proved to be (ServerConfig.PeerID).
func (s *raftServer) checkSender(from uint64) error {
	if s.cfg.PeerID != 0 && from != s.cfg.PeerID {
		return fmt.Errorf("refused: message from node %d on a connection authenticated as node %d", from, s.cfg.PeerID)
	}
	return nil
}
