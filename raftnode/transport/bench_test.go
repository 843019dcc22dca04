package transport

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
)

// BenchmarkMsgApp measures MsgApp calls per second over loopback, each
// carrying 1 or 64 entries of 256 B, with 1, 16 or 64 calls in flight.
// The peer's handler answers at once (no fsync). Run with -benchtime=3s
// or more; the box has 2 shared cores, so compare runs made together.
//
// driver=handle answers from Handle, on a goroutine per call; driver=loop
// answers as a node does, from a loop goroutine the calls are delivered
// to (Deliverer).
func BenchmarkMsgApp(b *testing.B) {
	cases := []struct{ entries, window int }{{1, 1}, {64, 1}, {64, 16}, {64, 64}}
	for _, driver := range []string{"handle", "loop"} {
		for _, c := range cases {
			b.Run(fmt.Sprintf("driver=%s/entries=%d/window=%d", driver, c.entries, c.window), func(b *testing.B) {
				var h Handler = benchHandler{}
				if driver == "loop" {
					lh := newLoopHandler()
					defer lh.stop()
					h = lh
				}
				benchMsgApp(b, h, c.entries, c.window)
			})
		}
	}
}

func benchMsgApp(b *testing.B, h Handler, entries, window int) {
	const size = 256
	ps := startPeer(b, 2, h, "")
	var delivered atomic.Int64
	rec := newRecorder()
	tr := newTestTransport(b, rec, func(c *Config) {
		c.Window = window
		c.Deliver = func(raft.Message) { delivered.Add(1) }
	})
	tr.SetPeer(2, ps.addr)
	m := appMsg(2, 0, entries, size, rand.New(rand.NewPCG(1, 2)))
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = m
	}
	// Warm up: connect.
	tr.Send(batch[:1])
	deadline := time.Now().Add(10 * time.Second)
	for delivered.Load() < 1 {
		if time.Now().After(deadline) {
			b.Fatal("no connection")
		}
		time.Sleep(time.Millisecond)
	}
	delivered.Store(0)
	b.SetBytes(int64(entries * size))
	b.ResetTimer()
	start := time.Now()
	cpu0 := cpuTime()
	sent := 0
	deadline = time.Now().Add(5 * time.Minute)
	for int(delivered.Load()) < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("stalled at %d of %d", delivered.Load(), b.N)
		}
		if sent < b.N && tr.Stats(2).Queued < 4*window+64 {
			n := min(len(batch), b.N-sent)
			tr.Send(batch[:n])
			sent += n
			continue
		}
		time.Sleep(20 * time.Microsecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	if st := tr.Stats(2); st.Dropped != 0 || st.Failures != 0 {
		b.Fatalf("stats %+v", st)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(b.N*entries)/elapsed.Seconds(), "entries/s")
	// Both ends run in this process: CPU per call is the cost of a
	// sender and a receiver together, and does not depend on what
	// else the shared machine runs.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/call")
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchHandler answers every MsgApp at once.
type benchHandler struct{}

func (benchHandler) Handle(_ context.Context, m raft.Message) (raft.Message, bool, error) {
	return raft.Message{Type: raft.MsgAppResp, From: m.To, To: m.From, Term: m.Term, Index: m.Index + uint64(len(m.Entries))}, true, nil
}

// loopHandler answers like a node's driver: Deliver queues the message,
// and one loop goroutine takes everything queued and replies.
type loopHandler struct {
	benchHandler
	mu      sync.Mutex
	queue   []loopCall
	wake    chan struct{}
	stopped chan struct{}
}

type loopCall struct {
	m     raft.Message
	reply func(raft.Message, bool, error)
}

func newLoopHandler() *loopHandler {
	h := &loopHandler{wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go h.run()
	return h
}

func (h *loopHandler) Deliver(m raft.Message, reply func(raft.Message, bool, error)) {
	h.mu.Lock()
	h.queue = append(h.queue, loopCall{m, reply})
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *loopHandler) run() {
	for {
		select {
		case <-h.wake:
		case <-h.stopped:
			return
		}
		h.mu.Lock()
		calls := h.queue
		h.queue = nil
		h.mu.Unlock()
		for _, c := range calls {
			c.reply(h.Handle(context.Background(), c.m))
		}
	}
}

func (h *loopHandler) stop() { close(h.stopped) }
