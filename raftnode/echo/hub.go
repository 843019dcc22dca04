// Package echo implements the Echo service: ping, and the multi-echo that
// delivers every pinged message to every listener subscribed on the node.
//
// Delivery design: Publish assigns the next sequence number and appends the
// message to each listener's bounded queue under one lock, so every listener
// sees the same order, and never blocks on a listener. Each listener has its
// own sender goroutine that drains its queue into batched calls, one call in
// flight at a time, so a slow listener only falls behind itself. A listener
// whose queue overflows is dropped and told why.
package echo

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/schema"
)

// Defaults for HubConfig.
const (
	DefaultQueueLen     = 1024
	DefaultMaxBatch     = 256
	DefaultCloseTimeout = 5 * time.Second
)

// Message is one pinged message with its position in the node's order.
type Message struct {
	Seq uint64
	Msg string
}

// HubConfig configures a Hub. Zero fields take their defaults.
type HubConfig struct {
	// QueueLen is how many undelivered messages a listener may have before
	// it is dropped.
	QueueLen int
	// MaxBatch caps the messages delivered in one call to a listener.
	MaxBatch int
	// CloseTimeout bounds the final closed() call to a dropped listener.
	CloseTimeout time.Duration
	// Logger receives the hub's logs.
	Logger hclog.Logger
}

// Hub fans messages out to subscribed listeners. It is safe for concurrent
// use.
type Hub struct {
	cfg HubConfig
	log hclog.Logger

	mu     sync.Mutex
	seq    uint64
	subs   map[*subscriber]struct{}
	closed bool
	wg     sync.WaitGroup // sender goroutines
}

// NewHub returns an empty hub.
func NewHub(cfg HubConfig) *Hub {
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = DefaultQueueLen
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Hub{cfg: cfg, log: cfg.Logger, subs: make(map[*subscriber]struct{})}
}

// Publish appends msg to the node's order and queues it for every listener.
// It never blocks on a listener. It returns the message's sequence number.
func (h *Hub) Publish(msg string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	m := Message{Seq: h.seq, Msg: msg}
	for s := range h.subs {
		if !s.enqueue(m, h.cfg.QueueLen) {
			delete(h.subs, s)
			s.drop(fmt.Sprintf("listener dropped: it fell %d messages behind (queue limit); resubscribe to continue", h.cfg.QueueLen))
		}
	}
	return h.seq
}

// Subscribe starts delivering messages published from now on to listener.
// The hub takes ownership of listener. The returned cancel function ends the
// subscription without calling listener.closed; it is idempotent.
func (h *Hub) Subscribe(listener schema.EchoListener) (cancel func(), err error) {
	s := &subscriber{
		listener: listener,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	s.ctx, s.cancelCalls = context.WithCancel(context.Background())
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		listener.Release()
		return nil, fmt.Errorf("echo hub is shut down")
	}
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	h.mu.Unlock()
	go h.run(s)
	return func() { h.unsubscribe(s) }, nil
}

// NumListeners reports how many listeners are subscribed.
func (h *Hub) NumListeners() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
	s.drop("")
}

// Close ends every subscription, telling each listener the node is shutting
// down, and waits for the sender goroutines.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	subs := h.subs
	h.subs = make(map[*subscriber]struct{})
	h.mu.Unlock()
	for s := range subs {
		s.drop("node is shutting down")
	}
	h.wg.Wait()
}

// run is a listener's sender: it owns the listener capability and delivers
// its queue in batches, one call at a time, until the subscriber is dropped.
func (h *Hub) run(s *subscriber) {
	defer h.wg.Done()
	defer s.listener.Release()
	for {
		batch, ok := s.next(h.cfg.MaxBatch)
		if !ok {
			break
		}
		if err := deliver(s.ctx, s.listener, batch); err != nil {
			if s.ctx.Err() == nil {
				// Not dropped by us: the listener failed or went away.
				h.log.Debug("echo listener call failed; ending its subscription", "error", err)
				h.unsubscribe(s)
			}
			break
		}
	}
	if reason := s.dropReason(); reason != "" {
		h.log.Info("dropping echo listener", "reason", reason)
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.CloseTimeout)
		f, release := s.listener.Closed(ctx, func(p schema.EchoListener_closed_Params) error {
			return p.SetReason(reason)
		})
		_, _ = f.Struct()
		release()
		cancel()
	}
}

// deliver makes one messages() call and waits for it to return.
func deliver(ctx context.Context, l schema.EchoListener, batch []Message) error {
	f, release := l.Messages(ctx, func(p schema.EchoListener_messages_Params) error {
		list, err := p.NewMessages(int32(len(batch)))
		if err != nil {
			return err
		}
		for i, m := range batch {
			e := list.At(i)
			e.SetSeq(m.Seq)
			if err := e.SetMsg(m.Msg); err != nil {
				return err
			}
		}
		return nil
	})
	defer release()
	_, err := f.Struct()
	return err
}

// subscriber is one listener's queue and state.
type subscriber struct {
	listener    schema.EchoListener
	ctx         context.Context // cancelled when dropped: aborts a call in flight
	cancelCalls context.CancelFunc
	wake        chan struct{} // capacity 1: "the queue is not empty or we are done"
	done        chan struct{}

	mu      sync.Mutex
	queue   []Message
	dropped bool
	reason  string // why the hub dropped it ("" if the subscriber left)
}

// enqueue adds m unless the queue is full; it reports false on overflow.
func (s *subscriber) enqueue(m Message, limit int) bool {
	s.mu.Lock()
	if s.dropped {
		s.mu.Unlock()
		return true
	}
	if len(s.queue) >= limit {
		s.mu.Unlock()
		return false
	}
	s.queue = append(s.queue, m)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// next waits for queued messages and takes up to max of them; ok is false
// once the subscriber is dropped.
func (s *subscriber) next(max int) (batch []Message, ok bool) {
	for {
		s.mu.Lock()
		if s.dropped {
			s.mu.Unlock()
			return nil, false
		}
		if n := len(s.queue); n > 0 {
			if n > max {
				n = max
			}
			batch = make([]Message, n)
			copy(batch, s.queue)
			s.queue = s.queue[:copy(s.queue, s.queue[n:])]
			s.mu.Unlock()
			return batch, true
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.done:
		}
	}
}

// drop ends delivery. The first call wins; reason "" means the subscriber
// left (cancelled, released or disconnected) and is not told anything.
// It returns the reason that took effect.
func (s *subscriber) drop(reason string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dropped {
		s.dropped = true
		s.reason = reason
		s.queue = nil
		close(s.done)
		s.cancelCalls()
	}
	return s.reason
}

func (s *subscriber) dropReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}
