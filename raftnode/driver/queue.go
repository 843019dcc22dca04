package driver

import "sync"

// eventQueue is the driver loop's inbox: any goroutine pushes, the loop
// takes everything pending at once. Taking the whole backlog in one go is
// what turns many concurrent requests into one Ready and one fsync.
type eventQueue struct {
	mu     sync.Mutex
	events []event
	spare  []event
	closed bool          // the loop has stopped: push refuses
	wake   chan struct{} // capacity 1: "something was pushed"
}

func newEventQueue() *eventQueue {
	return &eventQueue{wake: make(chan struct{}, 1)}
}

// push appends e and wakes the loop. It reports false, keeping nothing,
// once the queue is closed: the caller answers e itself.
func (q *eventQueue) push(e event) bool {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return false
	}
	q.events = append(q.events, e)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// take returns everything pushed so far. The returned slice is valid until
// the next take.
func (q *eventQueue) take() []event {
	q.mu.Lock()
	evs := q.events
	q.events = q.spare[:0]
	q.spare = evs
	q.mu.Unlock()
	return evs
}

// pending reports whether events wait to be taken.
func (q *eventQueue) pending() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events) > 0
}

// close refuses further pushes and returns what was pushed and not taken.
func (q *eventQueue) close() []event {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	evs := q.events
	q.events = nil
	return evs
}

// event is one input for the loop; the concrete types are in loop.go.
type event interface{ isEvent() }
