package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// Snapshot transfers beside the lanes: the sender streams a source once,
// with a bounded window, on a connection of its own; the receiver hands
// each write to the driver's sink, checks size and checksum against the
// offer before the sink may finish, and reports refusals to the sender.

// memSource is a SnapshotSource over bytes, counting what was read.
type memSource struct {
	r      *bytes.Reader
	size   int64
	sum    uint32
	damage bool // fail the last read, as a damaged file does
	read   int64
}

func newMemSource(data []byte) *memSource {
	return &memSource{r: bytes.NewReader(data), size: int64(len(data)), sum: crc32.Checksum(data, castagnoli)}
}

func (s *memSource) Size() int64      { return s.size }
func (s *memSource) Checksum() uint32 { return s.sum }
func (s *memSource) Close() error     { return nil }
func (s *memSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.read += int64(n)
	if err == io.EOF && s.damage {
		return n, errors.New("data checksum mismatch")
	}
	return n, err
}

// sinkHandler plays a driver that takes snapshots: it records what each
// accepted transfer wrote, and can refuse offers or hold writes.
type sinkHandler struct {
	fakeHandler
	mu       sync.Mutex
	refuse   error
	hold     chan struct{} // if set, each write waits until it is closed
	offers   []SnapshotOffer
	sinks    []*memSink
	finishes int
}

type memSink struct {
	h        *sinkHandler
	buf      bytes.Buffer
	largest  int
	aborted  bool
	finished bool
}

func (h *sinkHandler) ReceiveSnapshot(_ context.Context, o SnapshotOffer) (SnapshotSink, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.offers = append(h.offers, o)
	if h.refuse != nil {
		return nil, h.refuse
	}
	s := &memSink{h: h}
	h.sinks = append(h.sinks, s)
	return s, nil
}

func (s *memSink) Write(p []byte) (int, error) {
	if hold := s.h.holdCh(); hold != nil {
		<-hold
	}
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.largest = max(s.largest, len(p))
	return s.buf.Write(p)
}

func (s *memSink) Finish(context.Context) error {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.finished = true
	s.h.finishes++
	return nil
}

func (s *memSink) Abort() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.aborted = true
}

func (h *sinkHandler) holdCh() chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hold
}

// sink returns the i-th sink and a copy of its state.
func (h *sinkHandler) sink(i int) (data []byte, largest int, aborted, finished bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.sinks) {
		return nil, 0, false, false
	}
	s := h.sinks[i]
	return bytes.Clone(s.buf.Bytes()), s.largest, s.aborted, s.finished
}

func (h *sinkHandler) numSinks() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sinks)
}

// reports collects SnapshotDone calls.
type reports struct {
	mu  sync.Mutex
	got []error
	ch  chan error
}

func newReports() *reports { return &reports{ch: make(chan error, 16)} }

func (r *reports) done(_, _ uint64, err error) {
	r.mu.Lock()
	r.got = append(r.got, err)
	r.mu.Unlock()
	r.ch <- err
}

func (r *reports) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("no snapshot report within 20s")
		return nil
	}
}

func (r *reports) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func snapMsg(index, term uint64) raft.Message {
	return raft.Message{Type: raft.MsgSnap, From: 1, To: 2, Term: term, Incarnation: testIncarnation,
		Snapshot: &raft.SnapshotMeta{Index: index, Term: term, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}}}}
}

func randomData(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// A snapshot much larger than a chunk arrives whole and in order; the
// source is read once, into one buffer of a chunk; no write carries more
// than a chunk; heartbeats keep flowing to the follower while its disk
// holds the transfer back.
func TestSnapshotStreamsBesideTheLanes(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	const chunk = 64 << 10
	data := randomData(rng, 40*chunk+123)
	h := &sinkHandler{hold: make(chan struct{})}
	ps := startPeer(t, 2, h, "")
	rep := newReports()
	var src *memSource
	tr := newTestTransport(t, newRecorder(), func(c *Config) {
		c.SnapshotChunk, c.SnapshotWindow = chunk, 2
		c.SnapshotDone = rep.done
		c.OpenSnapshot = func(meta raft.SnapshotMeta) (SnapshotSource, error) {
			if meta.Index != 10 {
				return nil, fmt.Errorf("no snapshot %d", meta.Index)
			}
			src = newMemSource(data)
			return src, nil
		}
	})
	tr.SetPeer(2, ps.addr)
	tr.Send([]raft.Message{snapMsg(10, 2)})
	rpctest.Eventually(t, 10*time.Second, "the transfer started", func() bool { return h.numSinks() == 1 })
	// The follower's disk holds the writes: heartbeats still arrive.
	for i := range 5 {
		tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 2, Seq: uint64(i), Incarnation: testIncarnation}})
	}
	rpctest.Eventually(t, 10*time.Second, "heartbeats delivered beside a held transfer", func() bool {
		return h.countType(raft.MsgHeartbeat) == 5
	})
	close(h.hold)
	if err := rep.wait(t); err != nil {
		t.Fatalf("transfer failed: %v", err)
	}
	got, largest, aborted, finished := h.sink(0)
	if !bytes.Equal(got, data) || aborted || !finished {
		t.Fatalf("follower got %d bytes (equal %v), aborted %v, finished %v", len(got), bytes.Equal(got, data), aborted, finished)
	}
	if largest > chunk {
		t.Errorf("a write carried %d bytes, more than a chunk (%d)", largest, chunk)
	}
	st := tr.SnapshotStats()
	t.Logf("%d bytes in writes of %d: %+v", len(data), chunk, st)
	if st.Buffers != 1 || st.LargestBuffer > chunk || st.BytesRead != uint64(len(data)) || src.read != int64(len(data)) ||
		st.BytesSent != uint64(len(data)) || st.Finished != 1 || st.Failed != 0 {
		t.Errorf("stats %+v (source read %d bytes): want one buffer of at most a chunk, each byte read and sent once", st, src.read)
	}
	o := h.offers[0]
	if o.From != 1 || o.Term != 2 || o.Incarnation != testIncarnation || o.Meta.Index != 10 || o.Size != uint64(len(data)) ||
		o.Checksum != crc32.Checksum(data, castagnoli) || len(o.Meta.ConfState.Voters) != 3 {
		t.Errorf("offer %+v", o)
	}
}

// A refused offer, a source that cannot be opened, a damaged source and
// an unknown peer each end in one failure report, and the follower keeps
// nothing.
func TestSnapshotTransfersThatFailAreReported(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	data := randomData(rng, 300<<10)
	for _, tc := range []struct {
		name   string
		refuse error
		open   error
		damage bool
		to     uint64
		want   string
	}{
		{name: "refused", refuse: errors.New("not following node 1 in term 2"), want: "not following"},
		{name: "no such snapshot", open: errors.New("snapshot 10 is gone"), want: "is gone"},
		{name: "damaged on the leader's disk", damage: true, want: "checksum mismatch"},
		{name: "unknown peer", to: 9, want: "unknown peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &sinkHandler{refuse: tc.refuse}
			ps := startPeer(t, 2, h, "")
			rep := newReports()
			tr := newTestTransport(t, newRecorder(), func(c *Config) {
				c.SnapshotChunk = 64 << 10
				c.SnapshotDone = rep.done
				c.OpenSnapshot = func(raft.SnapshotMeta) (SnapshotSource, error) {
					if tc.open != nil {
						return nil, tc.open
					}
					s := newMemSource(data)
					s.damage = tc.damage
					return s, nil
				}
			})
			tr.SetPeer(2, ps.addr)
			m := snapMsg(10, 2)
			if tc.to != 0 {
				m.To = tc.to
			}
			tr.Send([]raft.Message{m})
			err := rep.wait(t)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("report %v, want an error saying %q", err, tc.want)
			}
			for i := range h.numSinks() {
				if _, _, aborted, finished := h.sink(i); finished {
					t.Errorf("sink %d finished (aborted %v)", i, aborted)
				}
			}
			if st := tr.SnapshotStats(); st.Failed != 1 || st.Finished != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// A new transfer to the same follower replaces the one under way, which
// never reports; the same snapshot in the same term is not sent twice.
func TestNewerSnapshotTransferReplacesTheOneUnderWay(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 5))
	data := randomData(rng, 1<<20)
	h := &sinkHandler{hold: make(chan struct{})}
	ps := startPeer(t, 2, h, "")
	rep := newReports()
	tr := newTestTransport(t, newRecorder(), func(c *Config) {
		c.SnapshotChunk = 64 << 10
		c.SnapshotDone = rep.done
		c.OpenSnapshot = func(raft.SnapshotMeta) (SnapshotSource, error) { return newMemSource(data), nil }
	})
	tr.SetPeer(2, ps.addr)
	tr.Send([]raft.Message{snapMsg(10, 2)})
	rpctest.Eventually(t, 10*time.Second, "the first transfer started", func() bool { return h.numSinks() == 1 })
	tr.Send([]raft.Message{snapMsg(10, 2)}) // the same: ignored
	tr.Send([]raft.Message{snapMsg(12, 2)}) // newer: replaces
	close(h.hold)
	if err := rep.wait(t); err != nil {
		t.Fatalf("the newer transfer failed: %v", err)
	}
	rpctest.Eventually(t, 10*time.Second, "the replaced stream abandoned", func() bool {
		_, _, aborted, _ := h.sink(0)
		return aborted
	})
	if n := rep.count(); n != 1 {
		t.Errorf("%d reports, want the newer transfer's only", n)
	}
	if st := tr.SnapshotStats(); st.Started != 2 || st.Superseded != 1 || st.Finished != 1 {
		t.Errorf("stats %+v", st)
	}
	if h.offers[len(h.offers)-1].Meta.Index != 12 {
		t.Errorf("last offer %+v, want snapshot 12", h.offers[len(h.offers)-1])
	}
}

// rawSnapshot opens a snapshot stream on node 2 as node from would, with
// the offer given, over a connection of its own.
func rawSnapshot(t *testing.T, addr string, cluster, from uint64, offer SnapshotOffer) (schema.SnapshotStream, func(), error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cc, err := rpc.Dial(ctx, addr, rpc.DialConfig{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rf, rrel := cc.Node().Raft(ctx, nil)
	rc := rf.Raft()
	of, orel := rc.InstallSnapshot(ctx, func(p schema.Raft_installSnapshot_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: cluster, from: from, to: 2, inc: testIncarnation})
		o, err := p.NewOffer()
		if err != nil {
			return err
		}
		o.SetTerm(offer.Term)
		o.SetSize(offer.Size)
		o.SetChecksum(offer.Checksum)
		m, err := o.NewMeta()
		if err != nil {
			return err
		}
		return encodeSnapshotMeta(m, &offer.Meta)
	})
	cleanup := func() {
		cc.Close()
		orel()
		rrel()
		cancel()
	}
	res, err := of.Struct()
	if err != nil {
		return schema.SnapshotStream{}, cleanup, err
	}
	return res.Stream(), cleanup, nil
}

// The receiver checks what the sender cannot be trusted with: the header
// (cluster, receiver, sender), the offer's shape, and at the end the size
// and the checksum of what arrived; a failed check aborts the sink.
func TestReceiverRefusesBadHeadersOffersAndStreams(t *testing.T) {
	data := []byte("the state machine's snapshot")
	good := SnapshotOffer{Term: 3, Meta: raft.SnapshotMeta{Index: 20, Term: 3, ConfState: raft.ConfState{Voters: []uint64{1, 2}}},
		Size: uint64(len(data)), Checksum: crc32.Checksum(data, castagnoli)}
	h := &sinkHandler{}
	ps := startPeer(t, 2, h, "")
	for _, tc := range []struct {
		name    string
		cluster uint64
		from    uint64
		offer   func(o *SnapshotOffer)
	}{
		{"another cluster", testCluster + 1, 1, nil},
		{"from the receiver itself", testCluster, 2, nil},
		{"a snapshot of a later term than the offer", testCluster, 1, func(o *SnapshotOffer) { o.Meta.Term = 4 }},
		{"a snapshot at index 0", testCluster, 1, func(o *SnapshotOffer) { o.Meta.Index = 0 }},
		{"a snapshot without voters", testCluster, 1, func(o *SnapshotOffer) { o.Meta.ConfState.Voters = nil }},
	} {
		o := good
		if tc.offer != nil {
			tc.offer(&o)
		}
		_, cleanup, err := rawSnapshot(t, ps.addr, tc.cluster, tc.from, o)
		cleanup()
		if err == nil {
			t.Errorf("%s: offer accepted", tc.name)
		}
	}
	if n := h.numSinks(); n != 0 {
		t.Fatalf("%d sinks opened for refused offers", n)
	}
	for i, tc := range []struct {
		name  string
		data  []byte
		sum   uint32
		extra []byte
	}{
		{"truncated", data[:10], good.Checksum, nil},
		{"damaged on the way", append([]byte{data[0] ^ 1}, data[1:]...), good.Checksum, nil},
		{"longer than offered", data, good.Checksum, []byte("!")},
	} {
		st, cleanup, err := rawSnapshot(t, ps.addr, testCluster, 1, good)
		if err != nil {
			cleanup()
			t.Fatalf("%s: offer refused: %v", tc.name, err)
		}
		ctx := context.Background()
		var werr error
		for _, b := range [][]byte{tc.data, tc.extra} {
			if b == nil {
				continue
			}
			wf, wrel := st.Write(ctx, func(p schema.SnapshotStream_write_Params) error { return p.SetData(b) })
			_, err := wf.Struct()
			wrel()
			werr = errors.Join(werr, err)
		}
		ff, frel := st.Finish(ctx, nil)
		_, ferr := ff.Struct()
		frel()
		cleanup()
		if werr == nil && ferr == nil {
			t.Errorf("%s: the stream finished", tc.name)
		}
		if _, _, aborted, finished := h.sink(i); !aborted || finished {
			t.Errorf("%s: sink aborted %v finished %v", tc.name, aborted, finished)
		}
	}
	// And a good one finishes.
	st, cleanup, err := rawSnapshot(t, ps.addr, testCluster, 1, good)
	if err != nil {
		cleanup()
		t.Fatal(err)
	}
	defer cleanup()
	wf, wrel := st.Write(context.Background(), func(p schema.SnapshotStream_write_Params) error { return p.SetData(data) })
	if _, err := wf.Struct(); err != nil {
		t.Fatal(err)
	}
	wrel()
	ff, frel := st.Finish(context.Background(), nil)
	defer frel()
	if _, err := ff.Struct(); err != nil {
		t.Fatalf("a good stream: %v", err)
	}
	if got, _, aborted, finished := h.sink(3); !bytes.Equal(got, data) || aborted || !finished {
		t.Fatalf("a good stream: got %q aborted %v finished %v", got, aborted, finished)
	}
}
