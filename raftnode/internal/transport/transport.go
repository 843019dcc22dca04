// Package transport carries Raft messages between the nodes of a cluster
// over the Raft capability of schema/raft.capnp, one way: a node sends
// its core's messages to a peer on a stream it opened there
// (Raft.open, PeerStream.send), and a response is a message the peer
// sends back on its own stream. Nothing pairs a response with a request.
//
// The sending side (Transport) keeps, per peer, two lanes (LaneOf): the
// control lane (heartbeats, votes, TimeoutNow, ReadIndex and every
// response) and the data lane (appends). Each lane
// has its own connection, owned by one goroutine, its own bounded queue
// and its own window of send calls in flight, so a heartbeat never waits
// behind appends: not in the queue, not in the window, not in the
// network and not in the peer's receive loop. A lane batches what is
// queued into one send call, within the frame limit. Forwarded client
// calls (Raft.kv, Raft.admin) ride the data lane's connection, on their
// own capability, outside both windows. A snapshot streams beside the
// lanes, on a connection of its own per transfer (snapshot_send.go,
// snapshot_recv.go).
//
// The receiving side (NewServer) is the Raft capability a node serves on
// each connection: Raft.open checks a stream's header, and each send
// call's messages are decoded, checked against it and handed to the
// driver's Handler in arrival order. A connection holds a bounded number
// of streams and one snapshot stream at a time (StreamLimits).
//
// Raft tolerates loss, so the transport never blocks its caller: a lane's
// queue is bounded, and when it is full, or the connection fails,
// messages are dropped and Config.Unreachable is called so the core can
// slow down (probe) that follower.
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
	DefaultMaxBatch      = 256
	DefaultMaxBatchBytes = 256 << 10
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
	// Observer, if set, sees round trips and snapshot transfers
	// (metrics; see observer.go).
	Observer Observer
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
	// Incarnation is this node's storage incarnation: the header of every
	// stream it opens names it, and a message that carries another is
	// not sent.
	Incarnation uint64
	// Window is the number of send calls in flight per lane of a peer,
	// pipelined on one stream (default 64).
	Window int
	// MaxBatch and MaxBatchBytes bound the messages one send call
	// carries (defaults 256 messages, 256 KiB); a single larger message
	// goes alone, up to the frame limit (Dial.MaxMessageSize). Together
	// with Window they bound what a lane has in flight.
	MaxBatch      int
	MaxBatchBytes int64
	// MaxQueue and MaxQueueBytes bound the messages waiting to be sent on
	// one lane to one peer (defaults 4096 messages, 64 MiB); when a
	// message would exceed either, it is dropped and Unreachable is
	// reported.
	MaxQueue      int
	MaxQueueBytes int64
	// BackoffMin and BackoffMax bound the reconnect delay, which doubles
	// per failed attempt, with full jitter (defaults 50ms, 2s).
	BackoffMin, BackoffMax time.Duration
	// CallTimeout bounds the wait for a send call to return (the peer's
	// core took its messages); one that takes longer fails the
	// connection (default 5s).
	CallTimeout time.Duration
	// KeepAlive is how long a connection may carry no call before the
	// transport sends a cheap probe (Node.info), which keeps the peer's
	// idle timeout from closing it and detects a hung peer (default 15s;
	// negative disables).
	KeepAlive time.Duration
	// NotMember is called when a peer says its configuration does not
	// include this node (its core ignored this node's messages as a
	// non-member's; see schema NotMember). It is called from a lane's
	// goroutine and must not block long.
	NotMember func(peer uint64, nm raft.NotMember)
	// Unreachable is called with a peer's id when its connection failed
	// or its queue overflowed (the driver then calls the core's
	// ReportUnreachable in its loop). It is called from the peer's
	// goroutine, never from Send, and must not block long.
	Unreachable func(id uint64)
	// OpenSnapshot opens the snapshot a MsgSnap from this node's core
	// names, to stream it to a follower (snapshot_send.go). Nil: such
	// transfers fail.
	OpenSnapshot func(meta raft.SnapshotMeta) (SnapshotSource, error)
	// SnapshotDone is called once for each snapshot transfer Send started,
	// with nil if the follower took the snapshot and why not otherwise,
	// unless a newer transfer to the same follower replaced it, or
	// CancelSnapshots or Close stopped it. The driver hands it to its core
	// (raft's ReportSnapshot). It is called from the transfer's goroutine
	// and must not block long.
	SnapshotDone func(to, index uint64, err error)
	// SnapshotChunk is the size of one write of a snapshot transfer
	// (default 256 KiB, at most the frame limit less room for the
	// envelope; larger writes cost more per byte, and make a transfer
	// weigh harder on the latency of everything else the node does),
	// and SnapshotWindow how many writes may await their return (default
	// 4): a transfer holds no more of a snapshot in memory than that.
	SnapshotChunk  int
	SnapshotWindow int
	// SnapshotRate caps the bytes per second one snapshot transfer sends
	// (0: as fast as the follower takes them). Unpaced, a transfer takes
	// all the CPU, memory bandwidth and network it can get, and the
	// latency of the writes the leader serves meanwhile suffers.
	SnapshotRate int64
	// SnapshotTimeout bounds the wait for any step of a snapshot transfer
	// (the offer, a write, the finish) to return (default 30s).
	SnapshotTimeout time.Duration
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
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if c.NotMember == nil {
		c.NotMember = func(uint64, raft.NotMember) {}
	}
	if c.Unreachable == nil {
		c.Unreachable = func(uint64) {}
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.SnapshotDone == nil {
		c.SnapshotDone = func(uint64, uint64, error) {}
	}
	if c.SnapshotWindow <= 0 {
		c.SnapshotWindow = DefaultSnapshotWindow
	}
	if c.SnapshotTimeout <= 0 {
		c.SnapshotTimeout = DefaultSnapshotTimeout
	}
	frame := int64(c.Dial.MaxMessageSize)
	if frame == 0 {
		frame = rpc.DefaultMaxMessageSize
	}
	if c.SnapshotChunk <= 0 {
		c.SnapshotChunk = DefaultSnapshotChunk
	}
	c.SnapshotChunk = int(min(int64(c.SnapshotChunk), frame-min(frame/16, 64<<10)))
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	c.Dial.KeepAlive = -1
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Dial.Logger == nil {
		c.Dial.Logger = c.Logger
	}
	return c
}

// LaneStats describes one lane of a peer's sending side.
type LaneStats struct {
	// Queued and QueuedBytes are the messages waiting to be sent.
	Queued      int
	QueuedBytes int64
	// InFlight is the number of send calls awaiting their return.
	InFlight int
	// Connected reports whether the lane's connection is up.
	Connected bool
	// Dials counts connection attempts; Failures counts failed attempts
	// and failed connections.
	Dials, Failures uint64
	// Calls counts send calls made; Sent the messages they carried, and
	// Delivered those the peer's core has taken (the calls returned).
	Calls, Sent, Delivered uint64
	// SentBytes counts the bytes of the messages sent (their size as
	// queued, close to their encoded size).
	SentBytes uint64
	// Dropped counts messages dropped: queue overflow, connection
	// failure, or a message that could not be encoded.
	Dropped uint64
}

// PeerStats describes one peer's sending side: the sums over its lanes,
// and each lane.
type PeerStats struct {
	// Known is false if the transport has no such peer.
	Known bool
	// Addr is the peer's address.
	Addr string
	// LaneStats holds the sums over the lanes; Connected is true when
	// every lane is.
	LaneStats
	// Lanes describes each lane, by Lane.
	Lanes [numLanes]LaneStats
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

	snaps *snapSender
}

// New returns a transport with no peers.
func New(cfg Config) *Transport {
	cfg = cfg.withDefaults()
	t := &Transport{
		cfg:   cfg,
		log:   cfg.Logger,
		peers: make(map[uint64]*peer),
		rng:   rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}
	t.snaps = newSnapSender(t)
	return t
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
	p.start()
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

// Send enqueues each message for its peer (m.To), on the lane its type
// travels on (LaneOf), and returns at once. Messages to unknown peers, or
// that do not fit in the lane's queue, are dropped. A MsgSnap starts a
// snapshot transfer instead (snapshot_send.go), which reports its outcome
// to Config.SnapshotDone. The transport reads the messages' slices
// (entries, context) until they are sent: the caller must not modify
// them afterwards.
func (t *Transport) Send(msgs []raft.Message) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Type == raft.MsgSnap {
			t.snaps.send(*m)
			continue
		}
		p, ok := t.peers[m.To]
		if !ok {
			t.log.Debug("dropping message to unknown peer", "to", m.To, "msg", m.Type)
			continue
		}
		p.lanes[LaneOf(m.Type)].enqueue(*m)
	}
}

// Raft returns the peer's Raft capability on the data lane's live
// connection (through which a member forwards calls: Raft.kv,
// Raft.admin), dialing if needed
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
	return p.lanes[LaneData].raft(ctx)
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
	t.snaps.close()
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Add(1)
		go func() { defer wg.Done(); p.stopAndWait() }()
	}
	wg.Wait()
}
