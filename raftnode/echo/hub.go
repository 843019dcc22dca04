// Package echo implements the Echo service: ping, and the multi-echo that
// delivers every pinged message to every listener subscribed on the node.
//
// Delivery design: Publish assigns the next sequence number and appends the
// message to each listener's bounded queue under one lock, so every listener
// sees the same order, and never blocks on a listener. Each listener has its
// own sender goroutine that drains its queue into batched calls, one call in
// flight at a time, so a slow listener only falls behind itself.
//
// Memory is bounded in bytes, not only in messages: a listener whose
// undelivered messages (queued or in the call in flight) pass QueueBytes or
// QueueLen is dropped and told why, and when those of all listeners
// together pass MaxBytes, the listener furthest behind is dropped. A
// delivery call carries at most maxBatchBytes (one message always fits:
// messages over MaxMessage are refused). Queued messages are shared
// between listeners, not copied (together, they are a suffix of the node's
// order no longer than QueueBytes); the call in flight is each listener's
// own copy, counted in MaxBytes. So the hub holds at most about QueueBytes
// plus MaxBytes of messages. Dropping a listener
// cancels its call in flight, but a copy already handed to a connection
// that stopped reading stays until the connection's write timeout ends
// it.
package echo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Defaults for HubConfig.
const (
	DefaultQueueLen     = 1024
	DefaultQueueBytes   = 8 << 20
	DefaultMaxBytes     = 64 << 20
	DefaultMaxMessage   = 1 << 20
	DefaultMaxBatch     = 256
	DefaultCloseTimeout = 5 * time.Second
)

// maxBatchBytes caps the messages' bytes in one delivery call (a single
// message is sent alone whatever its size): far below any sensible
// transport limit, and small enough that a listener's call in flight
// costs little.
const maxBatchBytes = 1 << 20

// messageOverhead is what a message costs beyond its text, in a queue and
// in a delivery call, for the byte limits: empty messages are not free.
const messageOverhead = 32

// cost is what m counts for towards the byte limits.
func cost(m Message) int64 { return int64(len(m.Msg)) + messageOverhead }

// Message is one pinged message with its position in the node's order.
type Message struct {
	Seq uint64
	Msg string
}

// HubConfig configures a Hub. Zero fields take their defaults.
type HubConfig struct {
	// QueueLen is how many queued messages a listener may have before it
	// is dropped.
	QueueLen int
	// QueueBytes is how many bytes of undelivered messages (queued, or in
	// the delivery call in flight) a listener may have before it is
	// dropped. It is raised to fit at least one message of MaxMessage.
	QueueBytes int64
	// MaxBytes bounds the bytes of undelivered messages of all listeners
	// together (each listener's counted in full): past it, the listener
	// furthest behind is dropped. It is raised to QueueBytes if lower.
	MaxBytes int64
	// MaxMessage is the longest message, in bytes, that Publish (and so
	// ping) accepts.
	MaxMessage int
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

	// undelivered is the bytes of undelivered messages summed over
	// listeners. It grows under mu (Publish) and shrinks under the
	// subscribers' locks (deliveries, drops).
	undelivered atomic.Int64

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
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	cfg.QueueBytes = max(cfg.QueueBytes, int64(cfg.MaxMessage)+messageOverhead)
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	cfg.MaxBytes = max(cfg.MaxBytes, cfg.QueueBytes)
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

// Publish appends msg to the node's order and queues it for every listener,
// dropping those it puts over their limits (see HubConfig). It never
// blocks on a listener. It returns the message's sequence number, or an
// error, and publishes nothing, if msg is longer than MaxMessage.
func (h *Hub) Publish(msg string) (uint64, error) {
	if err := h.checkLength(len(msg)); err != nil {
		return 0, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	m := Message{Seq: h.seq, Msg: msg}
	for s := range h.subs {
		if reason := s.enqueue(m, &h.cfg); reason != "" {
			h.dropLocked(s, reason)
		}
	}
	for h.undelivered.Load() > h.cfg.MaxBytes {
		s := h.furthestBehind()
		if s == nil {
			break
		}
		h.dropLocked(s, fmt.Sprintf("listener dropped: it was the furthest behind when the node's echo buffers were full (%d bytes for all listeners); resubscribe to continue",
			h.cfg.MaxBytes))
	}
	return h.seq, nil
}

// checkLength refuses a message of n bytes if it is over MaxMessage.
func (h *Hub) checkLength(n int) error {
	if n > h.cfg.MaxMessage {
		return fmt.Errorf("echo: message of %d bytes is over this node's limit of %d bytes for echo messages", n, h.cfg.MaxMessage)
	}
	return nil
}

// furthestBehind returns the listener with the most undelivered bytes.
// Called with h.mu held.
func (h *Hub) furthestBehind() *subscriber {
	var worst *subscriber
	var most int64
	for s := range h.subs {
		if b := s.backlog(); worst == nil || b > most {
			worst, most = s, b
		}
	}
	return worst
}

// dropLocked ends s's subscription, telling its listener reason. Called
// with h.mu held.
func (h *Hub) dropLocked(s *subscriber, reason string) {
	delete(h.subs, s)
	s.drop(reason)
}

// UndeliveredBytes reports the bytes of messages published but not yet
// delivered, summed over listeners (see HubConfig.MaxBytes).
func (h *Hub) UndeliveredBytes() int64 { return h.undelivered.Load() }

// Subscribe starts delivering messages published from now on to listener.
// The hub takes ownership of listener. check, if not nil, runs before each
// delivery: once it fails (the subscriber's credential was revoked or
// expired), the listener is dropped with its error as the reason. The
// returned cancel function ends the subscription without calling
// listener.closed; it is idempotent.
func (h *Hub) Subscribe(listener schema.EchoListener, check func() error) (cancel func(), err error) {
	s := &subscriber{
		hub:      h,
		listener: listener,
		check:    check,
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

func (h *Hub) unsubscribe(s *subscriber) { h.drop(s, "") }

// drop ends s's subscription, telling its listener reason unless it is "".
func (h *Hub) drop(s *subscriber, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(s, reason)
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
		if s.check != nil {
			if err := s.check(); err != nil {
				s.delivered()
				h.drop(s, "listener dropped: "+err.Error())
				break
			}
		}
		err := deliver(s.ctx, s.listener, batch)
		s.delivered()
		if err != nil {
			var tooLarge *rpc.MessageTooLargeError
			switch {
			case s.ctx.Err() != nil:
				// Dropped by us, which cancelled the call.
			case errors.As(err, &tooLarge):
				// Never sent, so the listener can still be told.
				h.log.Warn("echo delivery over the listener connection's message size limit; dropping the listener", "error", err)
				h.drop(s, "listener dropped: "+tooLarge.Error())
			default:
				// The listener failed or went away.
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
	hub         *Hub
	listener    schema.EchoListener
	check       func() error    // the credential behind the subscription; nil: none
	ctx         context.Context // cancelled when dropped: aborts a call in flight
	cancelCalls context.CancelFunc
	wake        chan struct{} // capacity 1: "the queue is not empty or we are done"
	done        chan struct{}

	mu       sync.Mutex
	queue    []Message
	queued   int64 // bytes of queue (see cost)
	inFlight int64 // bytes of the batch being delivered
	dropped  bool
	reason   string // why the hub dropped it ("" if the subscriber left)
}

// backlog is the bytes of s's undelivered messages.
func (s *subscriber) backlog() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued + s.inFlight
}

// enqueue adds m unless that would put s over a limit of cfg; it returns
// why s must be dropped then, else "".
func (s *subscriber) enqueue(m Message, cfg *HubConfig) (dropReason string) {
	c := cost(m)
	s.mu.Lock()
	switch {
	case s.dropped:
	case len(s.queue) >= cfg.QueueLen:
		dropReason = fmt.Sprintf("listener dropped: it fell %d messages behind (queue limit); resubscribe to continue", cfg.QueueLen)
	case s.queued+s.inFlight+c > cfg.QueueBytes:
		dropReason = fmt.Sprintf("listener dropped: it fell %d bytes behind (limit %d bytes); resubscribe to continue",
			s.queued+s.inFlight+c, cfg.QueueBytes)
	default:
		s.queue = append(s.queue, m)
		s.queued += c
		s.hub.undelivered.Add(c)
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
		return ""
	}
	s.mu.Unlock()
	return dropReason
}

// next waits for queued messages and takes up to max of them, and at most
// maxBatchBytes of them unless the first alone is more; ok is false once
// the subscriber is dropped. Call delivered once the batch is.
func (s *subscriber) next(max int) (batch []Message, ok bool) {
	for {
		s.mu.Lock()
		if s.dropped {
			s.mu.Unlock()
			return nil, false
		}
		if len(s.queue) > 0 {
			n, bytes := 1, cost(s.queue[0])
			for n < len(s.queue) && n < max && bytes+cost(s.queue[n]) <= maxBatchBytes {
				bytes += cost(s.queue[n])
				n++
			}
			batch = make([]Message, n)
			copy(batch, s.queue)
			clear(s.queue[copy(s.queue, s.queue[n:]):]) // let delivered texts go
			s.queue = s.queue[:len(s.queue)-n]
			s.queued -= bytes
			s.inFlight = bytes
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

// delivered ends the accounting of the batch in flight.
func (s *subscriber) delivered() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hub.undelivered.Add(-s.inFlight)
	s.inFlight = 0
}

// drop ends delivery and frees the queue. The first call wins; reason ""
// means the subscriber left (cancelled, released or disconnected) and is
// not told anything. It returns the reason that took effect.
func (s *subscriber) drop(reason string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dropped {
		s.dropped = true
		s.reason = reason
		s.queue = nil
		s.hub.undelivered.Add(-(s.queued + s.inFlight))
		s.queued, s.inFlight = 0, 0
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
