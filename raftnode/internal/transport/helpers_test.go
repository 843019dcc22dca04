package transport

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the randomized tests (0: time-based)")

// testSeed returns the test's seed and logs it so a failure can be
// replayed with -seed.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed: %d (replay with -seed=%d)", s, s)
		}
	})
	return s
}

const testCluster = 7

// fakeHandler plays a node's driver: it records what arrives, in arrival
// order, and says the messages were taken from a goroutine of its own,
// after hold is closed (if set) and delay.
type fakeHandler struct {
	mu          sync.Mutex
	got         []raft.Message
	cur, maxCur int             // send calls delivered and not yet taken
	delay       time.Duration   // before taking
	hold        chan struct{}   // if non-nil, taking waits until it is closed
	notMember   *raft.NotMember // said of every call, if set
	refuse      error           // if set, every call is refused with it (a stopping driver)
	onTaken     func(msgs []raft.Message)
}

func newFakeHandler() *fakeHandler { return &fakeHandler{} }

// Deliver records msgs at once (so the order is the arrival order) and
// takes them from a goroutine of its own, as a driver's loop would.
func (h *fakeHandler) Deliver(msgs []raft.Message, done func(*raft.NotMember, error)) {
	h.mu.Lock()
	h.got = append(h.got, msgs...)
	h.cur++
	h.maxCur = max(h.maxCur, h.cur)
	hold, delay, nm, onTaken, refuse := h.hold, h.delay, h.notMember, h.onTaken, h.refuse
	h.mu.Unlock()
	if refuse != nil {
		h.mu.Lock()
		h.cur--
		h.mu.Unlock()
		done(nil, refuse)
		return
	}
	go func() {
		if hold != nil {
			<-hold
		}
		if delay > 0 {
			time.Sleep(delay) // simulated work of the loop
		}
		h.mu.Lock()
		h.cur--
		h.mu.Unlock()
		if onTaken != nil {
			onTaken(msgs)
		}
		done(nm, nil)
	}()
}

func (h *fakeHandler) received() []raft.Message {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]raft.Message(nil), h.got...)
}

func (h *fakeHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// countType counts the messages of type typ received.
func (h *fakeHandler) countType(typ raft.MessageType) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.got {
		if m.Type == typ {
			n++
		}
	}
	return n
}

// testNode is a node's bootstrap capability serving only raft and info.
type testNode struct {
	id   uint64
	conn *rpc.ConnInfo
	cfg  ServerConfig
}

func (n *testNode) Raft(_ context.Context, call schema.Node_raft) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetRaft(schema.Raft(NewServer(n.cfg, n.conn)))
}

func (n *testNode) Info(_ context.Context, call schema.Node_info) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	info, err := res.NewInfo()
	if err != nil {
		return err
	}
	info.SetId(n.id)
	return info.SetVersion("test")
}

var errNotServed = errors.New("not served by the test node")

func (n *testNode) Echo(context.Context, schema.Node_echo) error           { return errNotServed }
func (n *testNode) Kv(context.Context, schema.Node_kv) error               { return errNotServed }
func (n *testNode) Status(context.Context, schema.Node_status) error       { return errNotServed }
func (n *testNode) Admin(context.Context, schema.Node_admin) error         { return errNotServed }
func (n *testNode) Login(context.Context, schema.Node_login) error         { return errNotServed }
func (n *testNode) Challenge(context.Context, schema.Node_challenge) error { return errNotServed }
func (n *testNode) Identity(context.Context, schema.Node_identity) error   { return errNotServed }

// peerServer is a node serving the Raft capability on loopback.
type peerServer struct {
	t       testing.TB
	id      uint64
	cluster uint64
	h       Handler
	addr    string
	// maxInFlight is ServerConfig.MaxInFlight.
	maxInFlight int
	// peerID is ServerConfig.PeerID: the member the connections proved.
	peerID uint64
	srv    *rpc.Server
	served chan error

	mu sync.Mutex
	// limits holds each connection's StreamLimits, in accept order.
	limits []*StreamLimits
}

// streamLimits returns the StreamLimits of the i-th connection accepted.
func (ps *peerServer) streamLimits(i int) *StreamLimits {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if i >= len(ps.limits) {
		ps.t.Fatalf("no connection %d (%d accepted)", i, len(ps.limits))
	}
	return ps.limits[i]
}

// startPeer serves node id (cluster testCluster) with handler h on a free
// port, or on addr if it is not empty. It is stopped when the test ends.
func startPeer(t testing.TB, id uint64, h Handler, addr string) *peerServer {
	t.Helper()
	return startPeerWith(t, id, h, addr, 0)
}

// startPeerWith is startPeer with the server's MaxInFlight.
func startPeerWith(t testing.TB, id uint64, h Handler, addr string, maxInFlight int) *peerServer {
	t.Helper()
	ps := &peerServer{t: t, id: id, cluster: testCluster, h: h, maxInFlight: maxInFlight}
	ps.start(addr)
	t.Cleanup(ps.stop)
	return ps
}

func (ps *peerServer) start(addr string) {
	ps.t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the port may still be in use just after a restart
	}
	if err != nil {
		ps.t.Fatalf("listen on %s: %v", addr, err)
	}
	ps.addr = ln.Addr().String()
	log := rpctest.Logger(ps.t)
	ps.srv = rpc.NewServer(rpc.Config{
		Logger: log,
		Bootstrap: func(conn *rpc.ConnInfo) capnp.Client {
			lim := new(StreamLimits)
			ps.mu.Lock()
			ps.limits = append(ps.limits, lim)
			ps.mu.Unlock()
			n := &testNode{id: ps.id, conn: conn, cfg: ServerConfig{ClusterID: ps.cluster, LocalID: ps.id, Handler: ps.h, Logger: log,
				MaxInFlight: ps.maxInFlight, PeerID: ps.peerID, Streams: lim}}
			return capnp.Client(schema.Node_ServerToClient(n))
		},
	})
	ps.served = make(chan error, 1)
	srv, served := ps.srv, ps.served
	go func() { served <- srv.Serve(ln) }()
}

func (ps *peerServer) stop() {
	if ps.srv == nil {
		return
	}
	ps.srv.Close()
	if err := <-ps.served; !errors.Is(err, rpc.ErrServerClosed) {
		ps.t.Errorf("Serve returned %v", err)
	}
	ps.srv = nil
}

// recorder collects what a Transport reports.
type recorder struct {
	mu          sync.Mutex
	unreachable map[uint64]int
	notMember   []raft.NotMember
}

func newRecorder() *recorder { return &recorder{unreachable: make(map[uint64]int)} }

func (r *recorder) unreach(id uint64) {
	r.mu.Lock()
	r.unreachable[id]++
	r.mu.Unlock()
}

func (r *recorder) notMemberOf(_ uint64, nm raft.NotMember) {
	r.mu.Lock()
	r.notMember = append(r.notMember, nm)
	r.mu.Unlock()
}

func (r *recorder) numUnreachable(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[id]
}

func (r *recorder) notMembers() []raft.NotMember {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raft.NotMember(nil), r.notMember...)
}

// testIncarnation is node 1's storage incarnation in these tests.
const testIncarnation = 0x1111

// newTestTransport returns a transport for node 1 of testCluster wired to
// rec; mod adjusts the config. It is closed when the test ends.
func newTestTransport(t testing.TB, rec *recorder, mod func(*Config)) *Transport {
	cfg := Config{
		ClusterID:   testCluster,
		LocalID:     1,
		Incarnation: testIncarnation,
		Unreachable: rec.unreach,
		NotMember:   rec.notMemberOf,
		Logger:      rpctest.Logger(t).Named("transport"),
		BackoffMin:  5 * time.Millisecond,
		BackoffMax:  50 * time.Millisecond,
		Seed:        1,
	}
	if mod != nil {
		mod(&cfg)
	}
	tr := New(cfg)
	t.Cleanup(tr.Close)
	return tr
}

// appMsg is a MsgApp from node 1 to `to` with n entries of size bytes,
// following index prev.
func appMsg(to, prev uint64, n, size int, rng *rand.Rand) raft.Message {
	m := raft.Message{Type: raft.MsgApp, From: 1, To: to, Term: 2, Index: prev, LogTerm: 2, Commit: prev, Incarnation: testIncarnation}
	for i := 0; i < n; i++ {
		d := make([]byte, size)
		if rng != nil {
			for j := range d {
				d[j] = byte(rng.Uint32())
			}
		}
		m.Entries = append(m.Entries, raft.Entry{Index: prev + uint64(i) + 1, Term: 2, Data: d})
	}
	return m
}

func rpcDialConfig(t testing.TB) rpc.DialConfig {
	return rpc.DialConfig{Logger: rpctest.Logger(t)}
}

// randomStruct sets params' request pointer to random content: a random
// struct (half the time with a valid header, to reach the deeper
// decoding), or a pointer of the wrong kind.
func randomStruct(rng *rand.Rand, params capnp.Struct) error {
	seg := params.Segment()
	if rng.IntN(8) == 0 {
		return params.SetPtr(0, randomPtr(rng, seg, 2))
	}
	st, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: capnp.Size(8 * rng.IntN(12)), PointerCount: uint16(rng.IntN(10))})
	if err != nil {
		return err
	}
	sz := st.Size()
	for off := capnp.Size(0); off+8 <= sz.DataSize; off += 8 {
		st.SetUint64(capnp.DataOffset(off), randU(rng))
	}
	for i := uint16(0); i < sz.PointerCount; i++ {
		if err := st.SetPtr(i, randomPtr(rng, seg, 3)); err != nil {
			return err
		}
	}
	if sz.PointerCount > 0 && rng.IntN(2) == 0 {
		h, err := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: 24})
		if err != nil {
			return err
		}
		h.SetUint64(0, testCluster)
		h.SetUint64(8, 1)
		h.SetUint64(16, 2)
		if err := st.SetPtr(0, h.ToPtr()); err != nil {
			return err
		}
		if sz.DataSize >= 16 {
			st.SetUint64(8, 1) // candidateId / leaderId = from
		}
	}
	return params.SetPtr(0, st.ToPtr())
}

// randomPtr returns a random pointer: null, data, text, a list of words,
// a list of random structs, or a random struct.
func randomPtr(rng *rand.Rand, seg *capnp.Segment, depth int) capnp.Ptr {
	choice := rng.IntN(6)
	if depth == 0 {
		choice = rng.IntN(4)
	}
	switch choice {
	case 1:
		d, _ := capnp.NewData(seg, randBytes(rng, 64))
		return d.ToPtr()
	case 2:
		l, _ := capnp.NewUInt64List(seg, int32(rng.IntN(8)))
		for i := 0; i < l.Len(); i++ {
			l.Set(i, randU(rng))
		}
		return l.ToPtr()
	case 3:
		l, _ := capnp.NewUInt8List(seg, int32(rng.IntN(20)))
		return l.ToPtr()
	case 4:
		n := int32(rng.IntN(5))
		l, _ := capnp.NewCompositeList(seg, capnp.ObjectSize{DataSize: capnp.Size(8 * rng.IntN(4)), PointerCount: uint16(rng.IntN(3))}, n)
		for i := 0; i < int(n); i++ {
			s := l.Struct(i)
			sz := s.Size()
			for off := capnp.Size(0); off+8 <= sz.DataSize; off += 8 {
				s.SetUint64(capnp.DataOffset(off), randU(rng))
			}
			for j := uint16(0); j < sz.PointerCount; j++ {
				_ = s.SetPtr(j, randomPtr(rng, seg, depth-1))
			}
		}
		return l.ToPtr()
	case 5:
		s, _ := capnp.NewStruct(seg, capnp.ObjectSize{DataSize: capnp.Size(8 * rng.IntN(4)), PointerCount: uint16(rng.IntN(3))})
		for j := uint16(0); j < s.Size().PointerCount; j++ {
			_ = s.SetPtr(j, randomPtr(rng, seg, depth-1))
		}
		return s.ToPtr()
	}
	return capnp.Ptr{}
}

// openRawStream starts a peer (node 2) served by h, dials it and opens a
// well-formed stream from node 1 on it by hand, for tests that send what
// no Transport would. The stream lives until ctx's test ends.
func openRawStream(t *testing.T, ctx context.Context, h Handler) schema.PeerStream {
	t.Helper()
	ps := startPeer(t, 2, h, "")
	cc := rpctest.Dial(t, ps.addr, rpcDialConfig(t))
	rf, release := cc.Node().Raft(ctx, nil)
	t.Cleanup(release)
	res, err := rf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	of, orel := res.Raft().Open(ctx, func(p schema.Raft_open_Params) error {
		hd, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(hd, header{cluster: testCluster, from: 1, to: 2, inc: testIncarnation})
		return nil
	})
	t.Cleanup(orel)
	or, err := of.Struct()
	if err != nil {
		t.Fatal(err)
	}
	return or.Stream()
}
