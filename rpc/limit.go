package rpc

import (
	"encoding/binary"
	"fmt"
	"net"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"
	rpccp "capnproto.org/go/capnp/v3/std/capnp/rpc"
)

// MessageTooLargeError reports a message over a connection's size limit
// (Config.MaxMessageSize, DialConfig.MaxMessageSize). A call whose
// message this side refused to send fails with it (wrapped by go-capnp;
// use errors.As) and the connection carries on; a connection that
// received one ends, and the peer is told why first.
type MessageTooLargeError struct {
	// Size is the message's size in bytes, framing included.
	Size uint64
	// Limit is the limit it exceeds.
	Limit uint64
	// Sent is true if this side refused to send the message, false if it
	// refused one that it received.
	Sent bool
	// Results is true if the message was the results of a call.
	Results bool
	// Node is true if the limit is a node's own (raftnode
	// --max-message-size), false if it is a dialled connection's.
	Node bool
}

func (e *MessageTooLargeError) Error() string {
	what := "message"
	if e.Results {
		what = "results"
	}
	hint := "(--max-message-size)"
	whose := "this node's"
	if !e.Node {
		whose = "this connection's"
		hint = "(nodes accept at most their --max-message-size)"
	}
	if e.Sent {
		ask := "send"
		if e.Results {
			ask = "ask for"
		}
		return fmt.Sprintf("%s of %d bytes not sent: over %s limit of %d bytes per message %s; %s less per call",
			what, e.Size, whose, e.Limit, hint, ask)
	}
	return fmt.Sprintf("%s of %d bytes exceeds %s limit of %d bytes %s", what, e.Size, whose, e.Limit, hint)
}

// RemoteAbortError is why the peer said it ended the connection (a Cap'n
// Proto Abort message other than the one that goes with an ordinary
// close): ClientConn.Err returns it.
type RemoteAbortError struct {
	Reason string
	// FromNode is set when the peer is the node this side dialled.
	FromNode bool
}

func (e *RemoteAbortError) Error() string {
	if e.FromNode {
		return "the node closed the connection: " + e.Reason
	}
	return "the peer closed the connection: " + e.Reason
}

// drainFactor bounds the oversized frames a codec reads to the end
// before it answers with an Abort: up to drainFactor times the limit. The
// sender is then done writing and reads the Abort, instead of failing on
// a reset connection ("broken pipe") without knowing why. Larger claims
// are not real messages worth that much reading; they are cut off at once.
const drainFactor = 2

// checkSize looks at the header of the next frame, before the decoder
// allocates anything for it, and returns a *MessageTooLargeError if the
// frame is over the limit. It returns nil if the header cannot be read or
// is too odd to size here (thousands of segments): the decoder then
// reports what is wrong.
func (c *codec) checkSize() error {
	limit := c.lim.maxMessageSize
	if limit == 0 {
		return nil
	}
	first, err := c.buf.Peek(8)
	if err != nil {
		return nil
	}
	nseg := uint64(binary.LittleEndian.Uint32(first)) + 1
	hdrLen := (4*(nseg+1) + 7) &^ 7
	if hdrLen > readBufferSize || hdrLen > limit {
		return nil
	}
	hdr, err := c.buf.Peek(int(hdrLen))
	if err != nil {
		return nil
	}
	size := hdrLen
	for i := uint64(0); i < nseg; i++ {
		size += 8 * uint64(binary.LittleEndian.Uint32(hdr[4+4*i:]))
	}
	if size <= limit {
		return nil
	}
	if size <= drainFactor*limit {
		// Bounded by the frame deadline in force; whatever it reads is
		// discarded through the read buffer, not allocated.
		_, _ = c.buf.Discard(int(size))
	}
	return &MessageTooLargeError{Size: size, Limit: limit, Node: c.lim.node}
}

// tooLargeToSend handles a message of size bytes over the limit, about
// to be sent. A call fails with the returned error, and go-capnp fails
// only that call. Results cannot simply be dropped (the caller would wait
// for ever), so they are replaced by an exception saying why; their
// capabilities, if any, stay exported until the connection ends. The
// replacement is returned as msg; err is nil then.
func (c *codec) tooLargeToSend(m *capnp.Message, which rpccp.Message_Which, size uint64) (msg *capnp.Message, err error) {
	tooLarge := &MessageTooLargeError{Size: size, Limit: c.lim.maxMessageSize, Sent: true, Node: c.lim.node}
	if which != rpccp.Message_Which_return {
		return nil, tooLarge
	}
	tooLarge.Results = true
	msg, err = exceptionReturn(m, tooLarge.Error())
	if err != nil {
		return nil, fmt.Errorf("%v; replacing them with an exception: %w", tooLarge, err)
	}
	c.log.Warn("answered a call with an error: its results are over the message size limit",
		"size", size, "limit", c.lim.maxMessageSize)
	return msg, nil
}

// exceptionReturn builds a Return message answering the same question as
// ret (a Return message) with a failed exception carrying reason.
func exceptionReturn(ret *capnp.Message, reason string) (*capnp.Message, error) {
	orig, err := rpccp.ReadRootMessage(ret)
	if err != nil {
		return nil, err
	}
	o, err := orig.Return()
	if err != nil {
		return nil, err
	}
	msg, m, err := newRPCMessage()
	if err != nil {
		return nil, err
	}
	r, err := m.NewReturn()
	if err != nil {
		return nil, err
	}
	r.SetAnswerId(o.AnswerId())
	r.SetReleaseParamCaps(o.ReleaseParamCaps())
	r.SetNoFinishNeeded(o.NoFinishNeeded())
	e, err := r.NewException()
	if err != nil {
		return nil, err
	}
	e.SetType(rpccp.Exception_Type_failed)
	if err := e.SetReason(reason); err != nil {
		return nil, err
	}
	return msg, nil
}

// newRPCMessage returns a new single-segment message and its root rpc
// Message, for the few messages the codec writes itself.
func newRPCMessage() (*capnp.Message, rpccp.Message, error) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, rpccp.Message{}, err
	}
	m, err := rpccp.NewRootMessage(seg)
	return msg, m, err
}

// sendAbort writes an Abort carrying err's text, so the peer learns why
// this side is about to close the connection (go-capnp's own Abort, which
// it would send next, is then dropped: its reason wraps ours in
// go-capnp's prefixes).
func (c *codec) sendAbort(err error) {
	msg, m, nerr := newRPCMessage()
	if nerr != nil {
		return
	}
	a, nerr := m.NewAbort()
	if nerr != nil {
		return
	}
	a.SetType(rpccp.Exception_Type_failed)
	if a.SetReason(err.Error()) != nil {
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, ferr := c.frame(msg); ferr != nil {
		return
	}
	bufs := c.bufs
	if len(c.held) > 0 {
		bufs = append(net.Buffers{c.held}, bufs...)
		c.held = c.held[:0]
	}
	if c.write(bufs) == nil {
		c.quietClose.Store(true)
	}
}

// noteAbort records the reason of an Abort received from the peer as
// why the connection ends.
func (c *codec) noteAbort(msg *capnp.Message) {
	if !mayBeAbort(msg) {
		return
	}
	m, err := rpccp.ReadRootMessage(msg)
	if err != nil || m.Which() != rpccp.Message_Which_abort {
		return
	}
	a, err := m.Abort()
	if err != nil {
		return
	}
	reason, err := a.Reason()
	if err != nil || reason == capnprpc.ErrConnClosed.Error() {
		return // what go-capnp's Close sends: an ordinary close
	}
	c.setEndReason(&RemoteAbortError{Reason: reason, FromNode: !c.lim.node})
}

// mayBeAbort reports whether msg's root may be an Abort, from the raw
// bytes of its first segment (the root struct pointer, then the union tag
// of the Message it points to): a filter that costs a few nanoseconds,
// where reading the root the checked way costs a hundred, on every
// message. Roots behind far pointers are not recognised; every
// implementation writes small messages such as Abort in one segment.
func mayBeAbort(msg *capnp.Message) bool {
	seg, err := msg.Segment(0)
	if err != nil {
		return false
	}
	b := seg.Data()
	if len(b) < 16 {
		return false
	}
	ptr := binary.LittleEndian.Uint64(b)
	if ptr&3 != 0 || uint16(ptr>>32) == 0 { // not a struct pointer, or no data section
		return false
	}
	at := 8 + 8*int64(int32(uint32(ptr))>>2)
	if at < 8 || at+2 > int64(len(b)) {
		return false
	}
	return binary.LittleEndian.Uint16(b[at:]) == uint16(rpccp.Message_Which_abort)
}
