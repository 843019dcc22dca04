package transport

import (
	"context"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// A connection holds a bounded number of streams: anyone holding the Raft
// capability could otherwise open streams until the node runs out of
// memory. A stream beyond the bound is refused as overloaded, naming the
// limit; a released stream frees its slot.

// raftOn dials the peer at addr and returns its Raft capability.
func raftOn(t *testing.T, ctx context.Context, addr string) schema.Raft {
	t.Helper()
	cc := rpctest.Dial(t, addr, rpcDialConfig(t))
	rf, release := cc.Node().Raft(ctx, nil)
	t.Cleanup(release)
	res, err := rf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	return res.Raft()
}

// openOn opens a well-formed stream from node 1 on rc; the stream is the
// caller's to release.
func openOn(ctx context.Context, rc schema.Raft) (schema.PeerStream, error) {
	of, orel := rc.Open(ctx, func(p schema.Raft_open_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: testCluster, from: 1, to: 2, inc: testIncarnation})
		return nil
	})
	defer orel()
	res, err := of.Struct()
	if err != nil {
		return schema.PeerStream{}, err
	}
	return res.Stream().AddRef(), nil
}

// checkOverloaded fails the test unless err is an overloaded refusal that
// names the limit.
func checkOverloaded(t *testing.T, what string, err error, limit string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("%s: accepted beyond the limit", what)
	case !exc.IsType(err, exc.Overloaded) || !strings.Contains(err.Error(), limit):
		t.Fatalf("%s: %v, want overloaded naming the limit %s", what, err, limit)
	}
}

func TestStreamsPerConnectionAreBounded(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := raftOn(t, ctx, ps.addr)
	var open []schema.PeerStream
	defer func() {
		for _, st := range open {
			st.Release()
		}
	}()
	for i := range DefaultMaxStreams {
		st, err := openOn(ctx, rc)
		if err != nil {
			t.Fatalf("stream %d of %d refused: %v", i+1, DefaultMaxStreams, err)
		}
		open = append(open, st)
	}
	_, err := openOn(ctx, rc)
	checkOverloaded(t, "a stream beyond the limit", err, "(8)")
	// Streams open still work.
	m := appMsg(2, 0, 1, 8, nil)
	f, frel := open[0].Send(ctx, func(p schema.PeerStream_send_Params) error {
		l, err := p.NewMsgs(1)
		if err != nil {
			return err
		}
		return encodeMessage(l.At(0), &m)
	})
	defer frel()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("a send on an open stream at the limit: %v", err)
	}
	// A released stream frees its slot, once the release reached the
	// server (go-capnp's client sends the open call's Finish, which
	// holds a reference to the stream, only a moment later).
	open[0].Release()
	open = open[1:]
	lim := ps.streamLimits(0)
	rpctest.Eventually(t, 10*time.Second, "the released stream's slot freed", func() bool {
		n, _ := lim.open()
		return n == DefaultMaxStreams-1
	})
	st, err := openOn(ctx, rc)
	if err != nil {
		t.Fatalf("a stream after one was released: %v", err)
	}
	open = append(open, st)
	// The limit is the connection's: another connection has its own.
	other, err := openOn(ctx, raftOn(t, ctx, ps.addr))
	if err != nil {
		t.Fatalf("a stream on another connection: %v", err)
	}
	other.Release()
}

// offerOn offers a snapshot of data from node 1 on rc; the stream is the
// caller's to release.
func offerOn(ctx context.Context, rc schema.Raft, data []byte) (schema.SnapshotStream, error) {
	meta := raft.SnapshotMeta{Index: 20, Term: 3, ConfState: raft.ConfState{Voters: []uint64{1, 2}}}
	of, orel := rc.InstallSnapshot(ctx, func(p schema.Raft_installSnapshot_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: testCluster, from: 1, to: 2, inc: testIncarnation})
		o, err := p.NewOffer()
		if err != nil {
			return err
		}
		o.SetTerm(3)
		o.SetSize(uint64(len(data)))
		o.SetChecksum(crc32.Checksum(data, castagnoli))
		m, err := o.NewMeta()
		if err != nil {
			return err
		}
		return encodeSnapshotMeta(m, &meta)
	})
	defer orel()
	res, err := of.Struct()
	if err != nil {
		return schema.SnapshotStream{}, err
	}
	return res.Stream().AddRef(), nil
}

func TestOneSnapshotStreamAtATimePerConnection(t *testing.T) {
	data := []byte("the state machine's snapshot")
	h := &sinkHandler{}
	ps := startPeer(t, 2, h, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc := raftOn(t, ctx, ps.addr)
	first, err := offerOn(ctx, rc, data)
	if err != nil {
		t.Fatalf("the first offer: %v", err)
	}
	_, err = offerOn(ctx, rc, data)
	checkOverloaded(t, "a second snapshot stream on the connection", err, "(1)")
	if n := h.numSinks(); n != 1 {
		t.Fatalf("%d sinks, want the first offer's only", n)
	}
	// Released, the stream frees its slot.
	first.Release()
	lim := ps.streamLimits(0)
	waitFree := func(what string) {
		rpctest.Eventually(t, 10*time.Second, what, func() bool {
			_, n := lim.open()
			return n == 0
		})
	}
	waitFree("the released snapshot stream's slot freed")
	st, err := offerOn(ctx, rc, data)
	if err != nil {
		t.Fatalf("an offer after the stream was released: %v", err)
	}
	st.Release()
	waitFree("the second snapshot stream's slot freed")
	// A refused offer holds no slot.
	h.mu.Lock()
	h.refuse = errNotServed
	h.mu.Unlock()
	if _, err := offerOn(ctx, rc, data); err == nil || exc.IsType(err, exc.Overloaded) {
		t.Fatalf("an offer the handler refuses: %v, want its refusal", err)
	}
	h.mu.Lock()
	h.refuse = nil
	h.mu.Unlock()
	st, err = offerOn(ctx, rc, data)
	if err != nil {
		t.Fatalf("an offer after a refused one: %v", err)
	}
	st.Release()
}
