// Package transport carries Raft messages between the nodes of a cluster
// over the Raft capability of schema/raft.capnp.
//
// The sending side (Transport) keeps one long-lived connection per peer,
// owned by one goroutine per peer, and pipelines each request as a call on
// one Raft capability obtained from the peer's bootstrap Node; the response
// message the peer's core produced comes back as the call's return value
// and is handed to Config.Deliver. The receiving side (NewServer) is the
// Raft capability a node serves on each connection: it decodes each call,
// hands the message to the driver's Handler in arrival order, and encodes
// the response the Handler returns.
//
// Raft tolerates loss, so the transport never blocks its caller: a peer's
// queue is bounded, and when it is full, or the connection fails, messages
// are dropped and Config.Unreachable is called so the core can slow down
// (probe) that follower.
package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Defaults for the zero fields of Config.
const (
	DefaultWindow        = 64
	DefaultMaxQueue      = 4096
	DefaultMaxQueueBytes = 64 << 20
	DefaultBackoffMin    = 50 * time.Millisecond
	DefaultBackoffMax    = 2 * time.Second
	DefaultCallTimeout   = 5 * time.Second
	DefaultKeepAlive     = 15 * time.Second
)

// Config configures the sending side.
type Config struct {
	// ClusterID and LocalID go into every request's header.
	ClusterID, LocalID uint64
	// Dial configures the connections to peers (TLS, timeouts, message
	// size). Its KeepAlive is ignored: the transport probes idle
	// connections itself (see KeepAlive below).
	Dial rpc.DialConfig
	// Authenticate, if set, proves this node a member of the cluster on a
	// new connection to peer: given the connection's bootstrap Node, it
	// returns the Node to ask for Raft (a login's result), which the
	// transport releases. Nil asks the bootstrap Node directly (mutual
	// TLS, or no security).
	Authenticate func(ctx context.Context, peer uint64, boot schema.Node) (schema.Node, error)
	// Window is the number of calls in flight per peer, pipelined on one
	// Raft capability (default 64).
	Window int
	// MaxQueue and MaxQueueBytes bound the messages waiting to be sent to
	// one peer (defaults 4096 messages, 64 MiB); when a message would
	// exceed either, it is dropped and Unreachable is reported.
	MaxQueue      int
	MaxQueueBytes int64
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// per failed attempt, with full jitter (defaults 50ms, 2s).
	BackoffMin, BackoffMax time.Duration
	// CallTimeout bounds the wait for a reply; a reply that takes longer
	// fails the connection (default 5s). It should exceed the slowest
	// answer the peer's driver gives, such as a snapshot's last chunk.
	CallTimeout time.Duration
	// KeepAlive is how long a connection may carry no call before the
	// transport sends a cheap probe (Node.info), which keeps the peer's
	// idle timeout from closing it and detects a hung peer (default 15s;
	// negative disables).
	KeepAlive time.Duration
	// Deliver receives each response from a peer, converted, in the order
	// the replies arrive. It is called from the peer's goroutine and must
	// not block long (it holds up that peer's traffic).
	Deliver func(m raft.Message)
	// Unreachable is called with a peer's id when its connection failed
	// or its queue overflowed (the driver then calls the core's
	// ReportUnreachable in its loop). It is called from the peer's
	// goroutine, never from Send, and must not block long.
	Unreachable func(id uint64)
	// Logger receives connection up/down (Info), retries and drops
	// (Debug); nil discards.
	Logger hclog.Logger
	// Seed seeds the backoff jitter; 0 picks one at random.
	Seed uint64
}

func (c Config) withDefaults() Config {
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Deliver == nil {
		c.Deliver = func(raft.Message) {}
	}
	if c.Unreachable == nil {
		c.Unreachable = func(uint64) {}
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	c.Dial.KeepAlive = -1
	if c.Dial.Logger == nil {
		c.Dial.Logger = c.Logger
	}
	return c
}

// PeerStats describes one peer's sending side.
type PeerStats struct {
	// Known is false if the transport has no such peer.
	Known bool
	// Addr is the peer's address.
	Addr string
	// Queued and QueuedBytes are the messages waiting to be sent.
	Queued      int
	QueuedBytes int64
	// InFlight is the number of calls awaiting a reply.
	InFlight int
	// Connected reports whether the connection is up.
	Connected bool
	// Dials counts connection attempts; Failures counts failed attempts
	// and failed connections.
	Dials, Failures uint64
	// Sent counts calls made, Delivered responses passed to Deliver.
	Sent, Delivered uint64
	// Dropped counts messages dropped: queue overflow, connection
	// failure, or a message that could not be encoded.
	Dropped uint64
}

// ErrClosed is returned by Node after Close.
var ErrClosed = errors.New("transport: closed")

// ErrUnknownPeer is returned by Node for an id that was never added with
// SetPeer (or was removed).
var ErrUnknownPeer = errors.New("transport: unknown peer")

// Transport sends Raft messages to peers. Create it with New; it is safe
// for concurrent use.
type Transport struct {
	cfg Config
	log hclog.Logger

	mu     sync.RWMutex
	peers  map[uint64]*peer
	closed bool
	rngMu  sync.Mutex
	rng    *rand.Rand
}

// New returns a transport with no peers.
func New(cfg Config) *Transport {
	cfg = cfg.withDefaults()
	return &Transport{
		cfg:   cfg,
		log:   cfg.Logger,
		peers: make(map[uint64]*peer),
		rng:   rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}
}

// jitter returns a uniformly random duration in [0, d] (full jitter).
func (t *Transport) jitter(d time.Duration) time.Duration {
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	return time.Duration(t.rng.Int64N(int64(d) + 1))
}

// SetPeer adds a peer or changes its address; a changed address closes
// the current connection and dials the new one.
func (t *Transport) SetPeer(id uint64, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || id == 0 || id == t.cfg.LocalID {
		return
	}
	if p, ok := t.peers[id]; ok {
		p.setAddr(addr)
		return
	}
	p := newPeer(t, id, addr)
	t.peers[id] = p
	go p.run()
}

// RemovePeer stops sending to a peer and forgets it; its goroutines have
// exited when RemovePeer returns.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p, ok := t.peers[id]
	delete(t.peers, id)
	t.mu.Unlock()
	if ok {
		p.stopAndWait()
	}
}

// Send enqueues each message for its peer (m.To) and returns at once.
// Messages to unknown peers, or that do not fit in the peer's queue, are
// dropped. The transport reads the messages' slices (entries, data) until
// they are sent: the caller must not modify them afterwards.
func (t *Transport) Send(msgs []raft.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	for i := range msgs {
		m := &msgs[i]
		p, ok := t.peers[m.To]
		if !ok {
			t.log.Debug("dropping message to unknown peer", "to", m.To, "msg", m.Type)
			continue
		}
		if !isRequest(m.Type) {
			// Responses travel as return values, never as calls.
			t.log.Debug("dropping response message: responses are returned by the call they answer", "msg", m.String())
			continue
		}
		p.enqueue(*m)
	}
}

// Raft returns the peer's Raft capability on the live connection (through
// which a member forwards calls: Raft.kv, Raft.admin), dialing if needed
// and waiting at most until ctx is done. The reference is the caller's to
// Release. It fails with ErrUnknownPeer, ErrClosed or ctx's error.
func (t *Transport) Raft(ctx context.Context, id uint64) (schema.Raft, error) {
	t.mu.RLock()
	p, ok := t.peers[id]
	closed := t.closed
	t.mu.RUnlock()
	switch {
	case closed:
		return schema.Raft{}, ErrClosed
	case !ok:
		return schema.Raft{}, fmt.Errorf("node %d: %w", id, ErrUnknownPeer)
	}
	return p.raft(ctx)
}

// Stats describes a peer's sending side (Known=false for an unknown id).
func (t *Transport) Stats(id uint64) PeerStats {
	t.mu.RLock()
	p, ok := t.peers[id]
	t.mu.RUnlock()
	if !ok {
		return PeerStats{}
	}
	return p.stats()
}

// Close closes every connection and waits for every goroutine the
// transport started. Send and SetPeer do nothing afterwards.
func (t *Transport) Close() {
	t.mu.Lock()
	t.closed = true
	peers := t.peers
	t.peers = make(map[uint64]*peer)
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() { defer wg.Done(); p.stopAndWait() }()
	}
	wg.Wait()
}
