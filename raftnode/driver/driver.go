package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
)

// Storage is the durable log and snapshot store the driver persists to
// (*storage.Store satisfies it; the snapshot files are the store's). The
// core reads it as its raft.Storage.
type Storage interface {
	raft.Storage
	// Save persists one Ready: the hard state, new entries, and a
	// snapshot to install, with one sync.
	Save(hs raft.HardState, ents []raft.Entry, snap *raft.Snapshot) error
	// SnapshotMeta returns the newest snapshot's metadata, if any.
	SnapshotMeta() (raft.SnapshotMeta, bool)
	// OpenSnapshot opens the stored snapshot at index and term for
	// reading, once, as a stream (its checksum is checked as the read
	// reaches the end).
	OpenSnapshot(index, term uint64) (*storage.SnapshotReader, error)
	// NewSnapshot starts a snapshot of the state at index, whose
	// configuration is cs; ReceiveSnapshot one a leader sends. Neither
	// counts until committed.
	NewSnapshot(index uint64, cs raft.ConfState) (*storage.SnapshotWriter, error)
	ReceiveSnapshot(meta raft.SnapshotMeta) (*storage.SnapshotWriter, error)
	// Compact drops the log a snapshot covers.
	Compact(index uint64) error
	// Incarnation identifies the storage (see raft.Config.Incarnation).
	Incarnation() uint64
	// Stats returns the log's counters (BytesWritten paces snapshots).
	Stats() storage.Stats
}

// Transport sends the core's messages to peers. It must not block: a
// message it cannot send is dropped (Raft tolerates loss), and a peer it
// lost is reported through Driver.ReportUnreachable.
type Transport interface {
	// Send queues msgs for their receivers (m.To). The transport reads
	// the messages' slices until they are sent.
	Send(msgs []raft.Message)
	// SetPeer adds a peer or changes its address; RemovePeer forgets it.
	SetPeer(id uint64, addr string)
	RemovePeer(id uint64)
	// A snapshot message (raft.MsgSnap) starts a transfer of the stored
	// snapshot it names, beside the messages; the transport reports its
	// end through Driver.ReportSnapshot. CancelSnapshots abandons the
	// transfers under way (this node no longer leads).
	CancelSnapshots()
}

// NotMember is a peer's word that its configuration, as of its applied
// Index (in its Term), does not include this node: the core's type, which
// the transport carries as it is.
type NotMember = raft.NotMember

// Config configures a Driver. The durations and snapshot thresholds must
// be set (the composition root applies the node's defaults).
type Config struct {
	// ID is this node's id (non-zero).
	ID uint64
	// Storage, Machine and Transport are what the driver drives.
	Storage   Storage
	Machine   statemachine.Machine
	Transport Transport
	// Peers maps member ids to addresses this node's configuration fixes:
	// they win over the addresses the log and snapshots carry.
	Peers map[uint64]string
	// Advertise is this node's address: the address book of a cluster
	// forced anew (ForceNewCluster).
	Advertise string
	// DataDir names the storage in errors.
	DataDir string
	// Bootstrap, if set, is written as the first snapshot when the
	// storage holds no configuration (a new cluster: see
	// BootstrapSnapshot). Without it, a driver with empty storage waits
	// for a leader (or for Bootstrap, called after peer discovery).
	Bootstrap *raft.Snapshot
	// ForceNewCluster makes this node the only voter of its cluster,
	// keeping its data and committing every entry in its log (see
	// force.go). The storage must hold data.
	ForceNewCluster bool

	// HeartbeatInterval and ElectionTimeout set the core's clock;
	// RequestTimeout bounds how long a request waits for a read index, a
	// membership change or a transfer.
	HeartbeatInterval, ElectionTimeout, RequestTimeout time.Duration
	// SnapshotEntries and SnapshotBytes: snapshot once this many entries
	// were applied, or this many bytes written to the log, since the last
	// snapshot.
	SnapshotEntries, SnapshotBytes uint64
	// Seed seeds the core's election randomness.
	Seed uint64
	// Logger receives the driver's logs (nil discards them).
	Logger hclog.Logger

	// OnApplied, if set, sees every non-nil result the state machine
	// returns, with the entry's index; replayed says the entry may have
	// been applied in an earlier run (it was in the log when the driver
	// opened its storage), so one-time effects are not repeated. It runs
	// on the loop goroutine and must not block.
	OnApplied func(index uint64, res statemachine.Result, replayed bool)
	// OnLeading, if set, runs on the loop goroutine when this node
	// becomes leader. It must not block.
	OnLeading func()
	// LostDataReported says the storage already told the operator it was
	// repaired: WarnLostData stays quiet.
	LostDataReported bool

	// Observer, if set, sees how long applying and snapshotting take
	// (metrics).
	Observer Observer

	// Clock is the driver's source of time (nil: the real clock). A
	// simulator passes a virtual clock it advances itself.
	Clock Clock
	// Go starts the driver's background work (writing a snapshot file);
	// nil means a new goroutine. A simulator runs the work inline or at a
	// step it chooses. The work must run eventually: Close waits for it.
	Go func(func())
	// Stepped makes Start spawn no loop: the caller runs the loop one
	// turn at a time with Step, on one goroutine that makes every other
	// call into the driver too (see Step). Production leaves it false.
	Stepped bool
}

// Driver drives the Raft core of one node: see the package
// documentation.
type Driver struct {
	cfg   Config
	log   hclog.Logger
	clock Clock
	// goFn starts background work (Config.Go).
	goFn  func(func())
	store Storage
	// sm is the replicated state machine: all the driver knows of it.
	sm statemachine.Machine
	// tr is the transport, set by Start: the driver sends nothing and
	// dials nobody before its loop runs.
	tr Transport

	// Owned by the loop goroutine.
	core   guardedCore
	loop   loopState
	timers loopTimers

	// receiving is the snapshot transfer from a leader under way
	// (snapshot_receive.go).
	receiving snapshotReceiving

	q         *eventQueue
	stopc     chan struct{} // closed by Close
	done      chan struct{} // closed when the loop has exited
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once

	// Shared with callers.
	lead     atomic.Uint64 // leader id as the loop last saw it
	isLeader atomic.Bool
	leadMu   sync.Mutex
	leadWake chan struct{}         // closed and replaced when the leader changes
	stopErr  atomic.Pointer[error] // why the driver stopped, once it has
	saidLost atomic.Bool           // WarnLostData has spoken
	stats    counters              // read by Counters (observer.go)
	obs      Observer              // Config.Observer, or one that does nothing
}

// New recovers the state machine from storage (or bootstraps a new
// cluster, or forces one: see Config) and builds the core. It starts
// nothing: call Start.
func New(cfg Config) (*Driver, error) {
	switch {
	case cfg.ID == 0:
		return nil, errors.New("driver: node id must be non-zero")
	case cfg.Storage == nil || cfg.Machine == nil || cfg.Transport == nil:
		return nil, errors.New("driver: Storage, Machine and Transport are required")
	case cfg.HeartbeatInterval <= 0 || cfg.ElectionTimeout <= 0 || cfg.RequestTimeout <= 0:
		return nil, errors.New("driver: HeartbeatInterval, ElectionTimeout and RequestTimeout must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Go == nil {
		cfg.Go = func(f func()) { go f() }
	}
	d := &Driver{
		cfg:      cfg,
		log:      cfg.Logger,
		clock:    cfg.Clock,
		goFn:     cfg.Go,
		store:    cfg.Storage,
		sm:       cfg.Machine,
		q:        newEventQueue(),
		stopc:    make(chan struct{}),
		done:     make(chan struct{}),
		leadWake: make(chan struct{}),
	}
	d.saidLost.Store(cfg.LostDataReported)
	if d.obs = cfg.Observer; d.obs == nil {
		d.obs = nopObserver{}
	}
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

// open bootstraps or recovers, and builds the core.
func (d *Driver) open() error {
	d.loop.addrs = make(map[uint64]string)
	if _, _, err := d.store.InitialState(); err != nil {
		return fmt.Errorf("read state from %s: %w", d.cfg.DataDir, err)
	}
	last, _ := d.store.LastIndex()
	d.loop.logAtStart = last
	_, hasSnap := d.store.SnapshotMeta()
	// No configuration yet (a vote cast while discovering the peers may
	// have left a hard state, nothing more).
	fresh := last == 0 && !hasSnap
	switch {
	case fresh && d.cfg.ForceNewCluster:
		return errors.New("--force-new-cluster: this node's data directory is empty; start the cluster from a node that kept its data")
	case fresh && d.cfg.Bootstrap != nil:
		if err := d.bootstrap(*d.cfg.Bootstrap); err != nil {
			return err
		}
	case fresh:
		// Waiting for a leader, or for peer discovery (Bootstrap).
	default:
		if err := d.recover(); err != nil {
			return err
		}
		if d.cfg.ForceNewCluster {
			if err := d.forceNewCluster(); err != nil {
				return err
			}
		}
	}
	for id, addr := range d.cfg.Peers {
		d.loop.addrs[id] = addr // this node's view wins over what the log says
	}

	tick := d.cfg.HeartbeatInterval
	if t := d.cfg.ElectionTimeout / 10; t < tick {
		tick = t
	}
	d.loop.tick = tick
	core, err := raft.New(raft.Config{
		ID:            d.cfg.ID,
		Incarnation:   d.store.Incarnation(),
		Storage:       d.store,
		ElectionTick:  int(d.cfg.ElectionTimeout / tick),
		HeartbeatTick: max(1, int(d.cfg.HeartbeatInterval/tick)),
		Seed:          d.cfg.Seed,
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
	d.core = guardedCore{c: core}
	d.loop.snapIndex = d.sm.Applied()
	return nil
}

// bootstrap writes the first snapshot of a new cluster.
func (d *Driver) bootstrap(sn raft.Snapshot) error {
	if err := d.store.Save(raft.HardState{}, nil, &sn); err != nil {
		return fmt.Errorf("bootstrap the cluster: %w", err)
	}
	if err := d.restore(sn); err != nil {
		return fmt.Errorf("bootstrap the cluster: %w", err)
	}
	d.log.Info("bootstrapped a new cluster", "members", sn.Meta.ConfState.Voters)
	return nil
}

// recover restores the state machine from the newest snapshot, streamed
// from its file; the core then re-delivers the committed entries after
// it.
func (d *Driver) recover() error {
	meta, ok := d.store.SnapshotMeta()
	if !ok {
		return nil
	}
	if err := d.restoreStored(meta); err != nil {
		return fmt.Errorf("recover from the snapshot: %w", err)
	}
	d.log.Info("recovered from snapshot", "index", meta.Index)
	d.checkCounted(meta.ConfState)
	return nil
}

// BootstrapSnapshot is the first snapshot of a new cluster whose voters
// are voters, recording their storage incarnations, with addrs as its
// address book.
func BootstrapSnapshot(voters []raft.MemberIncarnation, addrs map[uint64]string) raft.Snapshot {
	voters = slices.Clone(voters)
	slices.SortFunc(voters, func(a, b raft.MemberIncarnation) int { return cmp.Compare(a.ID, b.ID) })
	ids := make([]uint64, len(voters))
	for i, mi := range voters {
		ids[i] = mi.ID
	}
	sn := raft.BootstrapSnapshot(raft.ConfState{Voters: ids, Incarnations: voters})
	sn.Data = encodeSnapshot(addrs)
	return sn
}

// Start hands the transport every known peer and starts the loop. A lone
// voter is elected at once; Start waits for that (at most an election
// timeout), so the node serves as leader from its first request. A
// stepped driver (Config.Stepped) starts no loop and waits for nothing:
// its caller runs the loop with Step.
func (d *Driver) Start() {
	d.startOnce.Do(func() {
		d.tr = d.cfg.Transport
		for id, addr := range d.loop.addrs {
			if id != d.cfg.ID {
				d.tr.SetPeer(id, addr)
			}
		}
		if d.cfg.Stepped {
			if d.guarded(d.begin) {
				d.exitStepped()
			}
			return
		}
		cs := d.core.ConfState()
		lone := len(cs.Voters) == 1 && cs.Voters[0] == d.cfg.ID && len(cs.VotersOutgoing) == 0
		d.wg.Add(1)
		go d.run()
		if lone {
			d.awaitLeader(d.cfg.ElectionTimeout)
		}
	})
}

// awaitLeader waits until a leader is known, the driver stops, or wait
// has passed.
func (d *Driver) awaitLeader(wait time.Duration) {
	timer := d.clock.NewTimer(wait)
	defer timer.Stop()
	for {
		wake := d.LeaderChanged()
		if d.lead.Load() != 0 {
			return
		}
		select {
		case <-wake:
		case <-d.done:
			return
		case <-timer.C():
			return
		}
	}
}

// Close stops the loop and waits for it and for the snapshots being
// written. Requests in flight fail with ErrStopped (or
// ErrOutcomeUnknown, for proposals the core took). Storage and transport
// stay open: they are the caller's.
func (d *Driver) Close() {
	d.closeOnce.Do(func() {
		d.startOnce.Do(func() { close(d.done) }) // never started
		close(d.stopc)
		d.receiving.stop()
		if d.cfg.Stepped {
			// No loop sees stopc: its caller's goroutine exits it.
			d.exitStepped()
		}
		d.wg.Wait()
	})
}

// Done is closed when the driver has stopped: after Close, or on its own
// when it was removed from the cluster or its storage failed (see Err).
func (d *Driver) Done() <-chan struct{} { return d.done }

// Err says why the driver stopped on its own, or nil.
func (d *Driver) Err() error {
	if p := d.stopErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Stopped reports whether the driver has stopped.
func (d *Driver) Stopped() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// ID returns this node's id.
func (d *Driver) ID() uint64 { return d.cfg.ID }

// TickInterval is the period of the core's clock: the shortest wait
// after which the driver's view of the cluster may have changed.
func (d *Driver) TickInterval() time.Duration { return d.loop.tick }

// Leader returns the id of the leader this node knows of, or 0.
func (d *Driver) Leader() uint64 { return d.lead.Load() }

// IsLeader reports whether this node leads, as the loop last saw it.
func (d *Driver) IsLeader() bool { return d.isLeader.Load() }

// LeaderChanged returns a channel closed at the next leader change.
func (d *Driver) LeaderChanged() <-chan struct{} {
	d.leadMu.Lock()
	defer d.leadMu.Unlock()
	return d.leadWake
}

func (d *Driver) setLeader(lead uint64, leader bool) {
	d.isLeader.Store(leader)
	if d.lead.Swap(lead) == lead {
		return
	}
	d.leadMu.Lock()
	close(d.leadWake)
	d.leadWake = make(chan struct{})
	d.leadMu.Unlock()
}

// WaitLeader waits until some node is known to lead and returns its id:
// ErrNoLeader when ctx ends first, StoppedError when the driver stops.
func (d *Driver) WaitLeader(ctx context.Context) (uint64, error) {
	for {
		wake := d.LeaderChanged()
		if lead := d.lead.Load(); lead != 0 {
			return lead, nil
		}
		select {
		case <-wake:
		case <-d.done:
			return 0, d.StoppedError()
		case <-ctx.Done():
			return 0, ErrNoLeader
		}
	}
}

// Deliver steps msgs, the messages of one send call on a peer's stream,
// in order, after those delivered before. It queues them for the loop
// at once; the loop calls done exactly once, when the core has taken
// them, with nm set if the core ignored one because its sender is not a
// member of this node's configuration (a removed node learns so that
// way), or with an error if the driver stopped first.
func (d *Driver) Deliver(msgs []raft.Message, done func(nm *NotMember, err error)) {
	if !d.q.push(&peerMsgs{msgs: msgs, done: done}) {
		done(nil, d.StoppedError())
	}
}

// ReportUnreachable tells the core that a peer's connection failed or
// its queue overflowed, so it slows down (probes) that follower.
func (d *Driver) ReportUnreachable(id uint64) { d.q.push(unreachable{id}) }

// ReportSnapshot tells the core how the transfer of the snapshot at index
// to follower to ended (err nil: the follower took it).
func (d *Driver) ReportSnapshot(to, index uint64, err error) { d.q.push(snapSent{to, index, err}) }

// ReportNotMember hands the loop a peer's word that its configuration
// does not include this node (see notMember in loop.go).
func (d *Driver) ReportNotMember(from uint64, nm NotMember) { d.q.push(notMember{from, nm}) }

// WarnLostData tells the operator, once, that this node's storage is not
// the one the configuration counts for it (it was wiped or damaged); kv
// adds context to the log line.
func (d *Driver) WarnLostData(counted uint64, kv ...any) {
	if d.saidLost.Swap(true) {
		return
	}
	d.log.Warn("this node lost its data: the cluster counts another incarnation of its storage. "+
		"It will not vote or count towards any quorum until the leader has caught it up and restored it "+
		"as a voter, which happens by itself; nothing it acknowledged before is lost as long as a majority kept theirs",
		append([]any{"incarnation", fmt.Sprintf("%016x", d.store.Incarnation()), "counted_incarnation", fmt.Sprintf("%016x", counted)}, kv...)...)
}

// checkCounted warns (once) if cs counts another incarnation of this
// node's storage than the one it has.
func (d *Driver) checkCounted(cs raft.ConfState) {
	if rec, ok := cs.IncarnationOf(d.cfg.ID); ok && rec != d.store.Incarnation() && slices.Contains(cs.Voters, d.cfg.ID) {
		d.WarnLostData(rec)
	}
}
