package transport

import (
	"context"
	"fmt"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Handler is implemented by the node's driver: it receives the messages
// peers send.
type Handler interface {
	// Deliver hands msgs, the messages of one send call on one peer's
	// stream in the order the peer's core produced them, to the driver
	// without blocking; msgs are the driver's to keep. The calls of one
	// stream are delivered one after another, in arrival order, on the
	// connection's receive goroutine.
	//
	// The driver calls done exactly once, from any goroutine, when its
	// core has taken the messages (the peer keeps a bounded number of
	// calls awaiting that: flow control), with nm set if the core
	// ignored one of them because its sender is not a member of this
	// node's configuration, or with err if it could not take them
	// (stopping), which ends the stream.
	Deliver(msgs []raft.Message, done func(nm *raft.NotMember, err error))
}

// ServerConfig configures the Raft capability served on one connection.
type ServerConfig struct {
	// ClusterID and LocalID are this node's: a stream whose header names
	// another cluster or another receiver is refused.
	ClusterID, LocalID uint64
	// Handler receives the inbound messages.
	Handler Handler
	// Logger receives refusals; nil uses the connection's logger.
	Logger hclog.Logger
	// PeerID, when non-zero, is the member the connection proved to be
	// (the id its credential named): a stream whose header names another
	// sender is refused, and so every message from another sender, so a
	// member cannot speak for another.
	PeerID uint64
	// ForwardKV and ForwardAdmin return the capabilities a member hands
	// its clients' and operators' calls to (Raft.kv and Raft.admin):
	// unrestricted, since the forwarding node confined each call to its
	// caller's grant. The caller owns the returned client. Nil refuses
	// the method.
	ForwardKV    func() schema.KV
	ForwardAdmin func() schema.Admin
	// MaxInFlight bounds the send calls of one stream the Handler holds
	// at once (default 256, beyond any sender's window); a further call
	// waits, and the connection is not read meanwhile, until one is
	// taken, which holds back a peer that pipelines without bound.
	MaxInFlight int
	// Streams counts the streams open on the connection and bounds them
	// (see StreamLimits): the same one for every ServerConfig of one
	// connection. Nil gives this capability bounds of its own.
	Streams *StreamLimits
}

// DefaultMaxInFlight is the default ServerConfig.MaxInFlight.
const DefaultMaxInFlight = 256

// errNoHandler fails every send of a capability created without a Handler.
var errNoHandler = exc.New(exc.Failed, "", "raft: this node has no Raft handler")

// errStreamEnded fails the sends of a stream after one was refused.
var errStreamEnded = exc.New(exc.Failed, "", "raft: stream ended by an earlier refused message; open a new one")

// NewServer returns the Raft capability that Node.raft() hands out on one
// connection. The caller owns the returned client.
//
// Raft.open checks the stream's header and returns a PeerStream whose
// send calls are served inline, on the connection's receive goroutine:
// each call's messages are decoded and checked against the header (a
// malformed or refused message fails the call, ends the stream and is
// logged; nothing panics) and handed to the Handler in arrival order; the
// call returns when the Handler says its core has taken them.
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
	if cfg.Streams == nil {
		cfg.Streams = new(StreamLimits)
	}
	s := &raftServer{cfg: cfg, log: log.Named("raft-server"), conn: conn}
	return conn.Exporter.ExportInline(schema.Raft_Methods(nil, nil), nil, s.restMethods(), s)
}

// raftServer serves one connection's Raft capability.
type raftServer struct {
	cfg  ServerConfig
	log  hclog.Logger
	conn *rpc.ConnInfo
	// warned is set once a refusal was logged at Warn: the next ones on
	// this connection are logged at Debug, so a peer that keeps opening
	// bad streams cannot flood the log.
	warned atomic.Bool
}

// refuse logs and returns the error for a request that is not accepted.
func (s *raftServer) refuse(method string, from uint64, err error) error {
	if s.warned.CompareAndSwap(false, true) {
		s.log.Warn("refused a Raft stream or message (further refusals on this connection are logged at debug level)",
			"method", method, "from", from, "error", err)
	} else {
		s.log.Debug("refused a Raft stream or message", "method", method, "from", from, "error", err)
	}
	return exc.New(exc.Failed, "", fmt.Sprintf("raft %s: %v", method, err))
}

// overloaded logs, as refuse does, a stream refused because the
// connection holds as many as it may, and returns err (StreamLimits).
func (s *raftServer) overloaded(method string, from uint64, err error) error {
	if s.warned.CompareAndSwap(false, true) {
		s.log.Warn("refused a Raft stream: too many open on this connection (further refusals on this connection are logged at debug level)",
			"method", method, "from", from, "error", err)
	} else {
		s.log.Debug("refused a Raft stream: too many open on this connection", "method", method, "from", from, "error", err)
	}
	return err
}

// checkSender refuses a sender that is not the member the connection
// proved to be (ServerConfig.PeerID).
func (s *raftServer) checkSender(from uint64) error {
	if s.cfg.PeerID != 0 && from != s.cfg.PeerID {
		return fmt.Errorf("refused: messages from node %d on a connection authenticated as node %d", from, s.cfg.PeerID)
	}
	return nil
}

// open serves Raft.open: it checks the header and returns the stream.
func (s *raftServer) open(_ context.Context, c *server.Call) error {
	call := schema.Raft_open{Call: c}
	h, err := call.Args().Header()
	hd, err := readHeader(h, err, s.cfg.ClusterID, s.cfg.LocalID)
	if err == nil {
		err = s.checkSender(hd.from)
	}
	if err != nil {
		return s.refuse("open", hd.from, err)
	}
	lane := LaneControl
	switch call.Args().Lane() {
	case schema.Lane_control:
	case schema.Lane_data:
		lane = LaneData
	default:
		return s.refuse("open", hd.from, fmt.Errorf("refused: unknown lane %d", call.Args().Lane()))
	}
	if err := s.cfg.Streams.takeStream(); err != nil {
		return s.overloaded("open", hd.from, err)
	}
	free := s.cfg.Streams.release(false)
	res, err := call.AllocResults()
	if err != nil {
		free()
		return err
	}
	st := &stream{s: s, hd: hd, lane: lane, slots: make(chan struct{}, s.cfg.MaxInFlight), free: free}
	inline := map[string]rpc.InlineServe{"send": st.send}
	// The stream frees its slot when released (Shutdown): by its sender,
	// or by the connection's end.
	return res.SetStream(schema.PeerStream(s.conn.Exporter.ExportInline(schema.PeerStream_Methods(nil, nil), inline, nil, st)))
}

// stream is one peer's stream of messages to this node on one lane.
type stream struct {
	s     *raftServer
	hd    header
	lane  Lane
	ended atomic.Bool
	// slots holds a token per call the Handler holds (MaxInFlight).
	slots chan struct{}
	// free returns the stream's slot of the connection's StreamLimits.
	free func()
}

// Shutdown runs when the stream's last reference is released: it frees
// the stream's slot.
func (st *stream) Shutdown() { st.free() }

var sendResultsSize = rpc.ResultsSize(schema.NewPeerStream_send_Results)

// send serves PeerStream.send, inline on the connection's receive
// goroutine: decode and check every message, then hand them to the
// Handler, holding a slot until it says they were taken.
func (st *stream) send(call *rpc.InlineCall) {
	if st.ended.Load() {
		call.Return(errStreamEnded)
		return
	}
	h := st.s.cfg.Handler
	if h == nil {
		call.Return(errNoHandler)
		return
	}
	msgs, err := st.decode(schema.PeerStream_send_Params(call.Args()))
	if err != nil {
		st.ended.Store(true)
		call.Return(st.s.refuse("send", st.hd.from, err))
		return
	}
	if len(msgs) == 0 {
		call.Return(nil)
		return
	}
	ctx := call.Context()
	select {
	case st.slots <- struct{}{}:
	case <-ctx.Done():
		call.Return(ctx.Err())
		return
	}
	h.Deliver(msgs, func(nm *raft.NotMember, err error) {
		<-st.slots
		switch {
		case err != nil:
			// The driver could not take them (it is stopping): the
			// stream ends, as Handler promises.
			st.ended.Store(true)
			call.Return(fmt.Errorf("raft send from %d: %w", st.hd.from, err))
		case nm == nil:
			call.Return(nil)
		default:
			call.ReturnResults(sendResultsSize, func(res capnp.Struct) error {
				w, err := schema.PeerStream_send_Results(res).NewNotMember()
				if err != nil {
					return err
				}
				w.SetIndex(nm.Index)
				w.SetTerm(nm.Term)
				return nil
			})
		}
	})
}

// decode reads and checks the messages of one send call.
func (st *stream) decode(p schema.PeerStream_send_Params) ([]raft.Message, error) {
	list, err := p.Msgs()
	if err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	// Room grows as messages prove themselves: never sized from the
	// wire's count alone (see maxEntriesPrealloc).
	d := decoder{msgs: make([]raft.Message, 0, min(list.Len(), DefaultMaxBatch))}
	for i := 0; i < list.Len(); i++ {
		if err := d.decode(list.At(i), st.hd); err != nil {
			return nil, err
		}
	}
	return d.finish(), nil
}
