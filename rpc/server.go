package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	capnprpc "capnproto.org/go/capnp/v3/rpc"
	"github.com/hashicorp/go-hclog"
)

// ErrServerClosed is returned by Serve and ListenAndServe after Shutdown or
// Close.
var ErrServerClosed = errors.New("rpc: server closed")

// ConnInfo describes one served connection to the Bootstrap function and,
// through ConnFromContext, to every handler called on it.
type ConnInfo struct {
	// ID numbers connections in accept order, for logs.
	ID uint64
	// RemoteAddr and LocalAddr are the connection's addresses.
	RemoteAddr net.Addr
	LocalAddr  net.Addr
	// TLS is the negotiated TLS state, or nil for a plain connection.
	TLS *tls.ConnectionState
	// Exporter guards the capabilities handed out on this connection.
	Exporter *Exporter
	// Logger is the server's logger with the connection's id and remote
	// address attached.
	Logger hclog.Logger

	srv *Server
	sc  *serverConn
}

// MarkPeer records that the connection carries a peer node's traffic: it
// may then keep a slot reserved for peers (Config.PeerConns), and it is
// never closed to make room for another connection. A node calls it when
// the connection asks for its Raft capability; once peers authenticate,
// it is to be called when one has proven who it is instead. It is
// idempotent, and does nothing on a ConnInfo that no Server made.
func (ci *ConnInfo) MarkPeer() {
	if ci.srv != nil {
		ci.srv.markPeer(ci.sc)
	}
}

type connInfoKey struct{}

// ConnFromContext returns the ConnInfo of the connection a call arrived on,
// if ctx is a handler's context on a Server.
func ConnFromContext(ctx context.Context) (*ConnInfo, bool) {
	ci, ok := ctx.Value(connInfoKey{}).(*ConnInfo)
	return ci, ok
}

// Server serves capabilities over stream connections. Create it with
// NewServer; it is safe for concurrent use.
type Server struct {
	cfg  Config
	log  hclog.Logger
	gate *callGate

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{} // every connection not yet ended
	slots     [numRoles]int            // connections holding a slot, by role
	evicted   uint64                   // see ConnStats
	refused   uint64
	closed    bool          // Shutdown or Close began: accept nothing new
	done      chan struct{} // closed when closed becomes true
	conWG     sync.WaitGroup

	nextID atomic.Uint64
}

// serverConn is one accepted connection.
type serverConn struct {
	raw      net.Conn
	role     connRole     // the slot it holds; guarded by Server.mu
	calls    atomic.Int64 // calls that arrived on it and are in flight
	lastRead atomic.Int64 // monoNow when its last frame was read (or it was accepted)
	mu       sync.Mutex
	rpc      *capnprpc.Conn // nil until the connection is set up
	codec    *codec
	closed   bool        // close was requested before rpc was set
	proba    *time.Timer // ends its probation (see Config.PeerConns); nil if none
}

// close ends the connection; peers see it as Disconnected (see
// codec.closeQuietly). Answers already queued are flushed first.
// flushGrace bounds how long a graceful shutdown waits for a connection
// to write the answers it has queued.
const flushGrace = 2 * time.Second

// flush waits until the answers the connection has queued are written
// (go-capnp's Close drops whatever is still queued): it queues a
// Bootstrap request to the peer behind them and waits, at most until ctx
// ends or flushGrace, for the codec to write it. The returned function
// releases that request's client; call it after closing the connection
// (releasing a question the peer never answered blocks on a live one).
func (sc *serverConn) flush(ctx context.Context) (release func()) {
	sc.mu.Lock()
	c, cd := sc.rpc, sc.codec
	sc.mu.Unlock()
	if c == nil || ctx.Err() != nil {
		return func() {}
	}
	ctx, cancel := context.WithTimeout(ctx, flushGrace)
	defer cancel()
	written := cd.markFlush()
	boot := c.Bootstrap(ctx)
	select {
	case <-written:
	case <-c.Done():
	case <-ctx.Done():
	}
	return boot.Release
}

func (sc *serverConn) close() {
	sc.mu.Lock()
	c, cd := sc.rpc, sc.codec
	sc.closed = true
	sc.mu.Unlock()
	if c != nil {
		cd.closeQuietly(c)
	}
	_ = sc.raw.Close()
}

// NewServer returns a Server for cfg; zero limits take their defaults.
func NewServer(cfg Config) *Server {
	cfg = cfg.withDefaults()
	return &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		gate:      newCallGate(),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*serverConn]struct{}),
		done:      make(chan struct{}),
	}
}

// ListenAndServe listens on the TCP address addr and serves on it.
func (s *Server) ListenAndServe(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return s.Serve(ln)
}

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown or Close, then returns ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	if s.cfg.Bootstrap == nil {
		ln.Close()
		return errors.New("rpc: Config.Bootstrap is nil: the server has nothing to serve")
	}
	if !s.trackListener(ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(ln, false)
	s.log.Info("serving", "addr", ln.Addr().String(), "tls", s.cfg.TLSConfig != nil)

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !isTemporary(err) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "error", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-s.done:
				return ErrServerClosed
			}
			continue
		}
		backoff = 0
		s.accept(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) trackListener(ln net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.listeners[ln] = struct{}{}
		return true
	}
	delete(s.listeners, ln)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// accept admits c unless the server is closing or has no slot for it
// (see admit).
func (s *Server) accept(c net.Conn) {
	now := monoNow()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	role, victim := s.admit(now)
	if role == roleNone {
		s.mu.Unlock()
		s.log.Warn("refusing connection: every slot is taken and no client connection is idle enough to close",
			"remote", c.RemoteAddr().String(), "max_conns", s.cfg.MaxConns, "peer_conns", s.cfg.PeerConns)
		c.Close()
		return
	}
	sc := &serverConn{raw: c, role: roleNone}
	sc.lastRead.Store(now)
	s.setRole(sc, role)
	if role == roleProbation {
		sc.proba = time.AfterFunc(s.cfg.HandshakeTimeout, func() {
			s.endProbation(sc, s.log.With("remote", c.RemoteAddr().String()).Warn)
		})
	}
	s.conns[sc] = struct{}{}
	s.conWG.Add(1)
	s.mu.Unlock()
	if victim != nil {
		s.log.Info("closing the client connection idle longest to make room for a new one",
			"remote", victim.raw.RemoteAddr().String(), "idle", time.Duration(now-victim.lastRead.Load()),
			"for", c.RemoteAddr().String(), "max_conns", s.cfg.MaxConns)
		go victim.close()
	}
	go s.serveConn(sc)
}

// serveConn runs one connection from handshake to close. It owns the
// connection: when it returns, the socket is closed and nothing of the
// connection is left running.
func (s *Server) serveConn(sc *serverConn) {
	defer s.conWG.Done()
	defer func() {
		if sc.proba != nil {
			sc.proba.Stop()
		}
		s.mu.Lock()
		delete(s.conns, sc)
		s.setRole(sc, roleNone)
		s.mu.Unlock()
	}()
	defer sc.raw.Close()

	id := s.nextID.Add(1)
	log := s.log.With("conn", id, "remote", sc.raw.RemoteAddr().String())
	conn := sc.raw
	info := &ConnInfo{ID: id, RemoteAddr: sc.raw.RemoteAddr(), LocalAddr: sc.raw.LocalAddr(), Logger: log, srv: s, sc: sc}

	if s.cfg.TLSConfig != nil {
		tc := tls.Server(sc.raw, s.cfg.TLSConfig)
		hctx, cancel := context.WithTimeout(context.Background(), s.cfg.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			log.Warn("closing connection: TLS handshake failed", "error", err)
			return
		}
		st := tc.ConnectionState()
		info.TLS = &st
		conn = tc
	}

	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), connInfoKey{}, info))
	defer cancel()
	info.Exporter = &Exporter{gate: s.gate, log: log, calls: &sc.calls}

	transport, codec := newTransport(conn, limits{
		maxMessageSize: s.cfg.MaxMessageSize,
		firstFrame:     s.cfg.HandshakeTimeout,
		frame:          s.cfg.FrameTimeout,
		idle:           s.cfg.IdleTimeout,
		write:          s.cfg.WriteTimeout,
		node:           true,
	}, log)
	codec.lastRead = &sc.lastRead
	rc := capnprpc.NewConn(transport, &capnprpc.Options{
		BootstrapClient: s.cfg.Bootstrap(info),
		Logger:          capnpLogger{log.Named("capnp")},
		BaseContext:     func() context.Context { return ctx },
	})

	sc.mu.Lock()
	sc.rpc, sc.codec = rc, codec
	closeNow := sc.closed
	sc.mu.Unlock()
	if closeNow {
		codec.closeQuietly(rc)
	}
	log.Debug("connection opened", "tls", info.TLS != nil)

	<-rc.Done()
	if reason := codec.endReason(); !isClosedConnErr(reason) {
		log.Warn("connection closed", "reason", reason)
	} else {
		log.Debug("connection closed")
	}
}

// Shutdown stops the server gracefully: it closes every listener, refuses
// new calls, waits until the calls in flight have returned (or ctx ends),
// then closes every connection and waits for their goroutines. It returns
// ctx's error if ctx ended first, in which case connections were closed
// with calls still running.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	var err error
	select {
	case <-s.gate.close():
	case <-ctx.Done():
		err = ctx.Err()
		s.log.Warn("shutdown deadline reached with calls in flight; closing connections anyway")
	}
	s.closeConnsAfterFlush(ctx)
	waited := make(chan struct{})
	go func() { s.conWG.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// Close stops the server at once: listeners and connections are closed and
// calls in flight fail. It waits for the connections' goroutines.
func (s *Server) Close() error {
	s.beginClose()
	s.gate.close()
	s.closeConns()
	s.conWG.Wait()
	return nil
}

// beginClose marks the server closed and closes its listeners.
func (s *Server) beginClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeConns closes every connection concurrently: an rpc.Conn's Close may
// wait briefly to send its Abort, and one slow peer must not delay others.
func (s *Server) closeConns() { s.closeConnsAfterFlush(nil) }

// closeConnsAfterFlush is closeConns; with a non-nil ctx, each connection
// first writes the answers it has queued (see serverConn.flush), so a
// call that finished during a graceful shutdown reaches its caller.
func (s *Server) closeConnsAfterFlush(ctx context.Context) {
	s.mu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, sc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release := func() {}
			if ctx != nil {
				release = sc.flush(ctx)
			}
			sc.close()
			release()
		}()
	}
	wg.Wait()
}

// NumConns reports the number of connections being served.
func (s *Server) NumConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// capnpLogger passes go-capnp's own log lines on one level lower: the
// server already logs, at the right level, why a connection ended, and
// go-capnp reports each such event as an error of its own.
type capnpLogger struct{ l hclog.Logger }

func (c capnpLogger) Debug(msg string, args ...any) { c.l.Trace(msg, args...) }
func (c capnpLogger) Info(msg string, args ...any)  { c.l.Debug(msg, args...) }
func (c capnpLogger) Warn(msg string, args ...any)  { c.l.Debug(msg, args...) }
func (c capnpLogger) Error(msg string, args ...any) { c.l.Debug(msg, args...) }
