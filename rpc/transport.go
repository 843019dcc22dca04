package rpc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// readBufferSize is the read buffer per connection: big enough that a burst
// of pipelined small calls costs one read syscall, small enough that 1024
// connections cost 32 MiB at most.
const readBufferSize = 32 << 10

// limits are the per-connection limits enforced by the codec. A zero
// duration disables that limit.
type limits struct {
	maxMessageSize uint64
	firstFrame     time.Duration // from the start to the end of the first frame
	frame          time.Duration // from the first byte of a frame to its last
	idle           time.Duration // between frames
	write          time.Duration // per frame written
}

// codec frames Cap'n Proto messages on a connection and enforces limits. It
// implements go-capnp's transport.Codec; go-capnp calls Decode from one
// goroutine and Encode from one (other) goroutine.
type codec struct {
	conn net.Conn
	lim  limits
	in   *frameReader
	buf  *bufio.Reader
	dec  *capnp.Decoder
	enc  *capnp.Encoder

	decoded bool // a frame has been decoded already

	// quietClose drops the Abort go-capnp sends when we close the
	// connection ourselves; see closeQuietly.
	quietClose atomic.Bool

	mu      sync.Mutex
	readErr error // the first read or write failure: why the connection ended
}

func newCodec(conn net.Conn, lim limits) *codec {
	c := &codec{conn: conn, lim: lim}
	c.in = &frameReader{conn: conn, frame: lim.frame}
	c.buf = bufio.NewReaderSize(c.in, readBufferSize)
	c.dec = capnp.NewDecoder(c.buf)
	c.dec.MaxMessageSize = lim.maxMessageSize
	// The encoder writes straight to the connection: go-capnp uses writev
	// (net.Buffers) on a *net.TCPConn, which a wrapper would lose.
	c.enc = capnp.NewEncoder(conn)
	return c
}

// newTransport wraps conn in a go-capnp transport using the limited codec.
func newTransport(conn net.Conn, lim limits) (capnprpc.Transport, *codec) {
	c := newCodec(conn, lim)
	return capnprpc.NewTransport(c), c
}

// Decode reads one frame, refusing it before allocation if its header
// claims more than the maximum message size.
func (c *codec) Decode() (*capnp.Message, error) {
	now := time.Now()
	phase := "idle"
	switch {
	case !c.decoded && c.lim.firstFrame > 0:
		phase = "handshake"
		c.in.arm(now.Add(c.lim.firstFrame))
	case c.buf.Buffered() > 0:
		// The next frame has already begun arriving.
		phase = "frame"
		c.in.arm(deadline(now, c.lim.frame))
		c.in.started = true
	default:
		c.in.arm(deadline(now, c.lim.idle))
	}
	msg, err := c.dec.Decode()
	if err != nil {
		if c.in.started && c.in.frameBound {
			phase = "frame"
		}
		c.setEndReason(c.describe(err, phase))
		return nil, err
	}
	c.decoded = true
	return msg, nil
}

// describe turns a read error into one that says which limit was hit.
func (c *codec) describe(err error, phase string) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	switch phase {
	case "handshake":
		return fmt.Errorf("no complete first message within %v (handshake timeout): %w", c.lim.firstFrame, err)
	case "frame":
		return fmt.Errorf("message not completed within %v (frame timeout): %w", c.lim.frame, err)
	default:
		return fmt.Errorf("no message for %v (idle timeout): %w", c.lim.idle, err)
	}
}

// Encode writes one frame, failing if the peer does not take it within the
// write timeout. A failed write closes the connection: a partly written
// frame leaves the stream unusable, and go-capnp only reports send errors
// to the call that sent them.
func (c *codec) Encode(msg *capnp.Message) error {
	if c.lim.write > 0 {
		if err := c.conn.SetWriteDeadline(time.Now().Add(c.lim.write)); err != nil {
			return err
		}
	}
	if c.quietClose.Load() && isAbort(msg) {
		return nil
	}
	err := c.enc.Encode(msg)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("peer took no data for %v (write timeout): %w", c.lim.write, err)
		}
		c.setEndReason(err)
		c.conn.Close()
	}
	return err
}

// setEndReason records the first reason the connection is ending.
func (c *codec) setEndReason(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil {
		c.readErr = err
	}
}

// Close closes the connection.
func (c *codec) Close() error { return c.conn.Close() }

// closeQuietly closes rc, whose transport uses c, so that the peer sees the
// connection end rather than an Abort: go-capnp's Close flushes the
// messages already queued (the answers to calls that just finished), then
// sends an Abort, which peers receive as a Failed exception that clients
// cannot tell from an application error. Dropping that one message makes
// them see Disconnected, the signal to fail over.
func (c *codec) closeQuietly(rc *capnprpc.Conn) {
	c.quietClose.Store(true)
	_ = rc.Close()
	_ = c.conn.Close()
}

// isAbort reports whether msg is an rpc Abort message.
func isAbort(msg *capnp.Message) bool {
	m, err := rpccp.ReadRootMessage(msg)
	return err == nil && m.Which() == rpccp.Message_Which_abort
}

// endReason reports why the connection ended (the first read or write
// failure), or nil if it has not.
func (c *codec) endReason() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// frameReader reads from the connection and, once the first byte of a
// frame arrives, brings the read deadline forward to the frame deadline
// (now + frame timeout) if that is sooner: waiting for a frame may take up
// to the idle (or handshake) timeout, completing one only the frame timeout.
type frameReader struct {
	conn       net.Conn
	frame      time.Duration
	deadline   time.Time // the read deadline in force; zero: none
	started    bool      // a byte of the current frame has arrived
	frameBound bool      // the deadline in force is the frame deadline
}

func (r *frameReader) arm(d time.Time) {
	r.deadline = d
	r.started = false
	r.frameBound = false
	// A failure here means the connection is closed; the next read reports it.
	_ = r.conn.SetReadDeadline(d)
}

func (r *frameReader) Read(p []byte) (int, error) {
	n, err := r.conn.Read(p)
	if n > 0 && !r.started {
		r.started = true
		if r.frame > 0 {
			fd := time.Now().Add(r.frame)
			if r.deadline.IsZero() || fd.Before(r.deadline) {
				r.deadline = fd
				r.frameBound = true
				_ = r.conn.SetReadDeadline(fd)
			}
		}
	}
	return n, err
}

// deadline returns now+d, or the zero time (no deadline) if d <= 0.
func deadline(now time.Time, d time.Duration) time.Time {
	if d <= 0 {
		return time.Time{}
	}
	return now.Add(d)
}

// isClosedConnErr reports whether err only says that the connection ended
// in an ordinary way (peer closed it, or we did).
func isClosedConnErr(err error) bool {
	return err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}
