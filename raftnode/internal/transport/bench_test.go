package transport

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc/rpctest"
)

// BenchmarkMsgApp measures MsgApp round trips per second over loopback:
// node 1 sends MsgApps carrying 1 or 64 entries of 256 B on its data
// lane to node 2, whose driver (a loop goroutine, as a node's) takes them
// and answers each with a MsgAppResp on its own control lane back to node
// 1; an op is one MsgApp whose response node 1 took. Window is the send
// calls in flight per lane. Run with -benchtime=3s or more; the box has 2
// shared cores, so compare runs made together.
//
// (Before one-way streams, an op was one AppendEntries call and its
// return, and the sub-benchmarks had the same names; driver=handle, a
// goroutine per call, is gone with the calls.)
func BenchmarkMsgApp(b *testing.B) {
	cases := []struct{ entries, window int }{{1, 1}, {64, 1}, {64, 16}, {64, 64}}
	for _, c := range cases {
		b.Run(fmt.Sprintf("driver=loop/entries=%d/window=%d", c.entries, c.window), func(b *testing.B) {
			benchMsgApp(b, c.entries, c.window)
		})
	}
}

func benchMsgApp(b *testing.B, entries, window int) {
	const size = 256
	b.ReportAllocs()
	// Node 1 takes the responses; node 2 answers the appends from its
	// loop with its own transport.
	var delivered atomic.Int64
	resps := &countHandler{n: &delivered}
	node1 := startPeer(b, 1, resps, "")
	tr2 := New(Config{ClusterID: testCluster, LocalID: 2, Incarnation: 2, Window: window, Logger: rpctest.Logger(b)})
	b.Cleanup(tr2.Close)
	tr2.SetPeer(1, node1.addr)
	loop := newLoopHandler(tr2)
	defer loop.stop()
	node2 := startPeer(b, 2, loop, "")

	rec := newRecorder()
	tr := newTestTransport(b, rec, func(c *Config) { c.Window = window })
	tr.SetPeer(2, node2.addr)
	m := appMsg(2, 0, entries, size, rand.New(rand.NewPCG(1, 2)))
	batch := make([]raft.Message, 64)
	for i := range batch {
		batch[i] = m
	}
	// Warm up: connect both ways.
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
	deadline = time.Now().Add(time.Minute)
	for int(delivered.Load()) < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("stalled at %d of %d (sent %d): node 1 to 2 %+v; node 2 to 1 %+v", delivered.Load(), b.N, sent, tr.Stats(2), tr2.Stats(1))
		}
		// Paced by the responses too: node 2's responses queue on its
		// control lane, whose queue overflows (drops) past MaxQueue.
		if sent < b.N && tr.Stats(2).Queued < 4*window+64 && sent-int(delivered.Load()) < 1024 {
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
	for _, st := range []PeerStats{tr.Stats(2), tr2.Stats(1)} {
		if st.Dropped != 0 || st.Failures != 0 {
			b.Fatalf("stats %+v", st)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(b.N*entries)/elapsed.Seconds(), "entries/s")
	// Both ends run in this process: CPU per op is the cost of a sender
	// and a receiver together, both ways, and does not depend on what
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

// countHandler counts the messages it takes.
type countHandler struct{ n *atomic.Int64 }

func (h *countHandler) Deliver(msgs []raft.Message, done func(*raft.NotMember, error)) {
	h.n.Add(int64(len(msgs)))
	done(nil, nil)
}

// loopHandler answers like a node's driver: Deliver queues the messages,
// and one loop goroutine takes everything queued, says it was taken and
// sends a MsgAppResp for each MsgApp through its transport.
type loopHandler struct {
	tr      *Transport
	mu      sync.Mutex
	queue   []loopCall
	wake    chan struct{}
	stopped chan struct{}
}

type loopCall struct {
	msgs []raft.Message
	done func(*raft.NotMember, error)
}

func newLoopHandler(tr *Transport) *loopHandler {
	h := &loopHandler{tr: tr, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go h.run()
	return h
}

func (h *loopHandler) Deliver(msgs []raft.Message, done func(*raft.NotMember, error)) {
	h.mu.Lock()
	h.queue = append(h.queue, loopCall{msgs, done})
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

func (h *loopHandler) run() {
	var out []raft.Message
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
		out = out[:0]
		for _, c := range calls {
			for _, m := range c.msgs {
				out = append(out, raft.Message{Type: raft.MsgAppResp, From: m.To, To: m.From, Term: m.Term,
					Index: m.Index + uint64(len(m.Entries)), Incarnation: 2})
			}
			c.done(nil, nil)
		}
		h.tr.Send(out)
	}
}

func (h *loopHandler) stop() { close(h.stopped) }
