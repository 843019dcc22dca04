package rpc

import (
	"crypto/tls"
	"time"

	"capnproto.org/go/capnp/v3"
	"github.com/hashicorp/go-hclog"
)

// Defaults used by DefaultConfig and for zero fields of a Config.
const (
	DefaultMaxMessageSize   = 16 << 20 // 16 MiB: room for large AppendEntries batches and snapshot chunks
	DefaultMaxConns         = 1024
	DefaultPeerConns        = 64 // at most MaxConns/4; see Config.PeerConns
	DefaultEvictIdle        = 10 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultFrameTimeout     = 30 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultWriteTimeout     = 30 * time.Second
)

// Config configures a Server. The zero value of every field but Bootstrap
// means "use the default".
type Config struct {
	// Bootstrap returns the capability a new connection receives when the
	// peer asks for its bootstrap interface. It is called once per
	// connection, before the first message is read, and the Server takes
	// ownership of the returned client (it is released with the
	// connection). Capabilities it creates should be exported through
	// conn.Exporter so that their calls are guarded.
	Bootstrap func(conn *ConnInfo) capnp.Client

	// MaxMessageSize is the largest frame, in bytes, read from or
	// written to a peer. A larger incoming frame is not allocated: the
	// peer is sent an Abort saying so, then the connection is closed.
	// Results larger than this are not sent; the call fails with an
	// error saying so instead. Both ends of a connection should agree on
	// it.
	MaxMessageSize uint64

	// MaxConns caps the connections served at once. A connection that
	// finds every slot taken replaces an idle client connection (see
	// EvictIdle) or is closed as soon as it is accepted.
	MaxConns int

	// PeerConns is how many of the MaxConns slots only peer connections
	// (ConnInfo.MarkPeer) may keep: other connections hold at most
	// MaxConns-PeerConns slots between them. At accept time nothing tells
	// a peer from a client, so a connection that finds the client slots
	// full is let into a free reserved slot on probation: it keeps it if
	// it becomes a peer within HandshakeTimeout, else it is closed then
	// (or becomes a client, if a client slot has come free meanwhile).
	// Zero means DefaultPeerConns, but at most MaxConns/4; negative means
	// none. It is capped at MaxConns-1.
	PeerConns int

	// EvictIdle: when a new connection finds no free slot, the client
	// connection (not a peer's) from which nothing arrived for longest is
	// closed to make room for it, if that is at least EvictIdle ago and
	// none of its calls is in flight. Negative: never close one.
	EvictIdle time.Duration

	// HandshakeTimeout bounds the time from accept to the first complete
	// frame (including a TLS handshake).
	HandshakeTimeout time.Duration

	// FrameTimeout bounds the time from the first byte of a frame to its
	// last, so a peer that sends a partial frame cannot hold a connection.
	FrameTimeout time.Duration

	// IdleTimeout closes a connection from which no frame arrived for this
	// long. Negative disables it. Clients from this project send keepalives
	// (see DialConfig.KeepAlive).
	IdleTimeout time.Duration

	// WriteTimeout bounds a single frame write to the peer.
	WriteTimeout time.Duration

	// TLSConfig, if set, makes the server speak TLS on every connection.
	TLSConfig *tls.Config

	// Logger receives the server's logs; nil means no logging.
	Logger hclog.Logger
}

// DefaultConfig returns a Config with every limit at its default. The caller
// still has to set Bootstrap. PeerConns is left zero: its default depends
// on MaxConns.
func DefaultConfig() Config {
	return Config{
		MaxMessageSize:   DefaultMaxMessageSize,
		MaxConns:         DefaultMaxConns,
		EvictIdle:        DefaultEvictIdle,
		HandshakeTimeout: DefaultHandshakeTimeout,
		FrameTimeout:     DefaultFrameTimeout,
		IdleTimeout:      DefaultIdleTimeout,
		WriteTimeout:     DefaultWriteTimeout,
	}
}

// withDefaults fills the zero fields of c.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = d.MaxMessageSize
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	switch {
	case c.PeerConns == 0:
		c.PeerConns = min(DefaultPeerConns, c.MaxConns/4)
	case c.PeerConns < 0:
		c.PeerConns = 0
	}
	c.PeerConns = max(0, min(c.PeerConns, c.MaxConns-1))
	if c.EvictIdle == 0 {
		c.EvictIdle = d.EvictIdle
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = d.HandshakeTimeout
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = d.FrameTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	return c
}
