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

// fakeHandler plays a node's driver: it records what arrives and answers
// with respond. It implements Deliverer (strict order); plainHandler
// hides that.
type fakeHandler struct {
	mu          sync.Mutex
	got         []raft.Message
	cur, maxCur int           // messages enqueued and not yet answered
	delay       time.Duration // before answering
	hold        chan struct{} // if non-nil, answers wait until it is closed
	respond     func(m raft.Message) (raft.Message, bool)
}

func newFakeHandler() *fakeHandler { return &fakeHandler{respond: defaultRespond} }

// defaultRespond answers every request as a cooperative follower would.
func defaultRespond(m raft.Message) (raft.Message, bool) {
	r := raft.Message{From: m.To, To: m.From, Term: m.Term}
	switch m.Type {
	case raft.MsgVote:
		r.Type, r.Granted, r.PreVote = raft.MsgVoteResp, true, m.PreVote
	case raft.MsgApp:
		r.Type, r.Index = raft.MsgAppResp, m.Index+uint64(len(m.Entries))
	case raft.MsgHeartbeat:
		r.Type, r.Seq = raft.MsgHeartbeatResp, m.Seq
	case raft.MsgSnap:
		if m.Done {
			r.Type, r.Index = raft.MsgAppResp, m.Snapshot.Index
		} else {
			r.Type, r.Offset = raft.MsgSnapResp, m.Offset+uint64(len(m.Data))
			r.Snapshot = &raft.SnapshotMeta{Index: m.Snapshot.Index, Term: m.Snapshot.Term}
		}
	case raft.MsgReadIndex:
		r.Type, r.Term, r.Index, r.Context = raft.MsgReadIndexResp, 3, 42, m.Context
	default:
		return raft.Message{}, false
	}
	return r, true
}

// enqueue records m and returns the wait for its answer.
func (h *fakeHandler) enqueue(m raft.Message) func(context.Context) (raft.Message, bool, error) {
	h.mu.Lock()
	h.got = append(h.got, m)
	h.cur++
	h.maxCur = max(h.maxCur, h.cur)
	hold := h.hold
	h.mu.Unlock()
	return func(ctx context.Context) (raft.Message, bool, error) {
		defer func() {
			h.mu.Lock()
			h.cur--
			h.mu.Unlock()
		}()
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return raft.Message{}, false, ctx.Err()
			}
		}
		if h.delay > 0 {
			time.Sleep(h.delay) // simulated fsync
		}
		r, ok := h.respond(m)
		return r, ok, nil
	}
}

// Deliver records m at once (so the order is the arrival order) and
// answers from a goroutine of its own, as a driver's loop would.
func (h *fakeHandler) Deliver(m raft.Message, reply func(raft.Message, bool, error)) {
	wait := h.enqueue(m)
	go func() { reply(wait(context.Background())) }()
}

func (h *fakeHandler) Handle(ctx context.Context, m raft.Message) (raft.Message, bool, error) {
	return h.enqueue(m)(ctx)
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

// plainHandler hides Deliver, leaving only Handle.
type plainHandler struct{ h *fakeHandler }

func (p plainHandler) Handle(ctx context.Context, m raft.Message) (raft.Message, bool, error) {
	return p.h.Handle(ctx, m)
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
	srv         *rpc.Server
	served      chan error
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
			n := &testNode{id: ps.id, conn: conn, cfg: ServerConfig{ClusterID: ps.cluster, LocalID: ps.id, Handler: ps.h, Logger: log, MaxInFlight: ps.maxInFlight}}
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

// recorder collects what a Transport delivers and reports.
type recorder struct {
	mu          sync.Mutex
	delivered   []raft.Message
	unreachable map[uint64]int
}

func newRecorder() *recorder { return &recorder{unreachable: make(map[uint64]int)} }

func (r *recorder) deliver(m raft.Message) {
	r.mu.Lock()
	r.delivered = append(r.delivered, m)
	r.mu.Unlock()
}

func (r *recorder) unreach(id uint64) {
	r.mu.Lock()
	r.unreachable[id]++
	r.mu.Unlock()
}

func (r *recorder) numDelivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.delivered)
}

func (r *recorder) msgs() []raft.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raft.Message(nil), r.delivered...)
}

func (r *recorder) numUnreachable(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unreachable[id]
}

// newTestTransport returns a transport for node 1 of testCluster wired to
// rec; mod adjusts the config. It is closed when the test ends.
func newTestTransport(t testing.TB, rec *recorder, mod func(*Config)) *Transport {
	cfg := Config{
		ClusterID:   testCluster,
		LocalID:     1,
		Deliver:     rec.deliver,
		Unreachable: rec.unreach,
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
	m := raft.Message{Type: raft.MsgApp, From: 1, To: to, Term: 2, Index: prev, LogTerm: 2, Commit: prev}
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

type capnpStruct = capnp.Struct

// futureOf adapts a *capnp.Future to a Struct() accessor.
type futureOf struct{ f *capnp.Future }

func (f futureOf) Struct() (capnp.Struct, error) { return f.f.Struct() }

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
