// Package client is the Go client library for capraft clusters.
//
// A Client talks to one node at a time, chosen from its endpoints, and
// moves to the next endpoint when the node it uses is unreachable, shutting
// down or cut off from the leader. With WithReadSpreading its reads go to
// every endpoint instead (any node serves reads, a linearizable one after
// learning a read index from the leader), while everything else keeps to
// that one node. It is safe for concurrent use, and meant to be shared:
// the operations of many goroutines are coalesced into
// KV.batch calls over one connection, with a few batch calls in flight at
// once. An operation issued while nothing is in flight is sent at once, so
// a lone operation costs one round trip.
//
//	c, err := client.New([]string{"127.0.0.1:7000", "127.0.0.1:7001"})
//	if err != nil { ... }
//	defer c.Close()
//	rev, err := c.Put(ctx, "greeting", []byte("hello"))
//	kv, err := c.Get(ctx, "greeting")
//
// Writes are exactly-once: the client opens a session with the cluster on
// its first write and numbers its writes, so a write retried after a lost
// connection is applied at most once. Reads and writes are retried on
// transient failures (connection loss, no leader, a node shutting down)
// until their context ends; give every context a deadline. When a write's
// context ends while an attempt of it may have reached a node, the error
// wraps ErrUnknownOutcome: the write may or may not have been applied.
// A membership change or leadership transfer is not retried once it may
// have reached the leader; if its answer is lost, or the leader did not
// see it through in time, the error wraps ErrUnknownOutcome too.
//
// Errors, all matchable with errors.Is / errors.As:
//   - ErrNotFound: Get of a missing key.
//   - ErrCompareFailed (*CompareFailedError, with the key's current state):
//     a CompareAndSwap or CompareAndDelete whose condition did not hold.
//   - ErrUnknownOutcome: a write, membership change or leadership transfer
//     that may or may not have taken effect; the message says how to find
//     out.
//   - *UnavailableError (IsUnavailable): no node reachable, or none with a
//     leader, until the context ended; nothing was applied.
//   - ErrTooLarge: a key, value or batch over the limits, refused by the
//     client before sending (*TooLargeError; see WithSizeLimits) or by a
//     node (*ServerError with CodeTooLarge); not retried.
//   - ErrPermissionDenied (a *ServerError with CodePermissionDenied): the
//     connection's credential does not grant the operation, or its token
//     was refused; the message names the credential needed. Not retried.
//   - ErrCompacted (*CompactedError, with the oldest revision kept): a
//     watch whose revision a node's history no longer holds; see Watch
//     and ListAndWatch.
//   - ErrSessionExpired, ErrClosed.
//   - *ServerError{Code, Message}: the rest (an invalid request, an
//     internal error); these are not retried.
//
// Membership, status and token calls (Members, AddMember, PromoteMember,
// RemoveMember, TransferLeadership, Snapshot, CreateToken, RevokeToken)
// go through Node.admin() on the current connection; any node accepts
// them. Status asks one given endpoint.
//
// Credentials: WithTLS with a client certificate (mutual TLS), or
// WithToken, which logs every connection in with a token, pipelined, so
// it costs no round trip. Identity says what the connection holds.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3/exc"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// Defaults of the options.
const (
	DefaultMaxBatch       = 256     // operations per KV.batch call
	DefaultMaxBatchBytes  = 1 << 20 // bytes of keys and values per KV.batch call
	DefaultMaxInFlight    = 1       // KV.batch calls in flight at once (see WithMaxInFlight)
	DefaultRequestTimeout = 10 * time.Second
)

// Option configures a Client.
type Option func(*options)

type options struct {
	dial           rpc.DialConfig
	log            hclog.Logger
	maxBatch       int
	maxBatchBytes  int
	maxInFlight    int
	requestTimeout time.Duration
	stallTimeout   time.Duration
	maxKeySize     int
	maxValueSize   int
	token          string
	spread         *bool // WithReadSpreading; nil: DefaultReadSpreading
}

// WithDialTimeout bounds connecting to one endpoint (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dial.Timeout = d } }

// WithTLS makes the client speak TLS with cfg. For mutual TLS, put the
// client certificate in cfg.Certificates: a node that verifies it against
// the cluster CA grants the role its Subject's OrganizationalUnit names.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.dial.TLSConfig = cfg } }

// WithToken makes every connection the client opens log in with token
// (minted by Admin.createToken, raftctl token create, or derived from one
// offline) and use only what it grants. The login is pipelined: the first
// call on a connection still costs one round trip. A reconnect logs in
// again. A token the node refuses, or an operation outside its grant,
// fails with an error matching ErrPermissionDenied. New refuses a token
// that is not well formed. The empty token means none: the connection
// holds what the node grants anonymous connections.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithLogger sets the client's logger (default: none).
func WithLogger(l hclog.Logger) Option { return func(o *options) { o.log = l } }

// WithMaxBatch caps the operations coalesced into one KV.batch call
// (default 256, at most the 1024 a node accepts). 1 disables coalescing.
func WithMaxBatch(n int) Option { return func(o *options) { o.maxBatch = n } }

// WithMaxInFlight caps the KV.batch calls in flight at once on the
// connection for each kind of operation (default 1): writes, linearizable
// reads and serializable reads are batched apart, so that a read is never
// answered only once a write batched with it commits. Operations issued
// while all calls of their kind are in flight wait and go out together in
// the next batch. More calls in flight lower the
// wait of an operation that arrives while a batch is out, at the cost of
// smaller batches: a free sender takes whatever is queued, often a single
// operation, and each call (and each Raft entry) has a fixed cost on both
// ends. On 2 shared cores, 16 goroutines did about 40k puts/s with 1 in
// flight, 20k with 2 and 13k with 4 against an in-process node; against a
// local 3-node cluster, 1 in flight also did best (4.3k puts/s at 16
// goroutines against 2.4k with 2; 10.3k at 64 against 8.1k).
func WithMaxInFlight(n int) Option { return func(o *options) { o.maxInFlight = n } }

// WithRequestTimeout bounds one attempt: a single call to a node, after
// which the operation is retried (default 10s, above the node's own
// request timeout so that the node normally answers first). The whole
// operation, retries included, is bounded by its context.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client is closed")

// Client is a connection to a capraft cluster. Create it with New; it is
// safe for concurrent use.
type Client struct {
	endpoints []string
	opts      options

	ctx    context.Context // ends at Close: bounds dials and calls owned by the client
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines owned by the client

	mu     sync.Mutex
	next   int   // endpoint to try first on the next dial
	cur    *conn // the current connection (possibly still dialling), or nil
	closed bool

	queues [batchKinds]queue // one per batchKind
	pool   pool              // the connections reads spread over (spread.go)
	sess   sessions
	keeper keeper // the leases KeepAlive keeps alive (lease.go)
	ids    endpointIDs
}

// conn is one connection and the capabilities cached on it. Its fields
// below ready are set before ready is closed and read-only after.
type conn struct {
	ready chan struct{} // closed once dialling finished
	err   error         // dialling failed: every endpoint's error
	idx   int           // index of the endpoint in Client.endpoints
	cc    *rpc.ClientConn
	// node is the Node every call goes through: the bootstrap, or what
	// logging in with the client's token returned (a pipelined promise).
	node schema.Node
	echo schema.Echo // obtained once by pipelining on node; owned by the conn
	kv   schema.KV   // likewise
	// The futures node, echo and kv came from. Releasing a future before
	// its answer arrives makes go-capnp hold calls on the pipelined
	// capability until it resolves, which costs a round trip or two
	// (measured); so they are released with the connection.
	futures []func()

	// readsInFlight counts the read KV.batch calls in flight on the
	// connection: reads spread to the endpoint with the fewest
	// (spread.go). Writes do not count: a read call beside a write call
	// on the leader waits for nothing the write waits for.
	readsInFlight atomic.Int32
	// served is set once a batch call on it was answered: its
	// endpoint's backoff for reads starts over (spread.go).
	served atomic.Bool

	// Guarded by Client.mu.
	users   int  // acquire calls not yet released
	retired bool // not the current connection: acquire hands it out no more
	// pooled: reads use it (Client.pool holds it); a retired connection
	// closes when users drops to 0 and it is not pooled.
	pooled bool
	closed bool
}

// dead reports whether the connection failed to dial or has ended.
func (cn *conn) dead() bool {
	select {
	case <-cn.ready:
	default:
		return false
	}
	if cn.err != nil {
		return true
	}
	select {
	case <-cn.cc.Done():
		return true
	default:
		return false
	}
}

func (cn *conn) addr() string {
	if cn.cc == nil {
		return ""
	}
	return cn.cc.Addr()
}

// close closes the connection, then releases what was obtained on it:
// go-capnp blocks releasing a call its peer never answered (the
// pipelined echo() and kv() of a node that stalled) while the connection
// is up.
func (cn *conn) close() {
	if cn.cc == nil {
		return
	}
	_ = cn.cc.Close()
	cn.echo.Release()
	cn.kv.Release()
	cn.node.Release()
	for _, release := range cn.futures {
		release()
	}
}

// New returns a client for the nodes at endpoints (host:port). It does not
// connect until the first call.
func New(endpoints []string, opts ...Option) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("client: no endpoints given; pass at least one host:port")
	}
	for _, e := range endpoints {
		if e == "" {
			return nil, errors.New("client: empty endpoint; pass host:port")
		}
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.token != "" {
		// Refused here rather than by every node at every login. The
		// error never shows the token, a secret.
		if _, err := token.Parse(o.token); err != nil {
			return nil, fmt.Errorf("client: WithToken: %w", err)
		}
	}
	if o.log == nil {
		o.log = hclog.NewNullLogger()
	}
	if o.maxBatch <= 0 {
		o.maxBatch = DefaultMaxBatch
	}
	if o.maxBatchBytes <= 0 {
		o.maxBatchBytes = DefaultMaxBatchBytes
	}
	// A node refuses larger batches. One operation alone is always
	// within nodeMaxBatchBytes once its key and value are within limits.
	o.maxBatch = min(o.maxBatch, nodeMaxBatchOps)
	o.maxBatchBytes = min(o.maxBatchBytes, nodeMaxBatchBytes)
	if o.maxKeySize <= 0 {
		o.maxKeySize = DefaultMaxKeySize
	}
	if o.maxValueSize <= 0 {
		o.maxValueSize = DefaultMaxValueSize
	}
	if o.maxInFlight <= 0 {
		o.maxInFlight = DefaultMaxInFlight
	}
	if o.requestTimeout <= 0 {
		o.requestTimeout = DefaultRequestTimeout
	}
	if o.stallTimeout == 0 {
		o.stallTimeout = DefaultStallTimeout
	}
	o.dial.Logger = o.log
	c := &Client{endpoints: append([]string(nil), endpoints...), opts: o}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.pool.init(len(c.endpoints))
	for i := range c.queues {
		c.queues[i].kind = batchKind(i)
	}
	c.sess.init()
	return c, nil
}

// Endpoints returns the endpoints the client was created with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// acquire returns the current connection, starting a dial if there is none
// (or it has ended), and waits for it until ctx ends. The dial itself runs
// in its own goroutine, bounded by the dial timeout, so concurrent callers
// share it and none holds the mutex while it runs. Every successful
// acquire must be paired with release.
func (c *Client) acquire(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	cn := c.cur
	if cn != nil && cn.dead() {
		c.retireLocked(cn, true)
		cn = nil
	}
	if cn == nil {
		if cn = c.adoptLocked(); cn == nil {
			cn = &conn{ready: make(chan struct{})}
			c.cur = cn
			c.wg.Add(1)
			go c.dial(cn, c.next)
		}
	}
	cn.users++
	c.mu.Unlock()

	select {
	case <-cn.ready:
	case <-ctx.Done():
		c.release(cn)
		return nil, ctx.Err()
	}
	if cn.err != nil {
		c.release(cn)
		return nil, cn.err
	}
	return cn, nil
}

// readyConn acquires the current connection if it is up, without
// waiting; nil means a dial is needed or in progress (or the client is
// closed), which acquire handles.
func (c *Client) readyConn() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.cur
	if c.closed || cn == nil || cn.dead() {
		return nil
	}
	select {
	case <-cn.ready:
	default:
		return nil
	}
	if cn.err != nil {
		return nil
	}
	cn.users++
	return cn
}

// dial connects cn to the first endpoint that answers, starting at start.
func (c *Client) dial(cn *conn, start int) {
	defer c.wg.Done()
	var errs []error
	for i := range c.endpoints {
		idx := (start + i) % len(c.endpoints)
		addr := c.endpoints[idx]
		if err := c.connect(cn, idx); err != nil {
			c.opts.log.Debug("dial failed", "addr", addr, "error", err)
			errs = append(errs, err)
			if c.ctx.Err() != nil {
				break
			}
			continue
		}
		c.mu.Lock()
		c.next = idx
		closed := c.closed
		steer := !closed && len(c.endpoints) > 1
		if steer {
			// steer uses cn.node: as a user, so cn is not closed (and
			// its capabilities released) under it.
			cn.users++
		}
		if !closed && c.cur == cn {
			c.poolLocked(cn) // reads may use it too
		}
		c.mu.Unlock()
		if closed {
			cn.close()
			cn.cc = nil
			cn.err = ErrClosed
		} else if steer {
			c.wg.Add(1)
			go c.steer(cn)
		}
		close(cn.ready)
		return
	}
	if c.ctx.Err() != nil {
		cn.err = ErrClosed
	} else {
		cn.err = &UnavailableError{causes: errs}
	}
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
	}
	c.mu.Unlock()
	close(cn.ready)
}

// connect dials the endpoint at idx for cn and obtains the capabilities
// it caches.
func (c *Client) connect(cn *conn, idx int) error {
	cc, err := rpc.Dial(c.ctx, c.endpoints[idx], c.opts.dial)
	if err != nil {
		return err
	}
	cn.idx, cn.cc = idx, cc
	// Pipelined on the bootstrap (and the login): the first call
	// through them is one round trip. Each accessor is read once (see
	// capnp-go.md §5).
	var lrel func()
	cn.node, lrel = c.login(cc)
	ef, erel := cn.node.Echo(context.Background(), nil)
	cn.echo = ef.Echo().AddRef()
	kf, krel := cn.node.Kv(context.Background(), nil)
	cn.kv = kf.Kv().AddRef()
	cn.futures = []func(){erel, krel, lrel}
	return nil
}

// login returns the Node calls on cc go through, owned by the caller,
// and the release of the future it came from (to call after closing cc):
// with a token, the node Node.login returns, pipelined (nothing waits
// for the login); without, the bootstrap.
func (c *Client) login(cc *rpc.ClientConn) (schema.Node, func()) {
	if c.opts.token == "" {
		return cc.Node().AddRef(), func() {}
	}
	f, release := cc.Node().Login(context.Background(), func(p schema.Node_login_Params) error {
		cred, err := p.NewCredential()
		if err != nil {
			return err
		}
		return cred.SetToken(c.opts.token)
	})
	return f.Node().AddRef(), release
}

// release ends one use of cn; a retired connection closes with its last use.
func (c *Client) release(cn *conn) {
	c.mu.Lock()
	cn.users--
	closeIt := cn.retired && !cn.pooled && cn.users == 0 && !cn.closed
	if closeIt {
		cn.closed = true
	}
	c.mu.Unlock()
	if closeIt {
		cn.close()
	}
}

// retire stops new calls from using cn; the next call dials again, starting
// with the endpoint after cn's if next is set (cn failed: reads then skip
// its endpoint for a while, see pool). Calls still using cn finish.
func (c *Client) retire(cn *conn, next bool) {
	c.mu.Lock()
	closeIt := c.retireLocked(cn, next)
	c.mu.Unlock()
	if closeIt {
		cn.close()
	}
}

func (c *Client) retireLocked(cn *conn, next bool) (closeNow bool) {
	if c.cur == cn {
		c.cur = nil
		if next && cn.err == nil {
			c.next = (cn.idx + 1) % len(c.endpoints)
		}
	}
	cn.retired = true
	if next {
		c.unpoolLocked(cn)
	}
	if cn.users == 0 && !cn.closed && !cn.pooled && cn.err == nil {
		select {
		case <-cn.ready:
			cn.closed = true
			return true
		default: // still dialling: its last user closes it
		}
	}
	return false
}

// connLost reports whether err (from a call on cn) means the connection is
// gone, and retires cn if so.
func (c *Client) connLost(cn *conn, err error) bool {
	// A node that cannot serve the connection yet (it cannot check the
	// token before it has caught up) ends it too: the next connection,
	// to another node, logs in again.
	lost := isConnErr(err) || notReady(err)
	select {
	case <-cn.cc.Done():
		lost = true // however the failure was reported, the connection is gone
	default:
	}
	if lost {
		c.retire(cn, true)
	}
	return lost
}

// unavailablePrefix starts the text of the exception a node raises when it
// cannot serve a connection yet, such as a login it cannot check before it
// has caught up with its cluster (see schema/node.capnp): try another node.
const unavailablePrefix = "unavailable: "

func notReady(err error) bool {
	return err != nil && strings.Contains(err.Error(), unavailablePrefix)
}

// isConnErr reports whether err says the connection failed (as opposed to
// an exception the node answered with): go-capnp reports a broken
// connection as Disconnected, or as Failed wrapping the transport's error.
func isConnErr(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		var ex *exc.Exception
		if errors.As(e, &ex) && ex.Type == exc.Disconnected {
			return true
		}
		if ex, ok := e.(exc.Exception); ok && ex.Type == exc.Disconnected {
			return true
		}
	}
	return errors.Is(err, capnprpc.ErrConnClosed) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// check turns a failed call's error into the client's terms, retiring the
// connection if it is gone. A permission failure leaves it be.
func (c *Client) check(cn *conn, op string, err error) error {
	if pe := permissionError(err, cn.addr()); pe != nil {
		return fmt.Errorf("%s: %w", op, pe)
	}
	lost := c.connLost(cn, err)
	return &CallError{Op: op, Addr: cn.addr(), ConnectionLost: lost, Err: err}
}

// connCall runs call, one call on the current connection, and turns its
// failure into the client's terms.
func connCall[T any](c *Client, ctx context.Context, op string, call func(cn *conn) (T, error)) (T, error) {
	var zero T
	cn, err := c.acquire(ctx)
	if err != nil {
		return zero, err
	}
	defer c.release(cn)
	v, err := call(cn)
	if err != nil {
		return zero, c.check(cn, op, err)
	}
	return v, nil
}

// Ping sends msg to a node and returns its reply ("echo:" + msg). The node
// also delivers msg to its listeners.
func (c *Client) Ping(ctx context.Context, msg string) (string, error) {
	return connCall(c, ctx, "ping", func(cn *conn) (string, error) {
		f, release := cn.echo.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg(msg) })
		defer release()
		res, err := f.Struct()
		if err != nil {
			return "", err
		}
		return res.Reply()
	})
}

// NodeInfo describes a node.
type NodeInfo struct {
	ID      uint64
	Version string
	Listen  string
}

// Info asks the connected node to describe itself.
func (c *Client) Info(ctx context.Context) (NodeInfo, error) {
	return connCall(c, ctx, "info", func(cn *conn) (NodeInfo, error) {
		f, release := cn.node.Info(ctx, nil)
		defer release()
		res, err := f.Struct()
		if err != nil {
			return NodeInfo{}, err
		}
		info, err := res.Info()
		if err != nil {
			return NodeInfo{}, err
		}
		v, _ := info.Version()
		l, _ := info.Listen()
		return NodeInfo{ID: info.Id(), Version: v, Listen: l}, nil
	})
}

// closeSessionTimeout bounds the goodbye Close sends for the session.
const closeSessionTimeout = time.Second

// Close ends the client: it tells the cluster its session is over (briefly,
// best effort), closes the connection and waits for the client's
// goroutines. Operations in flight fail with ErrClosed (a write among them
// with an error that also wraps ErrUnknownOutcome).
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cn := c.cur
	c.cur = nil
	if cn != nil {
		cn.users++ // keep it for the goodbye below
	}
	pooled := c.drainPoolLocked(cn)
	c.mu.Unlock()
	for _, p := range pooled {
		p.close() // calls in flight on it fail, as on the current one
	}

	for i := range c.queues {
		c.queues[i].close()
	}
	c.cancel() // ends dials, the keepalive loop and the batch calls in flight
	if cn != nil {
		c.closeSession(cn)
		c.mu.Lock()
		cn.users--
		closeIt := !cn.closed
		cn.closed = true
		c.mu.Unlock()
		if closeIt {
			select {
			case <-cn.ready:
				cn.close()
			default: // still dialling: dial sees closed and cleans up
			}
		}
	}
	c.wg.Wait()
	return nil
}
