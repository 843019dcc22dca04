// Package client is the Go client library for capraft nodes.
//
// A Client talks to one node at a time, chosen from its endpoints, and
// moves to the next endpoint when a call finds its node unreachable. It is
// safe for concurrent use; every call takes a context.
//
//	c, err := client.New([]string{"127.0.0.1:7000"})
//	if err != nil { ... }
//	defer c.Close()
//	reply, err := c.Ping(ctx, "hello") // "echo:hello"
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Option configures a Client.
type Option func(*options)

type options struct {
	dial rpc.DialConfig
	log  hclog.Logger
}

// WithDialTimeout bounds connecting to one endpoint (default 5s).
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dial.Timeout = d } }

// WithTLS makes the client speak TLS with cfg.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.dial.TLSConfig = cfg } }

// WithLogger sets the client's logger (default: none).
func WithLogger(l hclog.Logger) Option { return func(o *options) { o.log = l } }

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("client is closed")

// Client is a connection to a capraft cluster.
type Client struct {
	endpoints []string
	opts      options

	mu     sync.Mutex
	next   int // endpoint to try first on the next dial
	conn   *session
	closed bool
}

// session is one connection and the capabilities cached on it.
type session struct {
	cc   *rpc.ClientConn
	echo schema.Echo // obtained once by pipelining; owned by the session
}

func (s *session) close() {
	s.echo.Release()
	_ = s.cc.Close()
}

// New returns a client for the nodes at endpoints (host:port). It does not
// connect until the first call.
func New(endpoints []string, opts ...Option) (*Client, error) {
	if len(endpoints) == 0 {
		return nil, errors.New("client: no endpoints given; pass at least one host:port")
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = hclog.NewNullLogger()
	}
	o.dial.Logger = o.log
	return &Client{endpoints: append([]string(nil), endpoints...), opts: o}, nil
}

// Endpoints returns the endpoints the client was created with.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// session returns the current connection, dialling the endpoints in turn
// if there is none (or it has ended).
func (c *Client) session(ctx context.Context) (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.conn != nil {
		select {
		case <-c.conn.cc.Done():
			c.conn.close()
			c.conn = nil
		default:
			return c.conn, nil
		}
	}
	var errs []error
	for i := range c.endpoints {
		addr := c.endpoints[(c.next+i)%len(c.endpoints)]
		cc, err := rpc.Dial(ctx, addr, c.opts.dial)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.next = (c.next + i) % len(c.endpoints)
		f, release := cc.Node().Echo(context.Background(), nil)
		s := &session{cc: cc, echo: f.Echo().AddRef()}
		release()
		c.conn = s
		return s, nil
	}
	return nil, &UnavailableError{causes: errs}
}

// forget drops s after a call on it found the node unreachable, so the next
// call dials again, starting with the next endpoint.
func (c *Client) forget(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == s {
		c.conn = nil
		c.next = (c.next + 1) % len(c.endpoints)
		s.close()
	}
}

// UnavailableError reports that no node could be reached. It wraps the
// error met at each endpoint tried (or the reason the connection was lost).
type UnavailableError struct {
	causes []error
}

func (e *UnavailableError) Error() string {
	if len(e.causes) == 1 {
		return e.causes[0].Error()
	}
	msgs := make([]string, len(e.causes))
	for i, err := range e.causes {
		msgs[i] = err.Error()
	}
	return "no endpoint reachable: " + strings.Join(msgs, "; ")
}

// Unwrap returns the errors met at each endpoint.
func (e *UnavailableError) Unwrap() []error { return e.causes }

// IsUnavailable reports whether err says that no node could be reached.
func IsUnavailable(err error) bool {
	var u *UnavailableError
	return errors.As(err, &u)
}

// check turns a failed call's error into the client's terms, forgetting
// the session if its connection is gone.
func (c *Client) check(s *session, op string, err error) error {
	lost := exc.IsType(err, exc.Disconnected)
	select {
	case <-s.cc.Done():
		lost = true // however the failure was reported, the connection is gone
	default:
	}
	if lost {
		c.forget(s)
	}
	return &CallError{Op: op, Addr: s.cc.Addr(), ConnectionLost: lost, Err: err}
}

// CallError reports a call that reached a node and failed.
type CallError struct {
	Op             string // the operation, e.g. "ping"
	Addr           string // the node's address
	ConnectionLost bool   // the connection broke; the call's outcome is unknown
	Err            error
}

func (e *CallError) Error() string {
	if e.ConnectionLost {
		return fmt.Sprintf("connection to %s lost during %s: %s", e.Addr, e.Op, rootMessage(e.Err))
	}
	return fmt.Sprintf("%s on %s failed: %s", e.Op, e.Addr, rootMessage(e.Err))
}

// Unwrap returns the underlying error.
func (e *CallError) Unwrap() error { return e.Err }

// rootMessage returns the innermost message of a go-capnp error, without
// the "schema/x.capnp:Iface.method:" prefixes that only repeat the call.
func rootMessage(err error) string {
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err.Error()
		}
		err = inner
	}
}

// Ping sends msg to a node and returns its reply ("echo:" + msg). The node
// also delivers msg to its listeners.
func (c *Client) Ping(ctx context.Context, msg string) (string, error) {
	s, err := c.session(ctx)
	if err != nil {
		return "", err
	}
	f, release := s.echo.Ping(ctx, func(p schema.Echo_ping_Params) error { return p.SetMsg(msg) })
	defer release()
	res, err := f.Struct()
	if err != nil {
		return "", c.check(s, "ping", err)
	}
	return res.Reply()
}

// NodeInfo describes a node.
type NodeInfo struct {
	ID      uint64
	Version string
	Listen  string
}

// Info asks the connected node to describe itself.
func (c *Client) Info(ctx context.Context) (NodeInfo, error) {
	s, err := c.session(ctx)
	if err != nil {
		return NodeInfo{}, err
	}
	f, release := s.cc.Node().Info(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return NodeInfo{}, c.check(s, "info", err)
	}
	info, err := res.Info()
	if err != nil {
		return NodeInfo{}, err
	}
	v, _ := info.Version()
	l, _ := info.Listen()
	return NodeInfo{ID: info.Id(), Version: v, Listen: l}, nil
}

// Close closes the connection. Calls in flight fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.conn != nil {
		c.conn.close()
		c.conn = nil
	}
	return nil
}
