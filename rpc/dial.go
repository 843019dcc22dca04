package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/schema"
)

// Defaults for DialConfig.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultKeepAlive   = time.Minute
)

// DialConfig configures Dial. Zero fields take their defaults.
type DialConfig struct {
	// Timeout bounds connecting and the TLS handshake (the context passed
	// to Dial can end it sooner).
	Timeout time.Duration
	// TLSConfig, if set, makes the connection speak TLS.
	TLSConfig *tls.Config
	// MaxMessageSize is the largest frame accepted from the server, and
	// the largest sent: a call whose message is larger is not sent and
	// fails with a *MessageTooLargeError, while the connection carries
	// on. Nodes refuse frames over their own --max-message-size, so keep
	// it at most that (the defaults agree).
	MaxMessageSize uint64
	// FrameTimeout and WriteTimeout are as in Config.
	FrameTimeout time.Duration
	WriteTimeout time.Duration
	// KeepAlive is the interval between keepalive calls, which stop an
	// otherwise quiet connection (a listener waiting for messages, say)
	// from hitting the server's idle timeout. Negative disables them.
	KeepAlive time.Duration
	// Bootstrap, if set, is the capability this side offers the server on
	// the same connection (calls in both directions).
	Bootstrap capnp.Client
	// Logger receives the connection's logs; nil means no logging.
	Logger hclog.Logger
}

// DialError reports that a node could not be reached. Its message names the
// address and the cause in words a user can act on.
type DialError struct {
	Addr string
	Err  error
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cannot reach %s: %s", e.Addr, describeDialErr(e.Err))
}

// Unwrap returns the underlying network error.
func (e *DialError) Unwrap() error { return e.Err }

// describeDialErr keeps the part of a dial error that matters to a user
// ("connection refused"), dropping the "dial tcp a:b: connect:" prefixes.
func describeDialErr(err error) string {
	var errno syscall.Errno
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timed out"
	case errors.As(err, &dnsErr):
		return "cannot resolve host " + dnsErr.Name + ": " + dnsErr.Err
	case errors.As(err, &errno):
		return errno.Error()
	default:
		return err.Error()
	}
}

// ClientConn is a connection to a node. Node returns its bootstrap
// capability; Close ends the connection and every capability obtained
// through it.
type ClientConn struct {
	addr  string
	local net.Addr
	conn  *capnprpc.Conn
	codec *codec
	node  schema.Node

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// Dial connects to the node at addr (host:port) and returns the
// connection. The bootstrap capability is requested at once but not waited
// for: the first call on Node pipelines on it.
func Dial(ctx context.Context, addr string, cfg DialConfig) (*ClientConn, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultDialTimeout
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	if cfg.FrameTimeout == 0 {
		cfg.FrameTimeout = DefaultFrameTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}

	dctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, &DialError{Addr: addr, Err: err}
	}
	conn := raw
	if cfg.TLSConfig != nil {
		tc := tls.Client(raw, tlsClientConfig(cfg.TLSConfig, addr))
		if err := tc.HandshakeContext(dctx); err != nil {
			raw.Close()
			return nil, &DialError{Addr: addr, Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		conn = tc
	}

	transport, codec := newTransport(conn, limits{
		maxMessageSize: cfg.MaxMessageSize,
		frame:          cfg.FrameTimeout,
		write:          cfg.WriteTimeout,
	}, cfg.Logger)
	rc := capnprpc.NewConn(transport, &capnprpc.Options{
		BootstrapClient: cfg.Bootstrap,
		Logger:          capnpLogger{cfg.Logger.Named("capnp")},
	})
	c := &ClientConn{
		addr:  addr,
		local: raw.LocalAddr(),
		conn:  rc,
		codec: codec,
		// The bootstrap lives as long as the connection, not the dial ctx.
		node: schema.Node(rc.Bootstrap(context.Background())),
		stop: make(chan struct{}),
	}
	if cfg.KeepAlive > 0 {
		c.wg.Add(1)
		go c.keepAlive(cfg.KeepAlive)
	}
	return c, nil
}

// tlsClientConfig fills in ServerName from addr when the caller left it
// empty, as crypto/tls.Dial does.
func tlsClientConfig(cfg *tls.Config, addr string) *tls.Config {
	if cfg.ServerName != "" {
		return cfg
	}
	c := cfg.Clone()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		c.ServerName = host
	}
	return c
}

// keepAlive makes a cheap call every interval until the connection ends.
func (c *ClientConn) keepAlive(interval time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.conn.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), interval)
		f, release := c.node.Info(ctx, nil)
		_, _ = f.Struct()
		release()
		cancel()
	}
}

// Addr returns the address the connection was dialled to.
func (c *ClientConn) Addr() string { return c.addr }

// LocalAddr returns the connection's local address.
func (c *ClientConn) LocalAddr() net.Addr { return c.local }

// Node returns the node's bootstrap capability. The reference is borrowed
// from the connection: AddRef it to keep it past Close.
func (c *ClientConn) Node() schema.Node { return c.node }

// Done is closed when the connection has ended, whatever the reason.
func (c *ClientConn) Done() <-chan struct{} { return c.conn.Done() }

// Err reports why the connection ended, once Done is closed: the node's
// own reason if it sent one (*RemoteAbortError; for example a message
// over the node's size limit), else the read or write failure that ended
// it (a *MessageTooLargeError if the node sent more than this side
// accepts). It is nil while the connection is open and after an ordinary
// close by either side. Calls cut off by the end fail with go-capnp's
// Disconnected error, which does not say why: Err does.
func (c *ClientConn) Err() error {
	select {
	case <-c.conn.Done():
	default:
		return nil
	}
	if err := c.codec.endReason(); !isClosedConnErr(err) {
		return err
	}
	return nil
}

// Close ends the connection. Calls pending on it fail.
//
// The connection is closed before the bootstrap capability is released:
// go-capnp blocks for ever releasing a question that its peer never
// answered (a hung peer's bootstrap, say) while the connection is up, and
// the keepalive goroutine may be waiting on such a call.
func (c *ClientConn) Close() error {
	c.stopOnce.Do(func() { close(c.stop) })
	err := c.conn.Close()
	c.wg.Wait()
	c.node.Release()
	if errors.Is(err, capnprpc.ErrConnClosed) {
		err = nil
	}
	return err
}
