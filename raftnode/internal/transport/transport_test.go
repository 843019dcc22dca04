package transport

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sendPaced sends msgs in batches, never letting the peer's queue pass
// limit, and fails after the deadline.
func sendPaced(t *testing.T, tr *Transport, to uint64, msgs []raft.Message, limit int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < len(msgs); {
		if tr.Stats(to).Queued >= limit {
			if time.Now().After(deadline) {
				t.Fatalf("queue to %d stuck at %d", to, tr.Stats(to).Queued)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		j := min(i+limit/4+1, len(msgs))
		tr.Send(msgs[i:j])
		i = j
	}
}

// Appends pipelined on the data lane arrive in order, with at most
// Window send calls held by the peer at once, batched several to a call.
func TestPipelinedAppendsArriveInOrderWithinWindow(t *testing.T) {
	const n, window = 10000, 16
	h := newFakeHandler()
	h.delay = 200 * time.Microsecond
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.Window = window; c.MaxQueue = 2 * n })
	tr.SetPeer(2, ps.addr)

	msgs := make([]raft.Message, n)
	for i := range msgs {
		msgs[i] = appMsg(2, uint64(i), 1, 8, nil)
	}
	sendPaced(t, tr, 2, msgs, 1000)
	rpctest.Eventually(t, 60*time.Second, "every message taken", func() bool { return tr.Stats(2).Delivered == n })

	got := h.received()
	if len(got) != n {
		t.Fatalf("handler got %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Index != uint64(i) || m.Type != raft.MsgApp || m.From != 1 || m.To != 2 {
			t.Fatalf("message %d out of order or wrong: %v", i, m)
		}
	}
	h.mu.Lock()
	maxCur := h.maxCur
	h.mu.Unlock()
	if maxCur > window {
		t.Fatalf("%d calls in flight at the server, window is %d", maxCur, window)
	}
	if maxCur < 2 {
		t.Fatalf("at most %d call in flight at the server: calls were not pipelined", maxCur)
	}
	st := tr.Stats(2)
	t.Logf("max in flight at the server: %d (window %d); %d messages in %d calls", maxCur, window, st.Sent, st.Calls)
	if !st.Connected || st.Lanes[LaneData].Delivered != n || st.Dropped != 0 || st.Failures != 0 || st.Calls >= n {
		t.Fatalf("stats %+v", st)
	}
}

// Every message type goes over the wire, each on its lane, and arrives
// as sent, in the order sent within its lane.
func TestEveryMessageTypeOverTheWire(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)

	var sent []raft.Message
	for i := 0; i < 200; i++ {
		m := randMessage(rng, allTypes[rng.IntN(len(allTypes))])
		m.From, m.To, m.Incarnation = 1, 2, testIncarnation
		m.Seq = uint64(i) // tells the messages apart
		if m.Type == raft.MsgHeartbeat {
			m.Entries = nil
		}
		sent = append(sent, m)
	}
	tr.Send(sent)
	rpctest.Eventually(t, 20*time.Second, "every message taken", func() bool { return h.count() == len(sent) })
	var byLane [numLanes][]raft.Message
	for _, m := range sent {
		byLane[LaneOf(m.Type)] = append(byLane[LaneOf(m.Type)], m)
	}
	next := [numLanes]int{}
	for _, got := range h.received() {
		l := LaneOf(got.Type)
		want := onWire(byLane[l][next[l]])
		next[l]++
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("on the %s lane:\n got %v\nwant %v", l, got, want)
		}
	}
	if st := tr.Stats(2); st.Failures != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Heartbeats and votes do not wait behind replication: with the peer's
// data lane stalled (its driver holds every append) and the data window
// full, control messages still arrive and are taken.
func TestControlLaneDoesNotWaitBehindAStalledDataLane(t *testing.T) {
	const window = 4
	hold := make(chan struct{})
	h := newFakeHandler()
	ps := startPeer(t, 2, &laneHandler{data: &holdAll{hold: hold}, control: h}, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.Window = window; c.MaxBatch = 1; c.CallTimeout = time.Minute })
	tr.SetPeer(2, ps.addr)
	for i := 0; i < 200; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i), 4, 1024, nil)})
	}
	rpctest.Eventually(t, 10*time.Second, "the data window full", func() bool { return tr.Stats(2).Lanes[LaneData].InFlight == window })
	for i := 0; i < 50; i++ {
		tr.Send([]raft.Message{
			{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 2, Seq: uint64(i), Incarnation: testIncarnation},
			{Type: raft.MsgVote, From: 1, To: 2, Term: 3, PreVote: true, Incarnation: testIncarnation},
		})
	}
	rpctest.Eventually(t, 10*time.Second, "every heartbeat and vote taken", func() bool {
		return h.countType(raft.MsgHeartbeat) == 50 && h.countType(raft.MsgVote) == 50
	})
	if st := tr.Stats(2); st.Lanes[LaneData].Delivered != 0 || st.Lanes[LaneData].Queued == 0 {
		t.Fatalf("the data lane moved while stalled: %+v", st.Lanes[LaneData])
	}
	close(hold)
	rpctest.Eventually(t, 20*time.Second, "the appends taken once released", func() bool { return tr.Stats(2).Lanes[LaneData].Queued == 0 })
}

// laneHandler hands each lane's messages to a handler of its own (all of
// one send call travel on one lane).
type laneHandler struct{ data, control Handler }

func (h *laneHandler) Deliver(msgs []raft.Message, done func(*raft.NotMember, error)) {
	if LaneOf(msgs[0].Type) == LaneData {
		h.data.Deliver(msgs, done)
		return
	}
	h.control.Deliver(msgs, done)
}

// holdAll takes nothing until hold is closed.
type holdAll struct{ hold chan struct{} }

func (h *holdAll) Deliver(_ []raft.Message, done func(*raft.NotMember, error)) {
	go func() {
		<-h.hold
		done(nil, nil)
	}()
}

// A peer that says this node is not a member of its configuration: the
// transport reports it, and keeps sending.
func TestNotMemberIsReported(t *testing.T) {
	h := newFakeHandler()
	h.notMember = &raft.NotMember{Index: 42, Term: 7}
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)
	tr.Send([]raft.Message{{Type: raft.MsgVote, From: 1, To: 2, Term: 3, PreVote: true, Incarnation: testIncarnation}})
	rpctest.Eventually(t, 10*time.Second, "reported", func() bool { return len(rec.notMembers()) == 1 })
	if got := rec.notMembers()[0]; got != (raft.NotMember{Index: 42, Term: 7}) {
		t.Fatalf("reported %+v", got)
	}
	if st := tr.Stats(2); st.Failures != 0 || !st.Lanes[LaneControl].Connected {
		t.Fatalf("stats %+v", st)
	}
}

func TestDeadPeerDoesNotBlockSendOrOtherPeers(t *testing.T) {
	h := newFakeHandler()
	live := startPeer(t, 3, h, "")
	// Peer 2 accepts connections and never answers; peer 4 refuses them.
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()

	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) {
		c.MaxQueue = 100
		c.Dial.Timeout = 2 * time.Second // the black hole fails the connect after this
	})
	tr.SetPeer(2, hole.Addr().String())
	tr.SetPeer(3, live.addr)
	tr.SetPeer(4, refusedAddr)

	const n = 2000
	start := time.Now()
	var slowest time.Duration
	for i := 0; i < n; i++ {
		t0 := time.Now()
		tr.Send([]raft.Message{appMsg(2, uint64(i), 1, 64, nil), appMsg(3, uint64(i), 1, 64, nil), appMsg(4, uint64(i), 1, 64, nil)})
		slowest = max(slowest, time.Since(t0))
		if i%20 == 0 {
			// Let peer 3 drain so that its queue never overflows.
			rpctest.Eventually(t, 10*time.Second, "peer 3 keeps up", func() bool { return tr.Stats(3).Queued < 50 })
		}
	}
	// A Send that waited for the black hole would take its whole connect
	// timeout (2 s); half of it leaves room for a loaded machine's
	// scheduling without letting a blocking Send pass.
	if slowest > time.Second {
		t.Fatalf("a Send took %v: it waited for a dead peer", slowest)
	}
	rpctest.Eventually(t, 20*time.Second, "live peer got everything", func() bool { return h.count() == n })
	rpctest.Eventually(t, 10*time.Second, "dead peers' lanes failed", func() bool {
		return tr.Stats(2).Failures > 0 && tr.Stats(4).Failures > 0
	})
	if st := tr.Stats(3); st.Dropped != 0 || st.Failures != 0 {
		t.Fatalf("live peer: %+v", st)
	}
	rpctest.Eventually(t, 10*time.Second, "dead peers reported unreachable", func() bool {
		return rec.numUnreachable(2) > 0 && rec.numUnreachable(4) > 0
	})
	if rec.numUnreachable(3) != 0 {
		t.Fatalf("live peer reported unreachable")
	}
	for _, id := range []uint64{2, 4} {
		st := tr.Stats(id)
		if st.Connected || st.Queued > 100 || st.Dropped == 0 {
			t.Fatalf("peer %d: %+v", id, st)
		}
	}
	t.Logf("sent %d messages to 3 peers in %v, slowest Send %v", 3*n, time.Since(start), slowest)
}

func TestReconnectAfterPeerRestartsOnSamePort(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)

	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "first message", func() bool { return tr.Stats(2).Delivered == 1 })

	ps.stop()
	rpctest.Eventually(t, 10*time.Second, "unreachable after the peer stopped", func() bool { return rec.numUnreachable(2) > 0 })
	rpctest.Eventually(t, 10*time.Second, "disconnected", func() bool { return !tr.Stats(2).Connected })

	ps.start(ps.addr)
	rpctest.Eventually(t, 10*time.Second, "reconnected", func() bool { return tr.Stats(2).Connected })
	tr.Send([]raft.Message{appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "message after restart", func() bool { return h.count() == 2 })
	if m := h.received()[1]; m.Index != 1 {
		t.Fatalf("message after restart: %v", m)
	}
}

func TestFlowLimitUnderStalledPeer(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	proxy := rpctest.NewProxy(t, ps.addr, 0)
	rec := newRecorder()
	const maxQueue, maxBytes, window = 200, 256 << 10, 8
	tr := newTestTransport(t, rec, func(c *Config) {
		c.Window = window
		c.MaxQueue = maxQueue
		c.MaxQueueBytes = maxBytes
		c.CallTimeout = time.Minute
	})
	tr.SetPeer(2, proxy.Addr())
	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "first message", func() bool { return tr.Stats(2).Delivered == 1 })

	proxy.Hold()
	const n = 5000
	for i := 0; i < n; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i+1), 4, 1024, nil)})
		if st := tr.Stats(2); st.Queued > maxQueue || st.QueuedBytes > maxBytes || st.InFlight > window {
			t.Fatalf("over the limits: %+v", st)
		}
	}
	// The lane issues calls on its own goroutine, and a call may wait in
	// the connection's send path while the proxy holds: what must hold is
	// that calls are in flight, none beyond the window (checked above),
	// and the excess is dropped rather than queued without bound.
	st := tr.Stats(2)
	if st.Dropped == 0 || st.InFlight == 0 {
		t.Fatalf("no drop or nothing in flight under a stalled peer: %+v", st)
	}
	rpctest.Eventually(t, 10*time.Second, "overflow reported", func() bool { return rec.numUnreachable(2) > 0 })
	// The data lane carried the appends; the control lane may still be
	// dialing through the held proxy.
	if !st.Lanes[LaneData].Connected {
		t.Fatalf("a stall within CallTimeout dropped the data lane's connection: %+v", st)
	}

	proxy.Release()
	rpctest.Eventually(t, 20*time.Second, "queue drained after release", func() bool {
		st := tr.Stats(2)
		return st.Queued == 0 && st.InFlight == 0
	})
	if got, want := h.count(), 1+n-int(tr.Stats(2).Dropped); got != want {
		t.Fatalf("delivered %d, want %d", got, want)
	}
}

func TestStalledPeerHitsCallTimeout(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	proxy := rpctest.NewProxy(t, ps.addr, 0)
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.CallTimeout = time.Second })
	tr.SetPeer(2, proxy.Addr())
	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "first message", func() bool { return tr.Stats(2).Delivered == 1 })
	proxy.Hold()
	tr.Send([]raft.Message{appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "hung call fails the connection", func() bool {
		return rec.numUnreachable(2) > 0 && tr.Stats(2).Failures > 0
	})
	proxy.Release()
}

// Streams whose header names another cluster, another receiver, or a
// sender other than the member the connection proved to be, are refused:
// nothing reaches the driver.
func TestRefusedStreams(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster uint64
		peerID  uint64 // the id the sender believes the peer has
		proven  uint64 // the member the peer's connection proved (ServerConfig.PeerID)
	}{
		{"wrong cluster", testCluster + 1, 2, 0},
		{"wrong receiver", testCluster, 3, 0},
		{"another member's connection", testCluster, 2, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHandler()
			ps := &peerServer{t: t, id: 2, cluster: testCluster, h: h, peerID: tc.proven}
			ps.start("")
			t.Cleanup(ps.stop)
			rec := newRecorder()
			tr := newTestTransport(t, rec, func(c *Config) { c.ClusterID = tc.cluster })
			tr.SetPeer(tc.peerID, ps.addr)
			for _, typ := range allTypes {
				m := randMessage(rand.New(rand.NewPCG(1, uint64(typ))), typ)
				m.From, m.To, m.Term, m.Incarnation, m.Entries = 1, tc.peerID, 1, testIncarnation, nil
				tr.Send([]raft.Message{m})
			}
			rpctest.Eventually(t, 10*time.Second, "refusal fails both lanes", func() bool {
				st := tr.Stats(tc.peerID)
				return rec.numUnreachable(tc.peerID) > 0 && st.Lanes[LaneData].Failures > 0 && st.Lanes[LaneControl].Failures > 0
			})
			if n := h.count(); n != 0 {
				t.Fatalf("handler got %d refused messages", n)
			}
		})
	}
}

func TestRaftCapabilityOfPeer(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := tr.Raft(ctx, 2)
	if err != nil {
		t.Fatalf("Raft: %v", err)
	}
	// The test peer serves no forwarding capabilities: the refusal shows
	// the call reached its Raft server.
	f, release := rc.Kv(ctx, nil)
	if _, err := f.Struct(); err == nil || !strings.Contains(err.Error(), "no forwarding capabilities") {
		t.Fatalf("kv through the peer's Raft capability: %v, want the peer's refusal", err)
	}
	release()
	rc.Release()

	if _, err := tr.Raft(ctx, 9); err == nil {
		t.Fatalf("Raft of an unknown peer succeeded")
	}
	// A peer that cannot be reached: Node gives up with the context.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	tr.SetPeer(3, addr)
	sctx, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer scancel()
	t0 := time.Now()
	if _, err := tr.Raft(sctx, 3); err == nil {
		t.Fatalf("Raft of an unreachable peer succeeded")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Raft took %v past its context", d)
	}
	// Once the peer appears, Raft finds it.
	startPeer(t, 3, h, addr)
	n3, err := tr.Raft(ctx, 3)
	if err != nil {
		t.Fatalf("Raft after the peer started: %v", err)
	}
	n3.Release()
}

func TestSetPeerAddressChangeAndRemove(t *testing.T) {
	h1, h2 := newFakeHandler(), newFakeHandler()
	a := startPeer(t, 2, h1, "")
	b := startPeer(t, 2, h2, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, a.addr)
	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "delivered via the first address", func() bool { return h1.count() == 1 })
	tr.SetPeer(2, b.addr)
	tr.Send([]raft.Message{appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "delivered via the new address", func() bool { return h2.count() == 1 })
	tr.RemovePeer(2)
	if st := tr.Stats(2); st.Known {
		t.Fatalf("removed peer still known: %+v", st)
	}
	tr.Send([]raft.Message{appMsg(2, 2, 1, 8, nil)}) // dropped: unknown
	if h1.count()+h2.count() != 2 {
		t.Fatalf("message to a removed peer was sent")
	}
}

func TestCloseLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	for round := 0; round < 5; round++ {
		rec := newRecorder()
		tr := New(Config{ClusterID: testCluster, LocalID: 1, Incarnation: testIncarnation, Unreachable: rec.unreach,
			Logger: rpctest.Logger(t), BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond})
		tr.SetPeer(2, ps.addr)
		tr.SetPeer(3, hole.Addr().String())
		for i := 0; i < 100; i++ {
			tr.Send([]raft.Message{appMsg(2, uint64(i), 2, 64, nil), appMsg(3, uint64(i), 2, 64, nil)})
		}
		rpctest.Eventually(t, 10*time.Second, "some messages taken", func() bool { return tr.Stats(2).Delivered > 0 })
		tr.Close()
		tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
		if _, err := tr.Raft(context.Background(), 2); err == nil {
			t.Fatalf("Raft after Close succeeded")
		}
	}
	ps.stop()
	goleak.VerifyNone(t, ignore)
}

// TestMalformedRequestsDoNotCrash opens streams with random headers and
// sends random lists of random structs on a well-opened one, then checks
// the server still serves a valid stream on the same connection. The
// streams it opens one after another outnumber what a connection may
// hold at once: a well-formed open is refused only as overloaded, when
// the connection holds the most streams it may (released ones free their
// slots a moment later), and never more are open.
func TestMalformedRequestsDoNotCrash(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 4))
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	cc := rpctest.Dial(t, ps.addr, rpcDialConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rf, release := cc.Node().Raft(ctx, nil)
	defer release()
	res, err := rf.Struct()
	if err != nil {
		t.Fatal(err)
	}
	rc := res.Raft()
	lim := ps.streamLimits(0)
	open := func(fill func(schema.Raft_open_Params) error) (schema.PeerStream, func(), error) {
		of, orel := rc.Open(ctx, fill)
		defer orel()
		r, err := of.Struct()
		if n, _ := lim.open(); n > DefaultMaxStreams {
			t.Fatalf("%d streams open on one connection, limit %d", n, DefaultMaxStreams)
		}
		if err != nil {
			return schema.PeerStream{}, nil, err
		}
		ps := r.Stream().AddRef()
		return ps, ps.Release, nil
	}
	good := func(p schema.Raft_open_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: testCluster, from: 1, to: 2, inc: testIncarnation})
		return nil
	}
	// openGood opens a well-formed stream, waiting for a free slot if the
	// connection holds the most it may.
	overloaded := 0
	openGood := func() (schema.PeerStream, func()) {
		t.Helper()
		st, rel, err := open(good)
		if exc.IsType(err, exc.Overloaded) {
			overloaded++
			rpctest.Eventually(t, 10*time.Second, "a released stream's slot freed", func() bool {
				n, _ := lim.open()
				return n < DefaultMaxStreams
			})
			st, rel, err = open(good)
		}
		if err != nil {
			t.Fatalf("a well-formed open was refused: %v", err)
		}
		return st, rel
	}
	for i := 0; i < 300; i++ {
		if rng.IntN(3) == 0 {
			_, rel, _ := open(func(p schema.Raft_open_Params) error { return randomStruct(rng, capnp.Struct(p)) })
			if rel != nil {
				rel()
			}
			continue
		}
		st, rel := openGood()
		f, frel := st.Send(ctx, func(p schema.PeerStream_send_Params) error {
			return capnp.Struct(p).SetPtr(0, randomPtr(rng, p.Segment(), 3))
		})
		_, _ = f.Struct() // refused or taken: either is fine, a crash is not
		frel()
		rel()
	}
	if overloaded == 0 {
		t.Error("no open met a full connection: the streams are not bounded")
	}
	// The server still serves a well-formed stream on the same connection.
	st, rel := openGood()
	defer rel()
	m := appMsg(2, 0, 1, 8, nil)
	f, frel := st.Send(ctx, func(p schema.PeerStream_send_Params) error {
		l, err := p.NewMsgs(1)
		if err != nil {
			return err
		}
		return encodeMessage(l.At(0), &m)
	})
	defer frel()
	if _, err := f.Struct(); err != nil {
		t.Fatalf("valid send after garbage: %v", err)
	}
}

func TestOversizeMessageDroppedConnectionKept(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.Dial.MaxMessageSize = 64 << 10 })
	tr.SetPeer(2, ps.addr)
	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil), appMsg(2, 1, 100, 1024, nil), appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "the messages around the big one delivered", func() bool { return h.count() == 2 })
	// The appends travel on the data lane, whose connection is kept; the
	// control lane, which nothing was sent on, may still be dialing.
	if st := tr.Stats(2); st.Dropped != 1 || st.Failures != 0 || !st.Lanes[LaneData].Connected {
		t.Fatalf("stats %+v", st)
	}
	if got := h.received(); len(got) != 2 || len(got[1].Entries) != 1 {
		t.Fatalf("handler got %v", got)
	}
}

// TestLargeAppendsCountBytes stalls a peer and sends appends of 1 MiB:
// the byte limit, not the message count, bounds the queue.
func TestLargeAppendsCountBytes(t *testing.T) {
	h := newFakeHandler()
	h.hold = make(chan struct{})
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	const maxBytes, window = 4 << 20, 2
	tr := newTestTransport(t, rec, func(c *Config) {
		c.Window = window
		c.MaxQueueBytes = maxBytes
		c.CallTimeout = time.Minute
	})
	tr.SetPeer(2, ps.addr)
	chunk := make([]byte, 1<<20)
	const n = 20
	for i := 0; i < n; i++ {
		tr.Send([]raft.Message{{Type: raft.MsgApp, From: 1, To: 2, Term: 2, Index: uint64(i), LogTerm: 2,
			Entries: []raft.Entry{{Index: uint64(i) + 1, Term: 2, Data: chunk}}, Incarnation: testIncarnation}})
		if st := tr.Stats(2); st.QueuedBytes > maxBytes {
			t.Fatalf("queued %d bytes, limit %d", st.QueuedBytes, maxBytes)
		}
	}
	rpctest.Eventually(t, 10*time.Second, "window full at the stalled peer", func() bool { return tr.Stats(2).InFlight == window })
	st := tr.Stats(2)
	if st.Queued > 4 || st.Dropped == 0 {
		t.Fatalf("1 MiB chunks not bounded by bytes: %+v", st)
	}
	rpctest.Eventually(t, 10*time.Second, "overflow reported", func() bool { return rec.numUnreachable(2) > 0 })
	close(h.hold)
	rpctest.Eventually(t, 20*time.Second, "the rest delivered", func() bool {
		return uint64(h.count()) == n-tr.Stats(2).Dropped
	})
	for _, m := range h.received() {
		if m.Type != raft.MsgApp || len(m.Entries) != 1 || len(m.Entries[0].Data) != 1<<20 {
			t.Fatalf("bad append %v", m)
		}
	}
}

// holdingHandler is a driver that keeps every done and never takes the
// messages on its own, like a loop stuck on a slow disk.
type holdingHandler struct {
	mu    sync.Mutex
	dones []func(*raft.NotMember, error)
}

func (h *holdingHandler) Deliver(_ []raft.Message, done func(*raft.NotMember, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dones = append(h.dones, done)
}

func (h *holdingHandler) held() []func(*raft.NotMember, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.dones)
}

// TestServerCloseAnswersCallsTheDriverHolds: closing the server answers
// the calls a Deliverer holds (the connection waits for every call to be
// answered before it closes), and the driver's late replies are ignored.
func TestServerCloseAnswersCallsTheDriverHolds(t *testing.T) {
	h := &holdingHandler{}
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.CallTimeout = time.Minute })
	tr.SetPeer(2, ps.addr)
	for i := 0; i < 5; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i), 1, 8, nil)})
		rpctest.Eventually(t, 10*time.Second, "the driver holds the call", func() bool { return len(h.held()) == i+1 })
	}

	closed := make(chan struct{})
	go func() {
		ps.stop()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("server Close hangs on the calls the driver holds")
	}
	for _, done := range h.held() {
		done(&raft.NotMember{Index: 1}, nil)
	}
	if n := tr.Stats(2).Delivered; n != 0 {
		t.Fatalf("%d messages counted taken from calls answered after the connection closed", n)
	}
	if n := len(rec.notMembers()); n != 0 {
		t.Fatalf("%d answers given after the connection closed were reported", n)
	}
}

func TestServerBoundsCallsInFlight(t *testing.T) {
	h := newFakeHandler()
	h.hold = make(chan struct{})
	ps := startPeerWith(t, 2, h, "", 4)
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.Window = 16; c.CallTimeout = time.Minute })
	tr.SetPeer(2, ps.addr)
	const n = 50
	for i := 0; i < n; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i), 1, 8, nil)})
		if i < 16 {
			// One call each: fill the window before the rest queue.
			rpctest.Eventually(t, 10*time.Second, "the call sent", func() bool { return tr.Stats(2).Calls == uint64(i+1) })
		}
	}
	rpctest.Eventually(t, 10*time.Second, "sender window full", func() bool { return tr.Stats(2).InFlight == 16 })
	rpctest.Eventually(t, 10*time.Second, "server at its bound", func() bool { return h.count() == 4 })
	h.mu.Lock()
	cur := h.cur
	h.mu.Unlock()
	if cur != 4 {
		t.Fatalf("%d calls in the handler, bound 4", cur)
	}
	close(h.hold)
	rpctest.Eventually(t, 20*time.Second, "everything taken", func() bool { return tr.Stats(2).Delivered == n })
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxCur > 4 {
		t.Fatalf("%d calls in the handler at once, bound 4", h.maxCur)
	}
	for i, m := range h.got {
		if m.Index != uint64(i) {
			t.Fatalf("message %d out of order: %v", i, m)
		}
	}
}

// lockedBuffer is a log sink safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) count(s string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Count(b.buf.String(), s)
}

// TestConnectionStateLoggedOncePerTransition: retries against a down peer
// log at Debug; Info gets one line per up/down transition.
func TestConnectionStateLoggedOncePerTransition(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var out lockedBuffer
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) {
		c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: &out})
	})
	tr.SetPeer(2, addr)
	rpctest.Eventually(t, 10*time.Second, "several failed dials", func() bool { return tr.Stats(2).Failures >= 5 })
	if n := out.count("cannot reach peer"); n != 2 {
		t.Fatalf("%d Info lines for a peer that stayed down, want 2 (one per lane):\n%s", n, out.buf.String())
	}
	ps := startPeer(t, 2, newFakeHandler(), addr)
	rpctest.Eventually(t, 10*time.Second, "connected", func() bool { return tr.Stats(2).Connected })
	ps.stop()
	rpctest.Eventually(t, 10*time.Second, "disconnected", func() bool { return !tr.Stats(2).Connected })
	f := tr.Stats(2).Failures
	rpctest.Eventually(t, 10*time.Second, "more failed dials", func() bool { return tr.Stats(2).Failures >= f+5 })
	// Once per lane.
	for line, want := range map[string]int{"cannot reach peer": 2, "connected to peer": 2, "lost connection to peer": 2} {
		if n := out.count(line); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", line, n, want, out.buf.String())
		}
	}
}
