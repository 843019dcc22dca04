package transport

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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
	rpctest.Eventually(t, 60*time.Second, "every response delivered", func() bool { return rec.numDelivered() == n })

	got := h.received()
	if len(got) != n {
		t.Fatalf("handler got %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Index != uint64(i) || m.Type != raft.MsgApp || m.From != 1 || m.To != 2 {
			t.Fatalf("message %d out of order or wrong: %v", i, m)
		}
	}
	seen := make(map[uint64]bool)
	for _, m := range rec.msgs() {
		if m.Type != raft.MsgAppResp || m.From != 2 || m.To != 1 || seen[m.Index] {
			t.Fatalf("bad or duplicate response %v", m)
		}
		seen[m.Index] = true
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
	t.Logf("max in flight at the server: %d (window %d)", maxCur, window)
	if st := tr.Stats(2); !st.Connected || st.Delivered != n || st.Dropped != 0 || st.Failures != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestEveryMessageTypeOverTheWire(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)

	var sent []raft.Message
	for i := 0; i < 200; i++ {
		m := randMessage(rng, requestTypes[rng.IntN(len(requestTypes))])
		m.From, m.To = 1, 2
		if m.Term == 0 {
			m.Term = 1
		}
		if m.Type == raft.MsgSnap {
			m.Snapshot.Index = uint64(i) // tells the responses apart
		}
		sent = append(sent, m)
	}
	tr.Send(sent)
	want := 0
	for _, m := range sent {
		if r, ok := defaultRespond(m); ok && r.Term != 0 {
			want++
		}
	}
	rpctest.Eventually(t, 20*time.Second, "every request handled", func() bool { return h.count() == len(sent) })
	rpctest.Eventually(t, 20*time.Second, "every response delivered", func() bool { return rec.numDelivered() == want })
	for i, got := range h.received() {
		if w := wireRequest(sent[i]); !equalMsg(got, w) {
			t.Fatalf("request %d:\n got %v\nwant %v", i, got, w)
		}
	}
	if st := tr.Stats(2); st.Failures != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func equalMsg(a, b raft.Message) bool {
	return a.String() == b.String() && len(a.Entries) == len(b.Entries) && string(a.Data) == string(b.Data) &&
		string(a.Context) == string(b.Context)
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
	if slowest > 100*time.Millisecond {
		t.Fatalf("a Send took %v", slowest)
	}
	rpctest.Eventually(t, 20*time.Second, "live peer got everything", func() bool { return h.count() == n })
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
	rpctest.Eventually(t, 10*time.Second, "first response", func() bool { return rec.numDelivered() == 1 })

	ps.stop()
	rpctest.Eventually(t, 10*time.Second, "unreachable after the peer stopped", func() bool { return rec.numUnreachable(2) > 0 })
	rpctest.Eventually(t, 10*time.Second, "disconnected", func() bool { return !tr.Stats(2).Connected })

	ps.start(ps.addr)
	rpctest.Eventually(t, 10*time.Second, "reconnected", func() bool { return tr.Stats(2).Connected })
	tr.Send([]raft.Message{appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "response after restart", func() bool { return rec.numDelivered() == 2 })
	if m := rec.msgs()[1]; m.Index != 2 {
		t.Fatalf("response after restart: %v", m)
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
	rpctest.Eventually(t, 10*time.Second, "first response", func() bool { return rec.numDelivered() == 1 })

	proxy.Hold()
	const n = 5000
	for i := 0; i < n; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i+1), 4, 1024, nil)})
		if st := tr.Stats(2); st.Queued > maxQueue || st.QueuedBytes > maxBytes || st.InFlight > window {
			t.Fatalf("over the limits: %+v", st)
		}
	}
	st := tr.Stats(2)
	if st.Dropped == 0 || st.InFlight != window {
		t.Fatalf("no drop or window not full under a stalled peer: %+v", st)
	}
	rpctest.Eventually(t, 10*time.Second, "overflow reported", func() bool { return rec.numUnreachable(2) > 0 })
	if !st.Connected {
		t.Fatalf("a stall within CallTimeout dropped the connection: %+v", st)
	}

	proxy.Release()
	rpctest.Eventually(t, 20*time.Second, "queue drained after release", func() bool {
		st := tr.Stats(2)
		return st.Queued == 0 && st.InFlight == 0
	})
	if got, want := rec.numDelivered(), 1+n-int(tr.Stats(2).Dropped); got != want {
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
	rpctest.Eventually(t, 10*time.Second, "first response", func() bool { return rec.numDelivered() == 1 })
	proxy.Hold()
	tr.Send([]raft.Message{appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "hung call fails the connection", func() bool {
		return rec.numUnreachable(2) > 0 && tr.Stats(2).Failures > 0
	})
	proxy.Release()
}

func TestRefusedHeaders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster uint64
		peerID  uint64 // the id the sender believes the peer has
	}{
		{"wrong cluster", testCluster + 1, 2},
		{"wrong receiver", testCluster, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHandler()
			ps := startPeer(t, 2, h, "")
			rec := newRecorder()
			tr := newTestTransport(t, rec, func(c *Config) { c.ClusterID = tc.cluster })
			tr.SetPeer(tc.peerID, ps.addr)
			for _, typ := range requestTypes {
				m := randMessage(rand.New(rand.NewPCG(1, uint64(typ))), typ)
				m.From, m.To, m.Term = 1, tc.peerID, 1
				tr.Send([]raft.Message{m})
			}
			rpctest.Eventually(t, 10*time.Second, "refusal fails the connection", func() bool {
				return rec.numUnreachable(tc.peerID) > 0 && tr.Stats(tc.peerID).Failures > 0
			})
			if n := h.count(); n != 0 {
				t.Fatalf("handler got %d refused messages", n)
			}
			if n := rec.numDelivered(); n != 0 {
				t.Fatalf("%d responses delivered", n)
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

func TestPlainHandlerServes(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, plainHandler{h}, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, nil)
	tr.SetPeer(2, ps.addr)
	const n = 500
	for i := 0; i < n; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i), 1, 8, nil)})
	}
	rpctest.Eventually(t, 20*time.Second, "every response", func() bool { return rec.numDelivered() == n })
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
		tr := New(Config{ClusterID: testCluster, LocalID: 1, Deliver: rec.deliver, Unreachable: rec.unreach,
			Logger: rpctest.Logger(t), BackoffMin: time.Millisecond, BackoffMax: 10 * time.Millisecond})
		tr.SetPeer(2, ps.addr)
		tr.SetPeer(3, hole.Addr().String())
		for i := 0; i < 100; i++ {
			tr.Send([]raft.Message{appMsg(2, uint64(i), 2, 64, nil), appMsg(3, uint64(i), 2, 64, nil)})
		}
		rpctest.Eventually(t, 10*time.Second, "some responses", func() bool { return rec.numDelivered() > 0 })
		tr.Close()
		tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil)})
		if _, err := tr.Raft(context.Background(), 2); err == nil {
			t.Fatalf("Raft after Close succeeded")
		}
	}
	ps.stop()
	goleak.VerifyNone(t, ignore)
}

// TestMalformedRequestsDoNotCrash calls every Raft method with params whose
// request is a random struct: random data words and random pointers, then
// checks the server still serves a valid request.
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
	for i := 0; i < 300; i++ {
		method := rng.IntN(5)
		fill := func(s capnpStruct) error { return randomStruct(rng, s) }
		var f interface {
			Struct() (capnpStruct, error)
		}
		var rel func()
		switch method {
		case 0:
			fu, r := rc.RequestVote(ctx, func(p schema.RequestVote_requestVote_Params) error { return fill(capnpStruct(p)) })
			f, rel = futureOf{fu.Future}, r
		case 1:
			fu, r := rc.AppendEntries(ctx, func(p schema.AppendEntries_appendEntries_Params) error { return fill(capnpStruct(p)) })
			f, rel = futureOf{fu.Future}, r
		case 2:
			fu, r := rc.InstallSnapshot(ctx, func(p schema.InstallSnapshot_installSnapshot_Params) error { return fill(capnpStruct(p)) })
			f, rel = futureOf{fu.Future}, r
		case 3:
			fu, r := rc.TimeoutNow(ctx, func(p schema.TimeoutNow_timeoutNow_Params) error { return fill(capnpStruct(p)) })
			f, rel = futureOf{fu.Future}, r
		default:
			fu, r := rc.ReadIndex(ctx, func(p schema.ReadIndex_readIndex_Params) error { return fill(capnpStruct(p)) })
			f, rel = futureOf{fu.Future}, r
		}
		_, _ = f.Struct() // refused or answered: either is fine, a crash is not
		rel()
	}
	// The server still serves a well-formed request on the same connection.
	m := appMsg(2, 0, 1, 8, nil)
	fu, r := rc.AppendEntries(ctx, func(p schema.AppendEntries_appendEntries_Params) error {
		return encodeAppend(p, header{cluster: testCluster, from: 1, to: 2}, m)
	})
	defer r()
	if _, err := fu.Struct(); err != nil {
		t.Fatalf("valid request after garbage: %v", err)
	}
}

func TestOversizeMessageDroppedConnectionKept(t *testing.T) {
	h := newFakeHandler()
	ps := startPeer(t, 2, h, "")
	rec := newRecorder()
	tr := newTestTransport(t, rec, func(c *Config) { c.Dial.MaxMessageSize = 64 << 10 })
	tr.SetPeer(2, ps.addr)
	tr.Send([]raft.Message{appMsg(2, 0, 1, 8, nil), appMsg(2, 1, 100, 1024, nil), appMsg(2, 1, 1, 8, nil)})
	rpctest.Eventually(t, 10*time.Second, "the messages around the big one delivered", func() bool { return rec.numDelivered() == 2 })
	if st := tr.Stats(2); st.Dropped != 1 || st.Failures != 0 || !st.Connected {
		t.Fatalf("stats %+v", st)
	}
	if got := h.received(); len(got) != 2 || len(got[1].Entries) != 1 {
		t.Fatalf("handler got %v", got)
	}
}

// TestSnapshotChunksCountBytes stalls a peer and sends 1 MiB snapshot
// chunks: the byte limit, not the message count, bounds the queue.
func TestSnapshotChunksCountBytes(t *testing.T) {
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
		tr.Send([]raft.Message{{Type: raft.MsgSnap, From: 1, To: 2, Term: 2, Snapshot: &raft.SnapshotMeta{Index: 10, Term: 2},
			Offset: uint64(i) << 20, Data: chunk, Done: i == n-1}})
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
		return uint64(rec.numDelivered()) == n-tr.Stats(2).Dropped
	})
	for _, m := range rec.msgs() {
		if m.Type != raft.MsgSnapResp || m.Snapshot == nil || m.Snapshot.Index != 10 {
			t.Fatalf("bad snapshot response %v", m)
		}
	}
}

// TestHandlerContextEndsWithConnection: when the sender goes away, the
// Handle calls waiting on its connection return (the driver is not left
// holding them).
func TestHandlerContextEndsWithConnection(t *testing.T) {
	h := newFakeHandler()
	h.hold = make(chan struct{})
	defer close(h.hold)
	ps := startPeer(t, 2, plainHandler{h}, "")
	rec := newRecorder()
	tr := New(Config{ClusterID: testCluster, LocalID: 1, Deliver: rec.deliver, Logger: rpctest.Logger(t)})
	tr.SetPeer(2, ps.addr)
	for i := 0; i < 5; i++ {
		tr.Send([]raft.Message{appMsg(2, uint64(i), 1, 8, nil)})
	}
	rpctest.Eventually(t, 10*time.Second, "handler holds 5 calls", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.cur == 5
	})
	tr.Close()
	rpctest.Eventually(t, 10*time.Second, "every Handle returned", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.cur == 0
	})
}

// holdingHandler is a driver that keeps every reply and never answers on
// its own, like a loop stuck on a slow disk.
type holdingHandler struct {
	mu      sync.Mutex
	replies []func(raft.Message, bool, error)
}

func (h *holdingHandler) Handle(ctx context.Context, _ raft.Message) (raft.Message, bool, error) {
	<-ctx.Done()
	return raft.Message{}, false, ctx.Err()
}

func (h *holdingHandler) Deliver(_ raft.Message, reply func(raft.Message, bool, error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.replies = append(h.replies, reply)
}

func (h *holdingHandler) held() []func(raft.Message, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.replies)
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
	}
	rpctest.Eventually(t, 10*time.Second, "the driver holds 5 calls", func() bool { return len(h.held()) == 5 })

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
	for i, reply := range h.held() {
		reply(raft.Message{Type: raft.MsgAppResp, From: 2, To: 1, Term: 2, Index: uint64(i + 1)}, true, nil)
	}
	if n := rec.numDelivered(); n != 0 {
		t.Fatalf("%d responses delivered from calls answered after the connection closed", n)
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
	rpctest.Eventually(t, 20*time.Second, "everything answered", func() bool { return rec.numDelivered() == n })
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
	if n := out.count("cannot reach peer"); n != 1 {
		t.Fatalf("%d Info lines for a peer that stayed down, want 1:\n%s", n, out.buf.String())
	}
	ps := startPeer(t, 2, newFakeHandler(), addr)
	rpctest.Eventually(t, 10*time.Second, "connected", func() bool { return tr.Stats(2).Connected })
	ps.stop()
	rpctest.Eventually(t, 10*time.Second, "disconnected", func() bool { return !tr.Stats(2).Connected })
	f := tr.Stats(2).Failures
	rpctest.Eventually(t, 10*time.Second, "more failed dials", func() bool { return tr.Stats(2).Failures >= f+5 })
	for line, want := range map[string]int{"cannot reach peer": 1, "connected to peer": 1, "lost connection to peer": 1} {
		if n := out.count(line); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", line, n, want, out.buf.String())
		}
	}
}
