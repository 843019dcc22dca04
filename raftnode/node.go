package raftnode

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/internal/metrics"
	"github.com/capraft/capraft/raftnode/internal/timeline"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/services"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
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
	// Watch configures the watch hub (a watcher's queue bound, batching);
	// the history watches replay from is bounded by KV.HistoryRevisions
	// and KV.HistoryBytes.
	Watch watch.Config
	// Logger is the node's logger; components log through named
	// sub-loggers of it.
	Logger hclog.Logger
	// Seed seeds the core's election randomness (default: random).
	Seed uint64
	// Metrics collects the node's Prometheus metrics (Node.Metrics). Off,
	// the node keeps only the counters it keeps anyway.
	Metrics bool
	// TraceFile, if set, is where the node records a timeline of its
	// Raft events (fsyncs, applies, sends to peers, client requests,
	// leader changes) as Chrome trace-event JSON, until it closes; see
	// docs/OPERATIONS.md.
	TraceFile string
	// ReadyApplyLag is how many entries the state machine may be behind
	// the commit index while the node still counts as ready (Node.Ready;
	// default DefaultReadyApplyLag).
	ReadyApplyLag uint64

	// StorageKnobs are storage settings only tests inside this module
	// turn (a file system that injects failures; see
	// storage.Options.Knobs); nil leaves production's.
	StorageKnobs storage.Knobs
}

func (c *Config) setDefaults() error {
	if c.ID == 0 {
		return errors.New("raftnode: node id must be non-zero")
	}
	if err := c.Security.Validate(); err != nil {
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
	if c.ReadyApplyLag == 0 {
		c.ReadyApplyLag = DefaultReadyApplyLag
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

// DefaultSnapshotBytes is Config.SnapshotBytes's default.
const DefaultSnapshotBytes = 64 << 20

// DefaultSnapshotRate is Config.SnapshotRate's default: 64 MiB/s, a 1 GiB
// state in 16 seconds, at which a transfer costs the writes the leader
// serves meanwhile little latency (docs/BENCHMARKS.md).
const DefaultSnapshotRate = 64 << 20

// Node is one consensus node: the driver (raftnode/driver) with its
// durable storage, the replicated key-value store, the peer transport and
// the capabilities served to clients and peers.
type Node struct {
	cfg       Config
	log       hclog.Logger
	clusterID uint64
	hub       *echo.Hub
	store     *storage.Store
	tr        *transport.Transport
	d         *driver.Driver
	kv        *kv.Store
	svc       *services.Server
	metrics   *metrics.Metrics // nil unless Config.Metrics
	trace     *timeline.Writer // nil unless Config.TraceFile

	stopc     chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New opens (or creates) the node's data directory and starts its loop.
// A new data directory bootstraps a cluster of cfg.Peers unless cfg.Join.
func New(cfg Config) (*Node, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := checkClusterFile(cfg.DataDir, cfg.ClusterName); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		clusterID: ClusterID(cfg.ClusterName),
		hub:       echo.NewHub(cfg.Echo),
		kv:        kv.New(cfg.KV),
		stopc:     make(chan struct{}),
	}
	n.newMetrics()
	if cfg.TraceFile != "" {
		var err error
		if n.trace, err = timeline.Create(cfg.TraceFile, cfg.ID); err != nil {
			n.hub.Close()
			return nil, err
		}
	}
	discover, err := n.open()
	if err != nil {
		n.hub.Close()
		n.closeTrace()
		return nil, err
	}
	n.d.Start()
	if discover {
		n.wg.Add(1)
		go n.discoverPeers()
	}
	return n, nil
}

// open opens storage, builds the transport and the driver, and decides
// how a node without a configuration gets one: it bootstraps a cluster
// of itself alone, waits to be added (Join), or asks its peers first
// (discover, once the loop runs: see bootstrap.go). On error everything
// opened is closed again.
func (n *Node) open() (discover bool, err error) {
	n.store, err = storage.Open(n.cfg.DataDir, storage.Options{
		NodeID:          n.cfg.ID,
		Logger:          n.log.Named("storage"),
		TrailingEntries: n.cfg.SnapshotCatchupEntries,
		// Entries kept for lagging followers are bounded in bytes too,
		// or 5,000 entries of 1 MiB would keep 5 GB of log.
		TrailingBytes: n.cfg.SnapshotBytes / 2,
		SegmentSize:   n.cfg.WALSegmentSize,
		NoDirectIO:    n.cfg.WALBufferedIO,
		Knobs:         n.cfg.StorageKnobs,
		OnFsync:       n.fsyncObserver(),
		// Damaged storage is repaired from the peers: the store cuts
		// away what is damaged and takes a new incarnation, and the
		// leader restores the node. Alone, nothing could restore what a
		// repair discards, so a single node refuses to start instead.
		Repair: n.hasPeers(),
	})
	if err != nil {
		return false, fmt.Errorf("open data directory %s: %w", n.cfg.DataDir, err)
	}
	reported := n.logRecovery()
	defer func() {
		if err != nil {
			n.store.Close()
		}
	}()
	last, _ := n.store.LastIndex()
	_, hasSnap := n.store.SnapshotMeta()
	// No configuration yet (a vote cast while discovering the peers may
	// have left a hard state, nothing more).
	fresh := last == 0 && !hasSnap
	var boot *raft.Snapshot
	switch {
	case !fresh || n.cfg.ForceNewCluster:
		// The driver recovers (and forces), or refuses to force nothing.
	case n.cfg.Join:
		n.log.Info("empty data directory: waiting to be added to a cluster", "dir", n.cfg.DataDir)
	case n.needsDiscovery():
		discover = true
	default:
		sn := n.bootstrapSnapshot([]raft.MemberIncarnation{{ID: n.cfg.ID, Incarnation: n.store.Incarnation()}})
		boot = &sn
	}

	// The transport reports lost peers to the driver, which exists
	// before the transport knows any peer (the driver hands them over in
	// Start).
	n.tr = transport.New(transport.Config{
		ClusterID:    n.clusterID,
		LocalID:      n.cfg.ID,
		Observer:     n.transportObserver(),
		Dial:         n.cfg.Dial,
		Authenticate: services.PeerAuthenticator(n.cfg.Security, n.clusterID, n.cfg.ID),
		Incarnation:  n.store.Incarnation(),
		NotMember:    func(id uint64, nm raft.NotMember) { n.d.ReportNotMember(id, nm) },
		Unreachable:  func(id uint64) { n.d.ReportUnreachable(id) },
		// Snapshots stream beside the core: the transport reads the
		// file and reports to the driver, which tells the core.
		OpenSnapshot: func(meta raft.SnapshotMeta) (transport.SnapshotSource, error) {
			return n.store.OpenSnapshot(meta.Index, meta.Term)
		},
		SnapshotDone:  func(to, index uint64, err error) { n.d.ReportSnapshot(to, index, err) },
		SnapshotChunk: n.cfg.SnapshotChunk,
		SnapshotRate:  n.cfg.SnapshotRate,
		Logger:        n.log.Named("transport"),
		// A restarted peer should hear from the leader well within an
		// election timeout, or it campaigns needlessly.
		BackoffMax: max(n.cfg.ElectionTimeout/4, 50*time.Millisecond),
	})
	n.d, err = driver.New(driver.Config{
		ID:                n.cfg.ID,
		Storage:           n.store,
		Machine:           n.kv.Machine(),
		Transport:         n.tr,
		Peers:             n.cfg.Peers,
		Advertise:         n.cfg.Advertise,
		DataDir:           n.cfg.DataDir,
		Bootstrap:         boot,
		ForceNewCluster:   n.cfg.ForceNewCluster,
		HeartbeatInterval: n.cfg.HeartbeatInterval,
		ElectionTimeout:   n.cfg.ElectionTimeout,
		RequestTimeout:    n.cfg.RequestTimeout,
		SnapshotEntries:   n.cfg.SnapshotEntries,
		SnapshotBytes:     n.cfg.SnapshotBytes,
		Seed:              n.cfg.Seed,
		Logger:            n.log,
		// The services exist before the loop runs (Start), which is
		// the only caller of these.
		OnApplied: func(index uint64, res statemachine.Result, replayed bool) {
			n.svc.OnApplied(index, res, replayed)
		},
		OnLeading:        func() { n.svc.OnLeading() },
		LostDataReported: reported,
		Observer:         n.driverObserver(),
	})
	if err == nil {
		n.svc, err = services.New(services.Config{
			ID:                n.cfg.ID,
			ClusterID:         n.clusterID,
			Version:           n.cfg.Version,
			Advertise:         n.cfg.Advertise,
			Security:          n.cfg.Security,
			HeartbeatInterval: n.cfg.HeartbeatInterval,
			ElectionTimeout:   n.cfg.ElectionTimeout,
			RequestTimeout:    n.cfg.RequestTimeout,
			Logger:            n.log,
			Driver:            n.d,
			KV:                n.kv,
			Echo:              n.hub,
			Watch:             n.cfg.Watch,
			Transport:         n.tr,
			Peers:             peerHandler{n},
			Requests:          n.requestObserver(),
		})
	}
	if err != nil {
		n.tr.Close()
		return false, err
	}
	return discover, nil
}

// Bootstrap returns the Node capability for one connection. It is meant
// for rpc.Config.Bootstrap.
func (n *Node) Bootstrap(conn *rpc.ConnInfo) capnp.Client {
	return n.svc.Bootstrap(conn)
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
func (n *Node) Done() <-chan struct{} { return n.d.Done() }

// Err says why the node stopped on its own, or nil.
func (n *Node) Err() error { return n.d.Err() }

// Close stops the loop, the transport and the services, and closes the
// data directory. Requests in flight fail with a shutting-down error.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		close(n.stopc)
		n.svc.Close()
		n.d.Close()
		n.wg.Wait()
		n.tr.Close()
		n.hub.Close()
		if err := n.store.Close(); err != nil {
			n.log.Warn("closing the data directory", "error", err)
		}
		n.closeTrace()
	})
}

// CloseWatches ends every watch on this node, telling each watcher that
// the node is stopping (closed with shuttingDown), and waits until they
// are told or ctx ends. Call it before draining the node's connections on
// a planned stop: a watch is never "in flight", so a drain would close its
// connection without a word; told, a client resumes on another node at
// once. Watches asked for afterwards are refused; Close does the rest.
func (n *Node) CloseWatches(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		n.svc.Watches().Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("telling watchers the node is stopping: %w", ctx.Err())
	}
}

// StepDown hands leadership to the most up-to-date other voter if this
// node leads, and waits (bounded by ctx) until it has moved. Call it
// before a planned stop so writes pause for a round trip rather than an
// election timeout. It does nothing on a follower or a single-node
// cluster.
func (n *Node) StepDown(ctx context.Context) error {
	if !n.d.IsLeader() {
		return nil
	}
	err := n.d.TransferLeadership(ctx, 0)
	if err == nil {
		n.log.Info("handed leadership over before stopping", "leader", n.d.Leader())
	}
	var invalid *driver.InvalidError
	if errors.As(err, &invalid) {
		return nil // nobody to hand over to
	}
	return err
}

// StorageStats returns the write-ahead log's counters (saves, fsyncs and
// the time spent in them).
func (n *Node) StorageStats() storage.Stats { return n.store.Stats() }

// ID returns the node's id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader returns the id of the leader this node knows of, or 0.
func (n *Node) Leader() uint64 { return n.d.Leader() }

// Members returns the configuration as of a linearizable read, with the
// leader's id.
func (n *Node) Members(ctx context.Context) (uint64, []Member, error) { return n.d.Members(ctx) }

// Member is one cluster member as a node sees it.
type Member = driver.Member

// Snapshot snapshots the state machine now and waits until it is on
// disk; it returns the snapshot's index.
func (n *Node) Snapshot(ctx context.Context) (uint64, error) { return n.d.Snapshot(ctx) }

// Status reports the node's current state. It asks the loop and falls
// back to what is known without it when the loop does not answer in time
// (stopped or busy).
func (n *Node) Status(ctx context.Context) NodeStatus { return n.svc.Status(ctx) }

// NodeStatus is a node's view of itself and its cluster.
type NodeStatus = services.NodeStatus
