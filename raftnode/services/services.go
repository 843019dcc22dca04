package services

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Config configures a node's services: who the node is, who may do
// what, and the parts they serve.
type Config struct {
	// ID is the node's id; ClusterID the hash of its cluster's name
	// (raftnode.ClusterID).
	ID, ClusterID uint64
	// Version and Advertise are reported by Node.info and status.
	Version, Advertise string
	// Security says who may do what (validated: Security.Validate).
	Security Security
	// HeartbeatInterval, ElectionTimeout and RequestTimeout are the
	// node's: requests wait at most RequestTimeout; a call handed to a
	// leader that another node replaced is abandoned within an election
	// timeout.
	HeartbeatInterval, ElectionTimeout, RequestTimeout time.Duration
	// Logger receives the services' logs.
	Logger hclog.Logger

	// Driver is the node's engine; KV the state machine it drives, read
	// here (reads, sessions, token keys); Echo the echo hub.
	Driver *driver.Driver
	KV     *kv.Store
	Echo   *echo.Hub
	// Watch configures the watch hub the services run over KV's event
	// history (queue bounds, batching).
	Watch watch.Config
	// Transport reaches the leader's Raft capability, through which calls
	// are handed to the leader (the node's peer transport).
	Transport PeerDialer
	// Peers receives what peers send on the Raft capability; it may also
	// take their snapshots and answer their discovery (the node's
	// handler, which the peer transport's server hands them to).
	Peers PeerHandler
	// Requests, if set, sees every KV request answered (metrics).
	Requests RequestObserver
}

// PeerDialer reaches a peer's Raft capability.
type PeerDialer interface {
	// Raft returns peer id's Raft capability on a live connection,
	// dialing if needed and waiting at most until ctx ends. The caller
	// releases it.
	Raft(ctx context.Context, id uint64) (schema.Raft, error)
}

// PeerHandler receives the messages peers send on their streams (see
// the peer transport's Handler, whose contract it shares).
type PeerHandler interface {
	// Deliver hands msgs, one send call's messages in the order the
	// peer sent them, to the driver without blocking; done is called
	// once when the core has taken them (nm set if it ignored one as a
	// non-member's), or with err if it could not (stopping).
	Deliver(msgs []raft.Message, done func(nm *raft.NotMember, err error))
}

// Server is a node's Cap'n Proto edge: it hands each connection a Node
// capability holding what the connection's identity was granted
// (Bootstrap), and serves the KV, Admin, Echo and Raft capabilities
// reached from it, through the driver.
type Server struct {
	cfg       Config
	log       hclog.Logger
	clusterID uint64
	d         *driver.Driver
	kv        *kv.Store
	hub       *echo.Hub
	watches   *watch.Hub
	tr        PeerDialer

	// proposeID numbers the commands this node proposes (kv.Command.ID).
	proposeID atomic.Uint64
	// backingUp is set while a backup is sent (backup.go): one at a time.
	backingUp atomic.Bool
	// leaseStop ends the running lease expirer (kvlease.go); leaseMu
	// guards it and orders the start of every goroutine Close waits for
	// with Close (goUntilClosed).
	leaseMu   sync.Mutex
	leaseStop chan struct{}

	stopc     chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns the services of a node. Its driver may still be starting:
// nothing is served before the first connection.
func New(cfg Config) (*Server, error) {
	if cfg.Driver == nil || cfg.KV == nil || cfg.Echo == nil || cfg.Transport == nil {
		return nil, errors.New("services: Driver, KV, Echo and Transport are required")
	}
	if err := cfg.Security.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	sv := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		clusterID: cfg.ClusterID,
		d:         cfg.Driver,
		kv:        cfg.KV,
		hub:       cfg.Echo,
		tr:        cfg.Transport,
		stopc:     make(chan struct{}),
	}
	if cfg.Watch.Logger == nil {
		cfg.Watch.Logger = cfg.Logger.Named("watch")
	}
	sv.watches = watch.NewHub(cfg.KV, cfg.Watch)
	sv.proposeID.Store(rand.Uint64())
	return sv, nil
}

// Bootstrap returns the Node capability for one connection. It is meant
// for rpc.Config.Bootstrap.
func (sv *Server) Bootstrap(conn *rpc.ConnInfo) capnp.Client {
	return sv.newNodeCapability(conn, sv.connGrant(conn), new(challengeState), new(transport.StreamLimits)).export()
}

// Close stops what the services run on their own (the first token key's
// proposal, the watches, whose watchers are told the node is stopping)
// and waits for it. Calls still being served end with the driver.
func (sv *Server) Close() {
	sv.closeOnce.Do(func() {
		// Under leaseMu: a lease expirer starting now either counted
		// itself in wg already or sees stopc closed (WaitGroup.Add must
		// not race Wait).
		sv.leaseMu.Lock()
		close(sv.stopc)
		sv.leaseMu.Unlock()
		sv.watches.Close()
		sv.wg.Wait()
	})
}

// goUntilClosed runs fn on a goroutine that Close waits for, unless the
// services are closing (then fn does not run).
func (sv *Server) goUntilClosed(fn func()) bool {
	sv.leaseMu.Lock()
	defer sv.leaseMu.Unlock()
	return sv.goUntilClosedLocked(fn)
}

// goUntilClosedLocked is goUntilClosed with leaseMu held: Close closes
// stopc under it, so a goroutine is either counted in wg before Close
// waits or not started at all (WaitGroup.Add must not race Wait).
func (sv *Server) goUntilClosedLocked(fn func()) bool {
	select {
	case <-sv.stopc:
		return false
	default:
	}
	sv.wg.Add(1)
	go func() {
		defer sv.wg.Done()
		fn()
	}()
	return true
}

// Watches returns the node's watch hub (for its counters).
func (sv *Server) Watches() *watch.Hub { return sv.watches }

// OnApplied is the driver's Config.OnApplied (see observeApplied).
func (sv *Server) OnApplied(index uint64, res statemachine.Result, replayed bool) {
	sv.observeApplied(index, res, replayed)
}

// OnLeading is the driver's Config.OnLeading: a new leader of a secure
// cluster creates its first token key, and every new leader starts
// expiring leases (after a grace: see kvlease.go).
func (sv *Server) OnLeading() {
	sv.createFirstTokenKey()
	sv.startLeaseExpirer(time.Now())
}

// untilStopped returns a context that ends after d, or as soon as the
// services are closed.
func (sv *Server) untilStopped(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-sv.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
