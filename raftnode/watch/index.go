package watch

import (
	"slices"
	"sync/atomic"
)

// The index: which streams an event goes to.
//
// Watches that ask for the same keys the same way (prefix or exact key,
// with or without the previous values) share a stream: the hub encodes
// an event once per stream, not per watcher. The dispatcher finds an
// event's streams by looking its key's prefixes up, one map lookup per
// distinct prefix length in use, plus one for the exact keys: the cost
// per event does not grow with the number of watchers, only with the
// streams it matches and the lengths in use.

// streamKey is what a stream's watchers asked for.
type streamKey struct {
	prefix   string
	exact    bool
	withPrev bool
}

// stream is the frames of one streamKey: a list the dispatcher appends
// to (tail) and each of its watchers reads from its own position.
type stream struct {
	key streamKey
	// tail is the newest frame (the first is an empty one, made with the
	// stream); tailCum its cum, for the watchers' reads.
	tail    *frame
	tailCum atomic.Int64
	// building is the frame being encoded in a dispatch round.
	building *frame
	watchers map[*watcher]struct{}
}

// index maps keys to streams (see above). The hub's mutex guards it.
type index struct {
	streams map[streamKey]*stream
	prefix  map[string][]*stream // prefix watches by prefix
	exact   map[string][]*stream // exact-key watches by key
	lens    []int                // the distinct lengths of prefix's keys, ascending
	touched []*stream            // a dispatch round's scratch
}

func newIndex() index {
	return index{streams: make(map[streamKey]*stream), prefix: make(map[string][]*stream), exact: make(map[string][]*stream)}
}

// join adds w to its stream (made, empty, at the tail's cum 0 and the
// dispatched revision, if new) and returns the stream.
func (x *index) join(w *watcher) *stream {
	k := streamKey{prefix: string(w.req.Prefix), exact: w.req.Exact, withPrev: w.req.WithPrev}
	s := x.streams[k]
	if s == nil {
		s = &stream{key: k, tail: newFrame(w.hub.dispatched.Load(), 0), watchers: make(map[*watcher]struct{})}
		x.streams[k] = s
		if k.exact {
			x.exact[k.prefix] = append(x.exact[k.prefix], s)
		} else {
			x.prefix[k.prefix] = append(x.prefix[k.prefix], s)
			x.lens = lengths(x.prefix)
		}
	}
	s.watchers[w] = struct{}{}
	return s
}

// leave removes w from its stream, and the stream once it has no
// watcher.
func (x *index) leave(w *watcher) {
	s := w.stream
	if s == nil || x.streams[s.key] != s {
		return // the index was reset since
	}
	delete(s.watchers, w)
	if len(s.watchers) > 0 {
		return
	}
	delete(x.streams, s.key)
	m := x.prefix
	if s.key.exact {
		m = x.exact
	}
	if ss := slices.DeleteFunc(m[s.key.prefix], func(o *stream) bool { return o == s }); len(ss) > 0 {
		m[s.key.prefix] = ss
	} else {
		delete(m, s.key.prefix)
		if !s.key.exact {
			x.lens = lengths(x.prefix)
		}
	}
}

func lengths(m map[string][]*stream) []int {
	var out []int
	for p := range m {
		out = append(out, len(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}
