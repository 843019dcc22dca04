package transport

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"

	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// The receiving side of snapshot transfers (Raft.installSnapshot). The
// transport checks who offers (the header as for Raft.open: this cluster,
// this node, the member the connection proved to be) and what (a
// well-formed snapshot), hands each write to the driver's SnapshotSink as
// it arrives (nothing is buffered: a write returns once the sink took it,
// which is the sender's flow control), counts the bytes and their
// CRC-32C, and on finish checks them against the offer before the sink
// may finish. The driver decides the rest: whom it hears (the leader its
// core follows, in that leader's term), where the data goes, and what it
// verifies before its core installs the snapshot.

// SnapshotReceiver is implemented by a Handler that takes snapshots from
// peers (the driver).
type SnapshotReceiver interface {
	// ReceiveSnapshot is asked to take the snapshot offer describes,
	// from a member the connection proved to be offer.From. It returns
	// where the data goes, or why it refuses the snapshot (for one, its
	// core does not follow offer.From as the leader of offer.Term). It
	// may block until ctx ends.
	ReceiveSnapshot(ctx context.Context, offer SnapshotOffer) (SnapshotSink, error)
}

// SnapshotOffer is what a leader says of a snapshot before its data.
type SnapshotOffer struct {
	// From is the sender, Term the term it leads, Incarnation its
	// storage's (from the stream's header).
	From, Term, Incarnation uint64
	// Meta names the snapshot: index, term and configuration.
	Meta raft.SnapshotMeta
	// Size is the length of the data, Checksum its CRC-32C (Castagnoli).
	Size     uint64
	Checksum uint32
}

// SnapshotSink receives one snapshot's data for the driver.
type SnapshotSink interface {
	// Write takes the next bytes, in order. p is valid only during the
	// call. An error ends the transfer (Abort follows).
	Write(p []byte) (int, error)
	// Finish is called once all the offered bytes were written and
	// matched the offer's checksum. It returns once the snapshot is
	// checked, durable and handed to the core, or why not (Abort
	// follows).
	Finish(ctx context.Context) error
	// Abort discards what was written: the transfer failed, was
	// refused, or was abandoned by the sender. It may be called more
	// than once, and after Finish.
	Abort()
}

// ErrNoSnapshots refuses a snapshot offered to a node whose Handler does
// not take snapshots.
var ErrNoSnapshots = errors.New("this node does not take snapshots")

// installSnapshot serves Raft.installSnapshot: it checks the header and
// the offer, asks the driver for a sink, and returns the stream.
func (s *raftServer) installSnapshot(ctx context.Context, c *server.Call) error {
	call := schema.Raft_installSnapshot{Call: c}
	h, err := call.Args().Header()
	hd, err := readHeader(h, err, s.cfg.ClusterID, s.cfg.LocalID)
	if err == nil {
		err = s.checkSender(hd.from)
	}
	var offer SnapshotOffer
	if err == nil {
		offer, err = readOffer(call.Args(), hd)
	}
	if err != nil {
		return s.refuse("installSnapshot", hd.from, err)
	}
	recv, ok := s.cfg.Handler.(SnapshotReceiver)
	if !ok {
		return s.refuse("installSnapshot", hd.from, ErrNoSnapshots)
	}
	if err := s.cfg.Streams.takeSnapshot(); err != nil {
		return s.overloaded("installSnapshot", hd.from, err)
	}
	free := s.cfg.Streams.release(true)
	sink, err := recv.ReceiveSnapshot(ctx, offer)
	if err != nil {
		free()
		// A routine refusal (not following the sender yet, say): the
		// driver logs it as it sees fit.
		return exc.New(exc.Failed, "", fmt.Sprintf("raft installSnapshot: %v", err))
	}
	res, err := call.AllocResults()
	if err != nil {
		free()
		sink.Abort()
		return err
	}
	// The stream frees its slot when released (Shutdown).
	st := &snapStream{offer: offer, sink: sink, free: free}
	return res.SetStream(schema.SnapshotStream(s.conn.Exporter.Export(schema.SnapshotStream_Methods(nil, st), st, st)))
}

// readOffer reads and checks the offer of one snapshot.
func readOffer(p schema.Raft_installSnapshot_Params, hd header) (SnapshotOffer, error) {
	o, err := p.Offer()
	if err != nil {
		return SnapshotOffer{}, fmt.Errorf("read snapshot offer: %w", err)
	}
	m, err := o.Meta()
	if err != nil {
		return SnapshotOffer{}, fmt.Errorf("read snapshot metadata: %w", err)
	}
	meta, err := decodeSnapshotMeta(m)
	if err != nil {
		return SnapshotOffer{}, err
	}
	offer := SnapshotOffer{From: hd.from, Term: o.Term(), Incarnation: hd.inc, Meta: meta, Size: o.Size(), Checksum: o.Checksum()}
	switch {
	case meta.Index == 0 || meta.Term == 0 || meta.Term > offer.Term:
		return offer, fmt.Errorf("refused: snapshot %d/%d offered in term %d", meta.Index, meta.Term, offer.Term)
	case len(meta.ConfState.Voters) == 0:
		return offer, fmt.Errorf("refused: snapshot %d without voters", meta.Index)
	}
	return offer, nil
}

// snapStream is the receiving end of one snapshot's stream. go-capnp's
// server runs its calls one at a time, in order.
type snapStream struct {
	offer SnapshotOffer
	sink  SnapshotSink
	free  func() // returns the stream's slot of the connection's StreamLimits

	mu    sync.Mutex
	n     uint64 // bytes written
	crc   uint32 // their CRC-32C
	ended bool   // finished or failed: nothing more is taken
}

var errStreamClosed = errors.New("the snapshot stream ended")

// fail ends the stream with err, discarding what was received.
func (st *snapStream) fail(err error) error {
	st.ended = true
	st.sink.Abort()
	return exc.New(exc.Failed, "", fmt.Sprintf("raft snapshot %d from %d: %v", st.offer.Meta.Index, st.offer.From, err))
}

// Write serves SnapshotStream.write.
func (st *snapStream) Write(_ context.Context, call schema.SnapshotStream_write) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ended {
		return exc.New(exc.Failed, "", errStreamClosed.Error())
	}
	data, err := call.Args().Data()
	if err != nil {
		return st.fail(fmt.Errorf("read data: %w", err))
	}
	if st.n+uint64(len(data)) > st.offer.Size {
		return st.fail(fmt.Errorf("more than the %d bytes offered", st.offer.Size))
	}
	if _, err := st.sink.Write(data); err != nil {
		return st.fail(err)
	}
	st.n += uint64(len(data))
	st.crc = crc32.Update(st.crc, castagnoli, data)
	return nil
}

// Finish serves SnapshotStream.finish.
func (st *snapStream) Finish(ctx context.Context, _ schema.SnapshotStream_finish) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.ended:
		return exc.New(exc.Failed, "", errStreamClosed.Error())
	case st.n != st.offer.Size:
		return st.fail(fmt.Errorf("truncated: %d bytes of the %d offered", st.n, st.offer.Size))
	case st.crc != st.offer.Checksum:
		return st.fail(fmt.Errorf("checksum mismatch: the data has CRC-32C %08x, the offer %08x", st.crc, st.offer.Checksum))
	}
	if err := st.sink.Finish(ctx); err != nil {
		return st.fail(err)
	}
	st.ended = true
	return nil
}

// Shutdown abandons a stream released before it finished (the sender gave
// up, or the connection closed), and frees the stream's slot.
func (st *snapStream) Shutdown() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.free()
	if !st.ended {
		st.ended = true
		st.sink.Abort()
	}
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)
