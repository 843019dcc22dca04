package raftnode

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/raftnode/storage/vfs"
	"github.com/capraft/capraft/raftnode/storage/wal"
	"github.com/capraft/capraft/raftnode/transport"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Config configures a Node. Zero values of the optional fields mean the
// documented defaults.
type Config struct {
	// ID is the node's id in its cluster (non-zero).
	ID uint64
	// ClusterName names the cluster (default "capraft"). Peers refuse
	// messages from a cluster with another name, so two clusters whose
	// addresses get mixed up cannot corrupt each other.
	ClusterName string
	// Version is the build version reported by Node.info and status.
	Version string
	// Advertise is the address clients and peers use to reach this node.
	Advertise string
	// DataDir holds the write-ahead log and snapshots (required).
	DataDir string
	// Peers maps member ids to the addresses this node uses to reach
	// them. For a new cluster it is the initial membership (it must
	// include ID); on restart it overrides the addresses learned from the
	// log for the ids it lists.
	Peers map[uint64]string
	// Join starts a node with an empty data directory without
	// bootstrapping a cluster: it waits to be added by a member change
	// on an existing cluster's leader.
	Join bool
	// ForceNewCluster starts the node as the only voter of its cluster,
	// keeping its data and committing every entry in its log: the way out
	// when a majority of the voters lost their data for good. Other nodes
	// are then added back as new members. Use it once: the next start
	// must go without it, or it would drop the members added since.
	ForceNewCluster bool

	// HeartbeatInterval is how often a leader heartbeats (default 100ms).
	HeartbeatInterval time.Duration
	// ElectionTimeout is how long a follower waits without hearing from a
	// leader before campaigning (default 1s; randomized up to twice that).
	ElectionTimeout time.Duration
	// SnapshotEntries: snapshot the state machine every this many applied
	// entries (default 10000).
	SnapshotEntries uint64
	// SnapshotBytes: also snapshot once this many bytes were written to
	// the log since the last snapshot (default 64 MiB, one default WAL
	// segment: the log is compacted a segment at a time, so snapshotting
	// more often frees no more disk, and large values no longer let the
	// log grow by SnapshotEntries of them before the first snapshot).
	SnapshotBytes uint64
	// SnapshotChunk is the size of one write when a leader streams a
	// snapshot to a follower (default 256 KiB): what each side holds of a
	// snapshot in memory is a few of them.
	SnapshotChunk int
	// SnapshotRate caps the bytes per second a leader streams one
	// snapshot at (default DefaultSnapshotRate; negative: as fast as the
	// follower takes it, at a cost to the latency of the writes the
	// leader serves meanwhile: see docs/BENCHMARKS.md).
	SnapshotRate int64
	// SnapshotCatchupEntries: entries kept in the log before a snapshot,
	// so slightly lagging followers catch up without a snapshot (default
	// 5000), and no more of them than SnapshotBytes/2 bytes hold.
	SnapshotCatchupEntries uint64
	// WALSegmentSize is the size of the write-ahead log's segment files
	// (default 64 MiB). The log is compacted a segment at a time, so
	// small segments make followers catch up by snapshot sooner (tests).
	WALSegmentSize int64
	// WALBufferedIO makes the write-ahead log write through the page
	// cache and fdatasync instead of O_DIRECT|O_DSYNC. Both make a write
	// durable before it is acknowledged; direct writes cost less time and
	// CPU, and the log falls back to buffered writes by itself where the
	// file system refuses O_DIRECT.
	WALBufferedIO bool
	// RequestTimeout bounds how long a client request waits for a leader,
	// a commit or a read index before it is answered with an error
	// (default 5s).
	RequestTimeout time.Duration

	// KV configures the state machine (session TTL, size limits).
	KV kv.Config
	// Dial configures connections to peers (TLS, timeouts).
	Dial rpc.DialConfig
	// Security says who may do what: what members prove, what
	// connections hold without a credential (see docs/SECURITY.md). The
	// zero value is a node without security: every connection holds
	// everything.
	Security Security
	// Echo configures the echo hub (listener queue length and batching).
	Echo echo.HubConfig
	// Logger is the node's logger; components log through named
	// sub-loggers of it.
	Logger hclog.Logger
	// Seed seeds the core's election randomness (default: random).
	Seed uint64
	// FS is the file system the data directory lives on (default: the
	// operating system's). Tests inject failures through it.
	FS vfs.FS
}

func (c *Config) setDefaults() error {
	if c.ID == 0 {
		return errors.New("raftnode: node id must be non-zero")
	}
	if err := c.Security.validate(); err != nil {
		return err
	}
	if c.DataDir == "" {
		return errors.New("raftnode: a data directory is required")
	}
	if c.ClusterName == "" {
		c.ClusterName = "capraft"
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 100 * time.Millisecond
	}
	if c.ElectionTimeout <= 0 {
		c.ElectionTimeout = time.Second
	}
	if c.ElectionTimeout < 3*c.HeartbeatInterval {
		return fmt.Errorf("raftnode: election timeout %v must be at least 3 heartbeat intervals (%v)", c.ElectionTimeout, c.HeartbeatInterval)
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10000
	}
	if c.SnapshotBytes == 0 {
		c.SnapshotBytes = DefaultSnapshotBytes
	}
	switch {
	case c.SnapshotRate == 0:
		c.SnapshotRate = DefaultSnapshotRate
	case c.SnapshotRate < 0:
		c.SnapshotRate = 0 // the transport's "unpaced"
	}
	if c.SnapshotCatchupEntries == 0 {
		c.SnapshotCatchupEntries = 5000
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Echo.Logger == nil {
		c.Echo.Logger = c.Logger.Named("echo")
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
	if _, ok := c.Peers[c.ID]; !ok && len(c.Peers) > 0 {
		return fmt.Errorf("raftnode: --peers must include this node's id %d (example: --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003)", c.ID)
	}
	if c.Join && len(c.Peers) < 2 {
		// A joining node learns the members' addresses only from a
		// snapshot, which may never come; without them it could neither
		// hand writes to the leader nor, once a voter, run for election.
		return errors.New("raftnode: --join needs --peers listing the cluster's current members and this node, so it can reach them")
	}
	return nil
}

// ClusterID is the id carried in every peer message: a hash of the
// cluster name.
func ClusterID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// Node is one consensus node: the Raft core driven by one loop goroutine,
// its durable storage, the replicated key-value store, the peer transport
// and the capabilities served to clients and peers.
type Node struct {
	cfg       Config
	log       hclog.Logger
	clusterID uint64
	hub       *echo.Hub
	store     *storage.Store
	tr        *transport.Transport

	// sm is the replicated state machine: all the driver knows of it.
	// kv is the same store as the services see it (reads, sessions,
	// token keys).
	sm statemachine.Machine
	kv *kv.Store
	// onApplied observes every result the state machine returns, on the
	// loop goroutine (see applyAll); the services react to the entries
	// that matter to them. nil: nobody observes.
	onApplied func(index uint64, res statemachine.Result, replayed bool)

	// Owned by the loop goroutine.
	core guardedCore
	loop loopState

	// receiving is the snapshot transfer from a leader under way
	// (snapshot_receive.go).
	receiving snapshotReceiving

	q       *eventQueue
	stopc   chan struct{} // closed by Close
	done    chan struct{} // closed when the loop has exited
	wg      sync.WaitGroup
	closeMu sync.Once

	// Shared with request handlers.
	lead      atomic.Uint64 // leader id as the loop last saw it
	isLeader  atomic.Bool
	leadMu    sync.Mutex
	leadWake  chan struct{}         // closed and replaced when the leader changes
	stopErr   atomic.Pointer[error] // why the node stopped, once it has
	saidLost  atomic.Bool           // warnLostData has spoken
	proposeID atomic.Uint64
}

// New opens (or creates) the node's data directory and starts its loop.
// A new data directory bootstraps a cluster of cfg.Peers unless cfg.Join.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		clusterID: ClusterID(cfg.ClusterName),
		hub:       echo.NewHub(cfg.Echo),
		kv:        kv.New(cfg.KV),
		q:         newEventQueue(),
		stopc:     make(chan struct{}),
		done:      make(chan struct{}),
		leadWake:  make(chan struct{}),
	}
	n.sm = n.kv.Machine()
	n.onApplied = n.observeApplied
	n.proposeID.Store(rand.Uint64())
	if err := n.open(); err != nil {
		n.hub.Close()
		return nil, err
	}
	cs := n.core.ConfState()
	lone := len(cs.Voters) == 1 && cs.Voters[0] == n.cfg.ID && len(cs.VotersOutgoing) == 0
	n.wg.Add(1)
	go n.run()
	if n.loop.discover {
		n.wg.Add(1)
		go n.discoverPeers()
	}
	if lone {
		// The loop elects a lone voter at once (see run): wait for it, so
		// the node serves as leader from its first request.
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ElectionTimeout)
		_, _ = n.waitLeader(ctx)
		cancel()
	}
	return n, nil
}

// open opens storage, bootstraps or recovers, and builds the core and
// the transport. On error everything opened is closed again.
func (n *Node) open() (err error) {
	n.store, err = storage.Open(n.cfg.DataDir, storage.Options{
		NodeID:          n.cfg.ID,
		Logger:          n.log.Named("storage"),
		TrailingEntries: n.cfg.SnapshotCatchupEntries,
		// Entries kept for lagging followers are bounded in bytes too,
		// or 5,000 entries of 1 MiB would keep 5 GB of log.
		TrailingBytes: n.cfg.SnapshotBytes / 2,
		SegmentSize:   n.cfg.WALSegmentSize,
		NoDirectIO:    n.cfg.WALBufferedIO,
		FS:            n.cfg.FS,
		// Damaged storage is repaired from the peers: the store cuts
		// away what is damaged and takes a new incarnation, and the
		// leader restores the node. Alone, nothing could restore what a
		// repair discards, so a single node refuses to start instead.
		Repair: n.hasPeers(),
	})
	if err != nil {
		return fmt.Errorf("open data directory %s: %w", n.cfg.DataDir, err)
	}
	n.logRecovery()
	defer func() {
		if err != nil {
			n.store.Close()
		}
	}()
	n.loop.addrs = make(map[uint64]string)
	if _, _, err := n.store.InitialState(); err != nil {
		return fmt.Errorf("read state from %s: %w", n.cfg.DataDir, err)
	}
	last, _ := n.store.LastIndex()
	n.loop.logAtStart = last
	_, hasSnap := n.store.SnapshotMeta()
	// No configuration yet (a vote cast while discovering the peers may
	// have left a hard state, nothing more).
	fresh := last == 0 && !hasSnap
	switch {
	case fresh && n.cfg.Join:
		n.log.Info("empty data directory: waiting to be added to a cluster", "dir", n.cfg.DataDir)
	case fresh && n.needsDiscovery():
		n.loop.discover = true // see bootstrap.go: after the loop starts
	case fresh:
		if err := n.bootstrap(); err != nil {
			return err
		}
	default:
		if err := n.recover(); err != nil {
			return err
		}
		if n.cfg.ForceNewCluster {
			if err := n.forceNewCluster(); err != nil {
				return err
			}
		}
	}
	if fresh && n.cfg.ForceNewCluster {
		return errors.New("--force-new-cluster: this node's data directory is empty; start the cluster from a node that kept its data")
	}
	for id, addr := range n.cfg.Peers {
		n.loop.addrs[id] = addr // this node's view wins over what the log says
	}

	tick := n.cfg.HeartbeatInterval
	if t := n.cfg.ElectionTimeout / 10; t < tick {
		tick = t
	}
	n.loop.tick = tick
	core, err := raft.New(raft.Config{
		ID:            n.cfg.ID,
		Incarnation:   n.store.Incarnation(),
		Storage:       n.store,
		ElectionTick:  int(n.cfg.ElectionTimeout / tick),
		HeartbeatTick: max(1, int(n.cfg.HeartbeatInterval/tick)),
		Seed:          n.cfg.Seed,
		PreVote:       true,
		CheckQuorum:   true,
		// Under a steady load the next append carries a new commit
		// index; the loop announces it when it goes quiet instead
		// (commitAnnounceDelay). Two fewer calls per follower per write.
		LazyCommit: true,
	})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	n.core = guardedCore{c: core}
	n.loop.snapIndex = n.sm.Applied()

	n.tr = transport.New(transport.Config{
		ClusterID:    n.clusterID,
		LocalID:      n.cfg.ID,
		Dial:         n.cfg.Dial,
		Authenticate: n.peerAuthenticator(),
		Incarnation:  n.store.Incarnation(),
		NotMember:    func(id uint64, nm transport.NotMember) { n.q.push(notMember{id, nm}) },
		Unreachable:  func(id uint64) { n.q.push(unreachable{id}) },
		// Snapshots stream beside the core: the transport reads the
		// file and reports to the loop, which tells the core.
		OpenSnapshot: func(meta raft.SnapshotMeta) (transport.SnapshotSource, error) {
			return n.store.OpenSnapshot(meta.Index, meta.Term)
		},
		SnapshotDone:  func(to, index uint64, err error) { n.q.push(snapSent{to, index, err}) },
		SnapshotChunk: n.cfg.SnapshotChunk,
		SnapshotRate:  n.cfg.SnapshotRate,
		Logger:        n.log.Named("transport"),
		// A restarted peer should hear from the leader well within an
		// election timeout, or it campaigns needlessly.
		BackoffMax: max(n.cfg.ElectionTimeout/4, 50*time.Millisecond),
	})
	for id, addr := range n.loop.addrs {
		if id != n.cfg.ID {
			n.tr.SetPeer(id, addr)
		}
	}
	return nil
}

// bootstrap writes the initial membership of a new single-node cluster
// (a cluster of several waits for every member: see bootstrap.go).
func (n *Node) bootstrap() error {
	sn := n.bootstrapSnapshot([]raft.MemberIncarnation{{ID: n.cfg.ID, Incarnation: n.store.Incarnation()}})
	if err := n.store.Save(raft.HardState{}, nil, &sn); err != nil {
		return fmt.Errorf("bootstrap the cluster: %w", err)
	}
	if err := n.restore(sn); err != nil {
		return fmt.Errorf("bootstrap the cluster: %w", err)
	}
	n.log.Info("bootstrapped a new cluster", "members", sn.Meta.ConfState.Voters)
	return nil
}

// recover restores the state machine from the newest snapshot, streamed
// from its file; the core then re-delivers the committed entries after
// it.
func (n *Node) recover() error {
	meta, ok := n.store.SnapshotMeta()
	if !ok {
		return nil
	}
	if err := n.restoreStored(meta); err != nil {
		return fmt.Errorf("recover from the snapshot: %w", err)
	}
	n.log.Info("recovered from snapshot", "index", meta.Index)
	n.checkCounted(meta.ConfState)
	return nil
}

// Bootstrap returns the Node capability for one connection. It is meant
// for rpc.Config.Bootstrap.
func (n *Node) Bootstrap(conn *rpc.ConnInfo) capnp.Client {
	return n.newNodeCapability(conn, n.connGrant(conn), new(challengeState)).export()
}

// untilStopped returns a context that ends after d, or as soon as the
// node is closed.
func (n *Node) untilStopped(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-n.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Done is closed when the node has stopped: after Close, or on its own
// when it was removed from the cluster or its disk failed (see Err).
func (n *Node) Done() <-chan struct{} { return n.done }

// Err says why the node stopped on its own, or nil.
func (n *Node) Err() error {
	if p := n.stopErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops the loop, the transport and the services, and closes the
// data directory. Requests in flight fail with a shutting-down error.
func (n *Node) Close() {
	n.closeMu.Do(func() {
		close(n.stopc)
		n.receiving.stop()
		n.wg.Wait()
		n.tr.Close()
		n.hub.Close()
		if err := n.store.Close(); err != nil {
			n.log.Warn("closing the data directory", "error", err)
		}
	})
}

// StepDown hands leadership to the most up-to-date other voter if this
// node leads, and waits (bounded by ctx) until it has moved. Call it
// before a planned stop so writes pause for a round trip rather than an
// election timeout. It does nothing on a follower or a single-node
// cluster.
func (n *Node) StepDown(ctx context.Context) error {
	if !n.isLeader.Load() {
		return nil
	}
	err := n.transfer(ctx, 0)
	if err == nil {
		n.log.Info("handed leadership over before stopping", "leader", n.lead.Load())
	}
	var re *requestError
	if errors.As(err, &re) && re.code == schema.ErrorCode_invalidArgument {
		return nil // nobody to hand over to
	}
	return err
}

// StorageStats returns the write-ahead log's counters (saves, fsyncs and
// the time spent in them).
func (n *Node) StorageStats() wal.Stats { return n.store.Stats() }

// ID returns the node's id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader returns the id of the leader this node knows of, or 0.
func (n *Node) Leader() uint64 { return n.lead.Load() }

// leaderChanged returns a channel closed at the next leader change.
func (n *Node) leaderChanged() <-chan struct{} {
	n.leadMu.Lock()
	defer n.leadMu.Unlock()
	return n.leadWake
}

func (n *Node) setLeader(lead uint64, leader bool) {
	n.isLeader.Store(leader)
	if n.lead.Swap(lead) == lead {
		return
	}
	n.leadMu.Lock()
	close(n.leadWake)
	n.leadWake = make(chan struct{})
	n.leadMu.Unlock()
}

// waitLeader waits until some node is known to lead and returns its id.
func (n *Node) waitLeader(ctx context.Context) (uint64, error) {
	for {
		wake := n.leaderChanged()
		if lead := n.lead.Load(); lead != 0 {
			return lead, nil
		}
		select {
		case <-wake:
		case <-n.done:
			return 0, n.stoppedError()
		case <-ctx.Done():
			return 0, errNoLeader
		}
	}
}
