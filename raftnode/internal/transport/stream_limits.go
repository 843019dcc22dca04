package transport

import (
	"fmt"
	"sync"

	"capnproto.org/go/capnp/v3/exc"
)

// Bounds on the streams one connection may hold open at once (see
// StreamLimits). A sender never comes near them: each of its lanes has a
// connection of its own and opens one stream on it, and each snapshot
// transfer has a connection of its own too; a reconnect opens a new
// connection, whose streams are counted afresh, and the old connection's
// are freed when it closes.
const (
	// DefaultMaxStreams bounds the Raft.open streams of one connection:
	// a few per lane.
	DefaultMaxStreams = int(numLanes) * 4
	// DefaultMaxSnapshotStreams bounds the Raft.installSnapshot streams
	// of one connection: one transfer at a time.
	DefaultMaxSnapshotStreams = 1
)

// StreamLimits counts the streams open on one connection, across every
// Raft capability handed out on it (a connection may ask Node.raft more
// than once), and refuses a stream beyond its bounds: without them,
// anyone holding the Raft capability could open streams until the node
// runs out of memory. A stream's slot is freed when the stream is
// released (its sender drops it, or the connection closes). Create one
// per connection and give it to each ServerConfig of that connection; it
// is safe for concurrent use.
type StreamLimits struct {
	// MaxStreams and MaxSnapshotStreams are the bounds (zero: the
	// defaults).
	MaxStreams, MaxSnapshotStreams int

	mu               sync.Mutex
	streams, snapsIn int
}

// errTooManyStreams is the refusal of a stream beyond a bound: overloaded,
// which a caller may retry once it released a stream.
func errTooManyStreams(method string, limit int, what string) error {
	return exc.New(exc.Overloaded, "", fmt.Sprintf(
		"raft %s: refused: this connection holds the most %s one connection may hold open at once (%d); release one first", method, what, limit))
}

// takeStream takes a slot for a Raft.open stream, or says why not.
func (l *StreamLimits) takeStream() error {
	return l.take(&l.streams, l.MaxStreams, DefaultMaxStreams, "open", "streams")
}

// takeSnapshot takes a slot for a Raft.installSnapshot stream, or says
// why not.
func (l *StreamLimits) takeSnapshot() error {
	return l.take(&l.snapsIn, l.MaxSnapshotStreams, DefaultMaxSnapshotStreams, "installSnapshot", "snapshot streams")
}

// take counts one more stream in *open unless it reached limit (zero or
// less: def).
func (l *StreamLimits) take(open *int, limit, def int, method, what string) error {
	if limit <= 0 {
		limit = def
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if *open >= limit {
		return errTooManyStreams(method, limit, what)
	}
	*open++
	return nil
}

// release returns a slot taken by takeStream (snapshot false) or
// takeSnapshot (snapshot true); the returned function may be called more
// than once and frees the slot the first time.
func (l *StreamLimits) release(snapshot bool) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if snapshot {
				l.snapsIn--
			} else {
				l.streams--
			}
		})
	}
}

// open reports the streams and snapshot streams open, for tests.
func (l *StreamLimits) open() (streams, snapshots int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.streams, l.snapsIn
}
