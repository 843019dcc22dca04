package transport

import "time"

// Observer sees what the transport's counters cannot tell, for metrics:
// how long things took. Its methods run on the transport's goroutines
// and must not block.
type Observer interface {
	// RoundTrip reports a send call to peer on lane that returned took
	// after it was made (the peer's core took its messages).
	RoundTrip(peer uint64, lane Lane, took time.Duration)
	// SnapshotSent reports a snapshot transfer to peer that ended after
	// took: taken by the peer (err nil) or failed.
	SnapshotSent(peer uint64, took time.Duration, err error)
}

// nopObserver is the Observer of a transport configured without one.
type nopObserver struct{}

func (nopObserver) RoundTrip(uint64, Lane, time.Duration)     {}
func (nopObserver) SnapshotSent(uint64, time.Duration, error) {}
