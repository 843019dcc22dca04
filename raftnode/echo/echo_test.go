package echo_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"go.uber.org/goleak"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// testNode is a minimal Node bootstrap that serves only echo, so these
// tests can reach the hub directly.
type testNode struct {
	rpctest.UnservedNode
	hub *echo.Hub
	ex  *rpc.Exporter
}

func (n *testNode) Echo(_ context.Context, call schema.Node_echo) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetEcho(echo.NewCapability(n.hub, n.ex))
}
func (n *testNode) Raft(context.Context, schema.Node_raft) error { return errors.New("not served") }
func (n *testNode) Info(context.Context, schema.Node_info) error { return nil }

func bootstrap(hub *echo.Hub) func(*rpc.ConnInfo) capnp.Client {
	return func(ci *rpc.ConnInfo) capnp.Client {
		n := &testNode{hub: hub, ex: ci.Exporter}
		return ci.Exporter.Export(schema.Node_Methods(nil, n), n, nil)
	}
}

// serveHub serves a fresh hub on loopback.
func serveHub(t *testing.T, cfg echo.HubConfig) (*echo.Hub, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = rpctest.Logger(t)
	}
	hub := echo.NewHub(cfg)
	t.Cleanup(hub.Close)
	_, addr := rpctest.Serve(t, rpc.Config{Bootstrap: bootstrap(hub)})
	return hub, addr
}

func newClient(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.New([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestPingRepliesWithEchoPrefix(t *testing.T) {
	_, addr := serveHub(t, echo.HubConfig{})
	reply, err := newClient(t, addr).Ping(context.Background(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	if reply != "echo:hello" {
		t.Fatalf("reply %q, want %q", reply, "echo:hello")
	}
}

// recorder collects what one listener receives.
type recorder struct {
	mu   sync.Mutex
	msgs []client.Message
	all  chan struct{} // closed once want messages arrived
	want int
}

func (r *recorder) add(m client.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	if len(r.msgs) == r.want {
		close(r.all)
	}
}

func TestEveryListenerGetsEveryMessageInOrderAndAStalledOneIsDropped(t *testing.T) {
	const (
		listeners = 50
		pingers   = 200
		perPinger = 12
		total     = pingers * perPinger
		queueLen  = 1024
	)
	hub, addr := serveHub(t, echo.HubConfig{QueueLen: queueLen, CloseTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// 50 healthy listeners, each on its own connection.
	recs := make([]*recorder, listeners)
	listenErrs := make(chan error, listeners+1)
	for i := range recs {
		recs[i] = &recorder{all: make(chan struct{}), want: total}
		c := newClient(t, addr)
		go func(r *recorder) { listenErrs <- c.Listen(ctx, r.add) }(recs[i])
	}
	// One listener that stalls on its first message until released.
	stall := make(chan struct{})
	stalled := make(chan error, 1)
	var stallOnce sync.Once
	entered := make(chan struct{})
	go func() {
		stalled <- newClient(t, addr).Listen(ctx, func(client.Message) {
			stallOnce.Do(func() { close(entered) })
			<-stall
		})
	}()
	rpctest.Eventually(t, 30*time.Second, "all listeners subscribed", func() bool { return hub.NumListeners() == listeners+1 })
	// Registered after the clients' cleanups, so it runs first: a failed
	// test must not leave the handler blocked while its client closes.
	release := sync.OnceFunc(func() { close(stall) })
	t.Cleanup(release)

	// 200 concurrent clients, each on its own connection.
	var wg sync.WaitGroup
	pingErrs := make(chan error, pingers)
	for p := 0; p < pingers; p++ {
		c := newClient(t, addr)
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for i := 0; i < perPinger; i++ {
				msg := fmt.Sprintf("c%d-m%d", p, i)
				reply, err := c.Ping(ctx, msg)
				if err == nil && reply != "echo:"+msg {
					err = fmt.Errorf("reply %q to %q", reply, msg)
				}
				if err != nil {
					pingErrs <- err
					return
				}
			}
		}(p)
	}
	wg.Wait()
	close(pingErrs)
	for err := range pingErrs {
		t.Fatalf("ping while a listener was stalled: %v", err)
	}

	// Every healthy listener receives all messages while the stalled one
	// is still blocked: it slowed nobody down.
	for i, r := range recs {
		select {
		case <-r.all:
		case err := <-listenErrs:
			t.Fatalf("a healthy listener ended early: %v", err)
		case <-time.After(60 * time.Second):
			r.mu.Lock()
			n := len(r.msgs)
			r.mu.Unlock()
			t.Fatalf("listener %d received %d of %d messages", i, n, total)
		}
	}
	<-entered
	rpctest.Eventually(t, 10*time.Second, "stalled listener dropped", func() bool { return hub.NumListeners() == listeners })

	// Same order everywhere: consecutive sequence numbers, and the same
	// message at each sequence number on every listener.
	first := recs[0].msgs
	sent := map[string]bool{}
	for i, m := range first {
		if i > 0 && m.Seq != first[i-1].Seq+1 {
			t.Fatalf("listener 0: seq %d follows %d", m.Seq, first[i-1].Seq)
		}
		if sent[m.Msg] {
			t.Fatalf("listener 0: %q delivered twice", m.Msg)
		}
		sent[m.Msg] = true
	}
	for p := 0; p < pingers; p++ {
		for i := 0; i < perPinger; i++ {
			if msg := fmt.Sprintf("c%d-m%d", p, i); !sent[msg] {
				t.Fatalf("listener 0 never received %q", msg)
			}
		}
	}
	for li, r := range recs[1:] {
		for i, m := range r.msgs {
			if m != first[i] {
				t.Fatalf("listener %d message %d is %+v, listener 0 got %+v", li+1, i, m, first[i])
			}
		}
	}

	// Unblock the stalled listener: it learns why it was dropped.
	release()
	expectDropped(t, stalled, "behind")
}

// expectDropped waits for a Listen that was dropped to return on ended,
// and checks that it says so, and why (saying).
func expectDropped(t *testing.T, ended <-chan error, saying string) {
	t.Helper()
	select {
	case err := <-ended:
		if !errors.Is(err, client.ErrSubscriptionEnded) || !strings.Contains(err.Error(), saying) {
			t.Fatalf("stalled listener ended with %v, want ErrSubscriptionEnded saying %q", err, saying)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stalled listener was never told it was dropped")
	}
}

func TestSubscriptionEnds(t *testing.T) {
	hub, addr := serveHub(t, echo.HubConfig{})

	t.Run("when the listener cancels", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- newClient(t, addr).Listen(ctx, func(client.Message) {}) }()
		rpctest.Eventually(t, 10*time.Second, "subscribed", func() bool { return hub.NumListeners() == 1 })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Listen after cancel: %v", err)
		}
		rpctest.Eventually(t, 10*time.Second, "unsubscribed", func() bool { return hub.NumListeners() == 0 })
	})
	t.Run("when the client disconnects", func(t *testing.T) {
		c := newClient(t, addr)
		done := make(chan error, 1)
		go func() { done <- c.Listen(context.Background(), func(client.Message) {}) }()
		rpctest.Eventually(t, 10*time.Second, "subscribed", func() bool { return hub.NumListeners() == 1 })
		c.Close()
		rpctest.Eventually(t, 10*time.Second, "unsubscribed", func() bool { return hub.NumListeners() == 0 })
		if err := <-done; err == nil {
			t.Fatal("Listen returned nil after its client closed")
		}
	})
	t.Run("when the node shuts down", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- newClient(t, addr).Listen(context.Background(), func(client.Message) {}) }()
		rpctest.Eventually(t, 10*time.Second, "subscribed", func() bool { return hub.NumListeners() == 1 })
		hub.Close()
		if err := <-done; !errors.Is(err, client.ErrSubscriptionEnded) || !strings.Contains(err.Error(), "shutting down") {
			t.Fatalf("Listen when the hub closed: %v", err)
		}
	})
}

// nopListener is a raw EchoListener for the leak test.
type nopListener struct{}

func (nopListener) Messages(context.Context, schema.EchoListener_messages) error { return nil }
func (nopListener) Closed(context.Context, schema.EchoListener_closed) error     { return nil }

func TestConnectSubscribeDisconnectCyclesLeaveNothingBehind(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	hub := echo.NewHub(echo.HubConfig{Logger: rpctest.Logger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := rpc.NewServer(rpc.Config{Bootstrap: bootstrap(hub), Logger: rpctest.Logger(t)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	const cycles = 1000
	for i := 0; i < cycles; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cc, err := rpc.Dial(ctx, ln.Addr().String(), rpc.DialConfig{})
		if err != nil {
			t.Fatalf("cycle %d: dial: %v", i, err)
		}
		ef, erel := cc.Node().Echo(ctx, nil)
		e := ef.Echo()
		l := schema.EchoListener_ServerToClient(nopListener{})
		sf, srel := e.Subscribe(ctx, func(p schema.Echo_subscribe_Params) error { return p.SetListener(l.AddRef()) })
		if _, err := sf.Struct(); err != nil {
			t.Fatalf("cycle %d: subscribe: %v", i, err)
		}
		// Half release politely, half just drop the connection.
		if i%2 == 0 {
			srel()
			erel()
			l.Release()
			cc.Close()
		} else {
			cc.Close()
			srel()
			erel()
			l.Release()
		}
		cancel()
	}
	rpctest.Eventually(t, 30*time.Second, "every subscription ended", func() bool { return hub.NumListeners() == 0 })
	rpctest.Eventually(t, 30*time.Second, "every connection closed", func() bool { return srv.NumConns() == 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, rpc.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	hub.Close()
	goleak.VerifyNone(t, ignore)
}

func (n *testNode) Kv(context.Context, schema.Node_kv) error         { return errors.New("not served") }
func (n *testNode) Status(context.Context, schema.Node_status) error { return errors.New("not served") }
func (n *testNode) Admin(context.Context, schema.Node_admin) error   { return errors.New("not served") }
