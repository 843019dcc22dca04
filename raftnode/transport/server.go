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
	// arrival order; a driver whose Handle hands m to its loop as its first
	// blocking step sees them in that order except for the scheduling race
	// between two goroutines. Implement Enqueuer to make the order strict.
	Handle(ctx context.Context, m raft.Message) (resp raft.Message, ok bool, err error)
}

// Enqueuer is an optional extension of Handler that splits Handle in two,
// which lets the server keep the arrival order of pipelined calls exactly.
// If the Handler implements it, the server calls Enqueue (and not Handle)
// for the calls of one capability one after another in arrival order, each
// only once the previous Enqueue returned, and then waits with the
// returned function.
type Enqueuer interface {
	// Enqueue hands m to the driver's loop (returning ctx's error if it
	// ends first) without waiting for the response, and returns a function
	// that waits for it with the same meaning as Handle's results.
	Enqueue(ctx context.Context, m raft.Message) (wait func(ctx context.Context) (resp raft.Message, ok bool, err error), err error)
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
	// MaxInFlight bounds the calls of one capability being handled at
	// once (default 256, beyond any sender's window); a further call
	// waits, unread, until one finishes, which holds back a peer that
	// pipelines without bound.
	MaxInFlight int
}

// DefaultMaxInFlight is the default ServerConfig.MaxInFlight.
const DefaultMaxInFlight = 256

// errNoHandler fails every call of a capability created without a Handler.
var errNoHandler = exc.New(exc.Failed, "", "raft: this node has no Raft handler")

// NewServer returns the Raft capability that Node.raft() hands out on one
// connection, exported through conn.Exporter (handler panics are
// recovered). The caller owns the returned client.
//
// Each method decodes and validates its request (a malformed or refused
// request fails the call with an error and is logged; nothing panics),
// converts it, lets the capability read the next pipelined call
// (call.Go) while this one waits, passes the message to the Handler in
// arrival order, and encodes the response.
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
	s.enq, _ = cfg.Handler.(Enqueuer)
	closed := make(chan struct{})
	close(closed)
	s.tail = closed
	return conn.Exporter.Export(schema.Raft_Methods(nil, s), s, nil)
}

// raftServer serves one connection's Raft capability. go-capnp runs its
// methods one at a time in arrival order until each calls call.Go; tail
// chains the calls so that each reaches the Handler after its predecessor.
type raftServer struct {
	cfg ServerConfig
	log hclog.Logger
	enq Enqueuer

	// tail is closed once the latest call has been handed to the Handler.
	// Only touched before call.Go, that is, by one call at a time.
	tail chan struct{}
	// slots holds a token per call being handled (MaxInFlight).
	slots chan struct{}
}

// refuse logs and returns the error for a request that is not accepted.
func (s *raftServer) refuse(method string, err error) error {
	s.log.Warn("refused Raft request", "method", method, "error", err)
	return exc.New(exc.Failed, "", fmt.Sprintf("raft %s: %v", method, err))
}

// handle runs the ordered hand-off and the wait for one decoded request.
// It must be called before call.Go; goFn is call.Go.
func (s *raftServer) handle(ctx context.Context, goFn func(), m raft.Message) (raft.Message, bool, error) {
	if s.cfg.Handler == nil {
		return raft.Message{}, false, errNoHandler
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return raft.Message{}, false, ctx.Err()
	}
	defer func() { <-s.slots }()
	prev := s.tail
	mine := make(chan struct{})
	s.tail = mine
	goFn()
	select {
	case <-prev:
	case <-ctx.Done():
		close(mine)
		return raft.Message{}, false, ctx.Err()
	}
	if s.enq != nil {
		wait, err := s.enq.Enqueue(ctx, m)
		close(mine)
		if err != nil {
			return raft.Message{}, false, err
		}
		return wait(ctx)
	}
	close(mine)
	return s.cfg.Handler.Handle(ctx, m)
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

// serveCall serves one request method: decode and check the request,
// hand it to the driver (letting the next call on the capability start)
// and encode the response the core produced, or "no response".
func serveCall[P, R any](ctx context.Context, s *raftServer, name string, args P,
	decode func(P, uint64, uint64) (raft.Message, error), next func(),
	alloc func() (R, error), encode func(R, raft.Message, bool) error) error {
	m, err := decode(args, s.cfg.ClusterID, s.cfg.LocalID)
	if err != nil {
		return s.refuse(name, err)
	}
	resp, ok, err := s.handle(ctx, next, m)
	if resp, ok, err = s.answer(m, resp, ok, err); err != nil {
		return err
	}
	res, err := alloc()
	if err != nil {
		return err
	}
	return encode(res, resp, ok)
}

// RequestVote serves MsgVote.
func (s *raftServer) RequestVote(ctx context.Context, call schema.RequestVote_requestVote) error {
	return serveCall(ctx, s, "requestVote", call.Args(), decodeVote, call.Go, call.AllocResults, encodeVoteResp)
}

// AppendEntries serves MsgApp and MsgHeartbeat.
func (s *raftServer) AppendEntries(ctx context.Context, call schema.AppendEntries_appendEntries) error {
	return serveCall(ctx, s, "appendEntries", call.Args(), decodeAppend, call.Go, call.AllocResults, encodeAppendResp)
}

// InstallSnapshot serves MsgSnap.
func (s *raftServer) InstallSnapshot(ctx context.Context, call schema.InstallSnapshot_installSnapshot) error {
	return serveCall(ctx, s, "installSnapshot", call.Args(), decodeSnap, call.Go, call.AllocResults, encodeSnapResp)
}

// ReadIndex serves MsgReadIndex.
func (s *raftServer) ReadIndex(ctx context.Context, call schema.ReadIndex_readIndex) error {
	return serveCall(ctx, s, "readIndex", call.Args(), decodeReadIndex, call.Go, call.AllocResults, encodeReadIndexResp)
}

// TimeoutNow serves MsgTimeoutNow; the call has no result.
func (s *raftServer) TimeoutNow(ctx context.Context, call schema.TimeoutNow_timeoutNow) error {
	m, err := decodeTimeoutNow(call.Args(), s.cfg.ClusterID, s.cfg.LocalID)
	if err != nil {
		return s.refuse("timeoutNow", err)
	}
	_, _, err = s.handle(ctx, call.Go, m)
	if err != nil {
		s.log.Debug("handler failed", "msg", m.Type, "from", m.From, "error", err)
		return fmt.Errorf("raft %s from %d: %w", m.Type, m.From, err)
	}
	return nil
}
