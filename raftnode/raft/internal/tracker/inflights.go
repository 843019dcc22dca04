package tracker

// Inflights is the window of AppendEntries messages sent to one follower
// but not yet acknowledged, used in StateReplicate to pipeline without
// unbounded memory or network use.
//
// Contract for callers:
//   - before sending an append, check Full(); if full, do not send.
//   - when sending an append whose last entry is at index i carrying n
//     bytes, call Add(i, n).
//   - when the follower acknowledges index i, call FreeLE(i).
//   - when the follower leaves StateReplicate, call Reset().
type Inflights struct {
	start    int // ring position of the oldest in-flight message
	count    int
	bytes    uint64
	maxCount int
	maxBytes uint64 // 0 = no byte limit
	buf      []inflight
}

type inflight struct {
	index uint64
	bytes uint64
}

// NewInflights returns a window of at most maxCount messages and (if
// maxBytes > 0) at most maxBytes of entry payload.
func NewInflights(maxCount int, maxBytes uint64) *Inflights {
	if maxCount < 1 {
		maxCount = 1
	}
	return &Inflights{maxCount: maxCount, maxBytes: maxBytes}
}

// Add records a message whose last entry is index carrying bytes bytes.
// Indexes must be added in increasing order. Adding to a full window is a
// programmer error.
func (in *Inflights) Add(index, bytes uint64) {
	if in.Full() {
		panic("tracker: Add on a full inflights window")
	}
	if len(in.buf) < in.maxCount {
		// Grow lazily: most followers never fill the window.
		nb := make([]inflight, min(max(2*len(in.buf), 4), in.maxCount))
		for i := 0; i < in.count; i++ {
			nb[i] = in.buf[(in.start+i)%len(in.buf)]
		}
		in.buf, in.start = nb, 0
	}
	pos := (in.start + in.count) % len(in.buf)
	in.buf[pos] = inflight{index: index, bytes: bytes}
	in.count++
	in.bytes += bytes
}

// FreeLE forgets every in-flight message whose last index is <= to.
func (in *Inflights) FreeLE(to uint64) {
	for in.count > 0 {
		f := in.buf[in.start]
		if f.index > to {
			break
		}
		in.bytes -= f.bytes
		in.start = (in.start + 1) % len(in.buf)
		in.count--
	}
	if in.count == 0 {
		in.start = 0
	}
}

// Full reports whether no more messages may be sent.
func (in *Inflights) Full() bool {
	return in.count >= in.maxCount || (in.maxBytes > 0 && in.bytes >= in.maxBytes)
}

// Count is the number of in-flight messages.
func (in *Inflights) Count() int { return in.count }

// Reset empties the window.
func (in *Inflights) Reset() { in.start, in.count, in.bytes = 0, 0, 0 }

// FreeFirstOne forgets the oldest in-flight message. The leader uses it
// when a heartbeat response shows the follower alive while the window is
// full, so a window of lost messages cannot stall replication forever.
func (in *Inflights) FreeFirstOne() {
	if in.count > 0 {
		in.FreeLE(in.buf[in.start].index)
	}
}
