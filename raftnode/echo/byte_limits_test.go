package echo_test

import (
	"context"
	"flag"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

var seedFlag = flag.Int64("seed", 0, "seed for the tests' random sizes (0: a new one, printed on failure)")

// seeded returns a random source for t, printing its seed if t fails.
func seeded(t *testing.T) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random sizes from seed %d (rerun with -seed %d)", seed, seed)
		}
	})
	return rand.New(rand.NewSource(seed))
}

// heapInUse returns the bytes of live heap objects once garbage is
// collected (twice: pooled buffers survive one collection).
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Ten listeners stall while large messages are pinged: each is dropped
// once its undelivered messages pass QueueBytes, and told so; the node's
// memory stays bounded by bytes (before, a count limit let ten stalled
// listeners and 1 MiB pings grow a node by gigabytes); a healthy
// listener receives every message meanwhile.
func TestStalledListenersAreDroppedByBytesWhileOthersKeepReceiving(t *testing.T) {
	rng := seeded(t)
	const (
		stalledListeners = 10
		queueBytes       = 2 << 20
		pings            = 16
	)
	hub, addr := serveHub(t, echo.HubConfig{QueueBytes: queueBytes, CloseTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The healthy listener keeps only what the checks need, not the texts.
	type got struct {
		seq  uint64
		size int
		head byte
	}
	healthy := make(chan got, pings+1)
	healthyErr := make(chan error, 1)
	go func() {
		healthyErr <- newClient(t, addr).Listen(ctx, func(m client.Message) { healthy <- got{m.Seq, len(m.Msg), m.Msg[0]} })
	}()
	stall := make(chan struct{})
	stalled := make(chan error, stalledListeners)
	for i := 0; i < stalledListeners; i++ {
		c := newClient(t, addr)
		go func() { stalled <- c.Listen(ctx, func(client.Message) { <-stall }) }()
	}
	// Registered after the clients' cleanups, so it runs first: a failed
	// test must not leave handlers blocked while their clients close.
	release := sync.OnceFunc(func() { close(stall) })
	t.Cleanup(release)
	rpctest.Eventually(t, 30*time.Second, "every listener subscribed", func() bool { return hub.NumListeners() == stalledListeners+1 })
	pinger := newClient(t, addr)
	// ping sends msg and waits for the healthy listener to receive it, so
	// only the stalled ones fall behind.
	ping := func(seq uint64, msg string) {
		t.Helper()
		if _, err := pinger.Ping(ctx, msg); err != nil {
			t.Fatalf("ping %d of %d bytes: %v", seq, len(msg), err)
		}
		select {
		case g := <-healthy:
			if g.seq != seq || g.size != len(msg) || g.head != msg[0] {
				t.Fatalf("healthy listener got seq %d (%d bytes, %q...), want seq %d (%d bytes, %q...)",
					g.seq, g.size, g.head, seq, len(msg), msg[0])
			}
		case err := <-healthyErr:
			t.Fatalf("the healthy listener was dropped: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatalf("the healthy listener did not receive message %d", seq)
		}
		if b := hub.UndeliveredBytes(); b > (stalledListeners+1)*queueBytes {
			t.Fatalf("after ping %d: %d undelivered bytes, over %d listeners' QueueBytes of %d", seq, b, stalledListeners+1, queueBytes)
		}
	}
	// A small first message is what the stalled listeners block on; the
	// large ones queue behind it.
	ping(1, "stall here")
	baseline := heapInUse()
	total := 0
	for i := 0; i < pings; i++ {
		size := 512<<10 + rng.Intn(512<<10) // up to the default MaxMessage of 1 MiB
		total += size
		ping(uint64(i+2), strings.Repeat(string(rune('a'+i%26)), size))
	}
	rpctest.Eventually(t, 10*time.Second, "the stalled listeners dropped", func() bool { return hub.NumListeners() == 1 })

	// Dropped, the stalled listeners hold nothing of the large messages
	// (their handlers block on the small one); kept by message count, their
	// queues would hold every one. The node also keeps each ping's reply
	// until the pinger's Finish, which go-capnp sends 250 ms late: close
	// the pinger so that they go.
	pinger.Close()
	t.Logf("%d bytes pinged", total)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		grew := int64(heapInUse()) - int64(baseline)
		if grew <= int64(total/2) {
			t.Logf("heap grew by %d KiB", grew>>10)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the heap is still %d KiB larger than before %d KiB were pinged, with %d stalled listeners allowed %d bytes each",
				grew>>10, total>>10, stalledListeners, queueBytes)
		}
	}

	release()
	for i := 0; i < stalledListeners; i++ {
		expectDropped(t, stalled, "bytes behind")
	}
}

// memListener is an EchoListener in this process: it reports each
// message on got and the closing reason on closed; if stall is set, its
// first delivery blocks until stall closes or the call is cancelled.
type memListener struct {
	got    chan echo.Message
	closed chan string
	stall  chan struct{}
}

func newMemListener(stalls bool) *memListener {
	l := &memListener{got: make(chan echo.Message, 1024), closed: make(chan string, 1)}
	if stalls {
		l.stall = make(chan struct{})
	}
	return l
}

func (l *memListener) Messages(ctx context.Context, call schema.EchoListener_messages) error {
	if l.stall != nil {
		select {
		case <-l.stall:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	list, err := call.Args().Messages()
	if err != nil {
		return err
	}
	for i := 0; i < list.Len(); i++ {
		msg, err := list.At(i).Msg()
		if err != nil {
			return err
		}
		l.got <- echo.Message{Seq: list.At(i).Seq(), Msg: msg}
	}
	return nil
}

func (l *memListener) Closed(_ context.Context, call schema.EchoListener_closed) error {
	reason, err := call.Args().Reason()
	l.closed <- reason
	return err
}

// subscribe subscribes l to hub.
func subscribe(t *testing.T, hub *echo.Hub, l *memListener) {
	t.Helper()
	cancel, err := hub.Subscribe(schema.EchoListener_ServerToClient(l), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
}

// closedReason waits for l to be told it was dropped.
func closedReason(t *testing.T, l *memListener, which string) string {
	t.Helper()
	select {
	case r := <-l.closed:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("the %s listener was never told it was dropped", which)
		return ""
	}
}

// When the listeners together hold more than MaxBytes of undelivered
// messages, the one furthest behind is dropped, not a later one with
// less to catch up, nor a healthy one; the later one is dropped in turn
// when it passes its own QueueBytes.
func TestTheListenerFurthestBehindIsDroppedWhenTheEchoBuffersAreFull(t *testing.T) {
	const msgCost = 256 << 10 // each message's text plus echo's per-message overhead of 32 bytes
	hub := echo.NewHub(echo.HubConfig{
		QueueBytes: 16 * msgCost,
		MaxBytes:   20 * msgCost,
		MaxMessage: msgCost,
		Logger:     rpctest.Logger(t),
	})
	t.Cleanup(hub.Close)
	healthy, first, second := newMemListener(false), newMemListener(true), newMemListener(true)
	defer close(first.stall)
	defer close(second.stall)
	subscribe(t, hub, healthy)
	subscribe(t, hub, first)

	published := 0
	publish := func() {
		t.Helper()
		seq, err := hub.Publish(strings.Repeat("m", msgCost-32))
		if err != nil {
			t.Fatal(err)
		}
		published++
		select {
		case m := <-healthy.got:
			if m.Seq != seq {
				t.Fatalf("healthy listener got seq %d, want %d", m.Seq, seq)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("healthy listener did not receive seq %d", seq)
		}
		// One message of the healthy listener's may still count.
		if b := hub.UndeliveredBytes(); b > 20*msgCost+msgCost {
			t.Fatalf("after seq %d: %d undelivered bytes, over MaxBytes", seq, b)
		}
	}
	for i := 0; i < 8; i++ {
		publish()
	}
	subscribe(t, hub, second)
	for hub.NumListeners() == 3 {
		if published > 40 {
			t.Fatalf("nobody dropped after %d messages of %d bytes", published, msgCost)
		}
		publish()
	}
	if r := closedReason(t, first, "first"); !strings.Contains(r, "furthest behind") {
		t.Fatalf("the first listener was dropped saying %q, want that it was the furthest behind", r)
	}
	for hub.NumListeners() == 2 {
		if published > 80 {
			t.Fatalf("the second stalled listener was not dropped after %d messages", published)
		}
		publish()
	}
	if r := closedReason(t, second, "second"); !strings.Contains(r, "bytes behind") {
		t.Fatalf("the second listener was dropped saying %q, want that it fell bytes behind", r)
	}
	for i := 0; i < 4; i++ {
		publish() // the healthy listener carries on alone
	}
}

// A message over the hub's MaxMessage is refused with an error naming the
// limit, is not delivered, and costs the connection nothing.
func TestPingOverTheEchoMessageLimitIsRefused(t *testing.T) {
	hub, addr := serveHub(t, echo.HubConfig{})
	l := newMemListener(false)
	subscribe(t, hub, l)
	c := newClient(t, addr)
	_, err := c.Ping(context.Background(), strings.Repeat("x", echo.DefaultMaxMessage+1))
	if err == nil || !strings.Contains(err.Error(), "limit of 1048576 bytes for echo messages") {
		t.Fatalf("ping of 1 MiB + 1 byte: %v, want an error naming the 1048576-byte limit", err)
	}
	if reply, err := c.Ping(context.Background(), "small"); err != nil || reply != "echo:small" {
		t.Fatalf("ping after the refusal: %q, %v", reply, err)
	}
	if m := <-l.got; m.Msg != "small" || m.Seq != 1 {
		t.Fatalf("the listener got %+v first, want seq 1 \"small\"", m)
	}
}
