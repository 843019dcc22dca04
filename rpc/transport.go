package rpc

import (
	"bufio"
	"encoding/binary"
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
	"github.com/hashicorp/go-hclog"
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
	// node is set on a server's connections: errors about limits then
	// name the node's flags.
	node bool
}

// codec frames Cap'n Proto messages on a connection and enforces limits. It
// implements go-capnp's transport.Codec; go-capnp calls Decode from one
// goroutine and Encode from one (other) goroutine.
type codec struct {
	conn net.Conn
	lim  limits
	log  hclog.Logger
	in   *frameReader
	buf  *bufio.Reader
	dec  *capnp.Decoder

	decoded bool // a frame has been decoded already
	// lastRead, if set, is given the time (monoNow) at which each frame
	// was read, taken when the codec is asked for the next: how long the
	// connection has been idle.
	lastRead *atomic.Int64

	// quietClose drops the Abort go-capnp sends when it closes the
	// connection: we closed it ourselves (see closeQuietly), or sent an
	// Abort of our own (see sendAbort).
	quietClose atomic.Bool
	// closed stops a pending hold timer from writing after Close.
	closed atomic.Bool

	// wmu serialises writes: Encode's, and flushHeld's from its timer.
	wmu       sync.Mutex
	hdr       []byte        // frame header scratch
	bufs      net.Buffers   // frame scratch
	held      []byte        // Finish frames waiting for a message to ride with
	holdTime  time.Duration // finishHoldTime (tests change it)
	holdLong  time.Duration // answeredFinishHoldTime (tests change it)
	heldUntil time.Time     // when holdTimer writes the held frames
	holdTimer *time.Timer   // writes held frames at heldUntil
	flushMark chan struct{} // closed once the next Bootstrap message is written; see markFlush

	mu      sync.Mutex
	readErr error // the first read or write failure: why the connection ended
}

// Finish messages (the caller is done with an answer) are held back and
// written together with the next message, saving the write on this side
// and a wake-up on the other. A Finish for a call already answered matters
// to nobody's latency (go-capnp itself sends it 250 ms after the answer
// arrives) and waits up to answeredFinishHoldTime: long enough that a
// connection making a call every few milliseconds never writes one alone
// (with a 2 ms hold, measured at 16 clients on 16 connections, a fifth of
// the client's writes were lone Finish frames). A Finish that cancels a
// call in progress (go-capnp sets releaseResultCaps only there) waits at
// most finishHoldTime, so the callee stops its work soon.
const (
	finishHoldTime         = 2 * time.Millisecond
	answeredFinishHoldTime = 100 * time.Millisecond
	maxHeldBytes           = 4 << 10 // beyond this, held frames are written at once
)

// newCodec returns a codec for conn; log (nil: none) receives what it
// does on its own, such as answering a call whose results are too large.
func newCodec(conn net.Conn, lim limits, log hclog.Logger) *codec {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &codec{conn: conn, lim: lim, log: log, holdTime: finishHoldTime, holdLong: answeredFinishHoldTime}
	c.in = &frameReader{conn: conn, frame: lim.frame}
	c.buf = bufio.NewReaderSize(c.in, readBufferSize)
	c.dec = capnp.NewDecoder(c.buf)
	c.dec.MaxMessageSize = lim.maxMessageSize
	return c
}

// newTransport wraps conn in a go-capnp transport using the limited codec.
func newTransport(conn net.Conn, lim limits, log hclog.Logger) (capnprpc.Transport, *codec) {
	c := newCodec(conn, lim, log)
	return capnprpc.NewTransport(c), c
}

// Decode reads one frame, refusing it before allocation if its header
// claims more than the maximum message size: the peer is then sent an
// Abort that says so (see checkSize), and the connection ends.
func (c *codec) Decode() (*capnp.Message, error) {
	now := time.Now()
	if c.lastRead != nil {
		c.lastRead.Store(int64(now.Sub(monoEpoch)))
	}
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
	if err := c.checkSize(); err != nil {
		c.setEndReason(err)
		c.sendAbort(err)
		return nil, err
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
	c.noteAbort(msg)
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

// Encode writes one frame (with any held Finish frames before it), failing
// if the peer does not take it within the write timeout; a Finish is held
// instead (see finishHoldTime). A failed write closes the connection: a
// partly written frame leaves the stream unusable, and go-capnp only
// reports send errors to the call that sent them. A message over the
// size limit is not written (see tooLargeToSend).
func (c *codec) Encode(msg *capnp.Message) error {
	m, which := readMessage(msg)
	if which == rpccp.Message_Which_abort && c.quietClose.Load() {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	size, err := c.frame(msg)
	if err != nil {
		return err
	}
	if limit := c.lim.maxMessageSize; limit > 0 && size > limit {
		sub, err := c.tooLargeToSend(msg, which, size)
		if err != nil {
			return err
		}
		if _, err := c.frame(sub); err != nil {
			return err
		}
	}
	if which == rpccp.Message_Which_finish && len(c.held) < maxHeldBytes {
		hold := c.holdTime
		if f, err := m.Finish(); err == nil && !f.ReleaseResultCaps() {
			hold = c.holdLong // the call was answered: nothing waits on this
		}
		wasEmpty := len(c.held) == 0
		for _, b := range c.bufs {
			c.held = append(c.held, b...)
		}
		if until := time.Now().Add(hold); wasEmpty || until.Before(c.heldUntil) {
			c.heldUntil = until
			if c.holdTimer == nil {
				c.holdTimer = time.AfterFunc(hold, c.flushHeld)
			} else {
				c.holdTimer.Reset(hold)
			}
		}
		return nil
	}
	bufs := c.bufs
	if len(c.held) > 0 {
		bufs = append(net.Buffers{c.held}, bufs...)
		c.holdTimer.Stop()
	}
	err = c.write(bufs)
	c.held = c.held[:0]
	if c.flushMark != nil && (which == rpccp.Message_Which_bootstrap || err != nil) {
		close(c.flushMark)
		c.flushMark = nil
	}
	return err
}

// markFlush returns a channel closed once the next Bootstrap message has
// been written (or a write failed). go-capnp writes a connection's
// messages in the order they were queued, so a Bootstrap request queued
// now is written after every answer queued before it: the server's
// graceful shutdown uses that to know its last answers are on the wire.
func (c *codec) markFlush() <-chan struct{} {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.flushMark == nil {
		c.flushMark = make(chan struct{})
	}
	return c.flushMark
}

// frame lays msg out as a stream frame in c.bufs: the segment table, then
// the segments themselves (not copied). It returns the frame's size.
func (c *codec) frame(msg *capnp.Message) (size uint64, err error) {
	n := msg.NumSegments()
	if n == 0 || n > 1<<32 {
		return 0, fmt.Errorf("encode: message has %d segments", n)
	}
	c.hdr = binary.LittleEndian.AppendUint32(c.hdr[:0], uint32(n-1))
	c.bufs = append(c.bufs[:0], nil)
	for i := int64(0); i < n; i++ {
		seg, err := msg.Segment(capnp.SegmentID(i))
		if err != nil {
			return 0, fmt.Errorf("encode: %w", err)
		}
		data := seg.Data()
		c.hdr = binary.LittleEndian.AppendUint32(c.hdr, uint32(len(data)/8))
		c.bufs = append(c.bufs, data)
		size += uint64(len(data))
	}
	if len(c.hdr)%8 != 0 {
		c.hdr = binary.LittleEndian.AppendUint32(c.hdr, 0)
	}
	c.bufs[0] = c.hdr
	return size + uint64(len(c.hdr)), nil
}

// flushHeld writes the held Finish frames that no message came to carry.
func (c *codec) flushHeld() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if len(c.held) > 0 && !c.closed.Load() {
		_ = c.write(net.Buffers{c.held})
		c.held = c.held[:0]
	}
}

// write writes bufs (one writev on a TCP connection) under the write
// timeout. Called with wmu held.
func (c *codec) write(bufs net.Buffers) error {
	if c.lim.write > 0 {
		if err := c.conn.SetWriteDeadline(time.Now().Add(c.lim.write)); err != nil {
			return err
		}
	}
	_, err := bufs.WriteTo(c.conn)
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

// Close closes the connection. Held Finish frames are dropped: the peer
// forgets its answers when the connection ends anyway. (Close does not take
// wmu: a write blocked on a stalled peer must not hold it up.)
func (c *codec) Close() error {
	c.closed.Store(true)
	return c.conn.Close()
}

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

// readMessage returns msg's root and which rpc message it is
// (unimplemented if it cannot be read, which is then written as it is).
func readMessage(msg *capnp.Message) (rpccp.Message, rpccp.Message_Which) {
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil {
		return m, rpccp.Message_Which_unimplemented
	}
	return m, m.Which()
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
