package nodesim

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/capraft/capraft/raftnode/kv"
)

// Watches, as the client library keeps them: a watch reads a node's
// history of changes (kv.Store.ReadEvents, what the node's watch hub
// delivers from) from the revision after the last one it was given, and
// moves to the next node, from the same revision, when its node is down
// or no longer holds that revision (restarted, or restored a snapshot).
// When no node holds it, the watch is compacted: its user re-lists and
// watches again from a node's current revision, starting a new segment.
//
// At the end, with every replica converged, each segment must equal the
// history of its prefix between its start and end revisions as the
// replicas hold it: no gap, no duplicate, nothing reordered, nothing
// that was not applied. A replica that forgot part of its history must
// say so (compacted), never skip it.
//
// The simulated watches read without drawing on the simulation's
// randomness and change nothing the nodes see, so they leave every
// seed's schedule as it was.

// simWatch is one simulated watch.
type simWatch struct {
	name string
	q    kv.EventQuery // Prefix, Exact
	node int           // index in cluster.nodes of the node read from
	next uint64        // the next revision to read
	segs []watchSegment
}

// watchSegment is what one watch delivered between two re-lists: every
// change of its prefix from start to end.
type watchSegment struct {
	start, end uint64
	events     []watchEvent
}

// watchEvent is a delivered change, copied out of the store.
type watchEvent struct {
	rev        uint64
	del        bool
	key, value string
}

func (e watchEvent) String() string {
	if e.del {
		return fmt.Sprintf("%d del %s", e.rev, e.key)
	}
	return fmt.Sprintf("%d put %s=%s", e.rev, e.key, e.value)
}

// newWatches returns the simulated watches: every key, and one key alone.
func newWatches() []*simWatch {
	return []*simWatch{
		{name: "every key", q: kv.EventQuery{}, next: 1, segs: []watchSegment{{start: 1}}},
		{name: "key k0", q: kv.EventQuery{Prefix: []byte("k0"), Exact: true}, next: 1, segs: []watchSegment{{start: 1}}},
	}
}

// stepWatches lets every watch read what its node's history holds past
// it.
func (c *cluster) stepWatches() {
	for _, w := range c.watches {
		c.stepWatch(w)
	}
}

// stepWatch reads w's node's history from w.next on, moving to the next
// node that is up when that node is down or compacted past w.next, and
// starting a new segment when every node up is.
func (c *cluster) stepWatch(w *simWatch) {
	compacted := 0
	for range len(c.nodes) {
		n := c.nodes[w.node]
		if !n.up || n.kv == nil {
			c.resumeElsewhere(w)
			continue
		}
		err := c.readWatch(w, n.kv)
		var ce *kv.CompactedError
		if errors.As(err, &ce) {
			compacted++
			c.resumeElsewhere(w)
			continue
		}
		if err != nil {
			c.failf("watch %s on node %d: %v", w.name, n.id, err)
		}
		return
	}
	if compacted == 0 {
		return // every node down: wait
	}
	// Compacted wherever it is up: the user re-lists at a node's current
	// revision and watches on from there.
	for range len(c.nodes) {
		n := c.nodes[w.node]
		if n.up && n.kv != nil {
			rev := n.kv.Revision()
			c.stats.WatchRelists++
			c.event("watch %s: compacted at revision %d everywhere up; re-listed at node %d's revision %d", w.name, w.next, n.id, rev)
			w.next = rev + 1
			w.segs = append(w.segs, watchSegment{start: w.next, end: rev})
			return
		}
		w.node = (w.node + 1) % len(c.nodes)
	}
}

// resumeElsewhere moves w to the next node, from the same revision.
func (c *cluster) resumeElsewhere(w *simWatch) {
	w.node = (w.node + 1) % len(c.nodes)
	c.stats.WatchResumes++
	switch {
	case c.opts.bugs.watchResumesLate:
		w.next++
	case c.opts.bugs.watchResumesEarly && w.next > 1:
		w.next--
	}
}

// readWatch reads s's history from w.next on into w's last segment.
func (c *cluster) readWatch(w *simWatch, s *kv.Store) error {
	seg := &w.segs[len(w.segs)-1]
	for range 1000 {
		q := w.q
		q.From = w.next
		page, err := s.ReadEvents(q, nil)
		if err != nil {
			return err
		}
		for _, e := range page.Events {
			seg.events = append(seg.events, copyEvent(e))
		}
		c.stats.WatchEvents += len(page.Events)
		if page.UpTo >= w.next {
			w.next = page.UpTo + 1
			seg.end = page.UpTo
		}
		if page.UpTo >= page.Head {
			return nil
		}
	}
	return nil
}

func copyEvent(e kv.Event) watchEvent {
	return watchEvent{rev: e.Revision(), del: e.Type == kv.EventDelete, key: string(e.KV.Key), value: string(e.KV.Value)}
}

// checkWatches compares every segment of every watch with the history
// the converged replicas hold (see the top of the file).
func (c *cluster) checkWatches() error {
	for _, w := range c.watches {
		c.stepWatch(w) // up to date with the converged replicas
		for i, seg := range w.segs {
			if err := c.checkSegment(w, seg); err != nil {
				return fmt.Errorf("watch %s, segment %d (revisions %d to %d): %w", w.name, i, seg.start, seg.end, err)
			}
		}
	}
	return nil
}

// checkSegment compares seg with the history of the replica that holds
// the most of it (every replica must agree where they overlap: they
// applied the same log).
func (c *cluster) checkSegment(w *simWatch, seg watchSegment) error {
	if seg.end < seg.start {
		if len(seg.events) > 0 {
			return fmt.Errorf("events %v in an empty segment", seg.events)
		}
		return nil
	}
	var ref []watchEvent
	from := uint64(0)
	for _, n := range c.nodes {
		got, first, err := replicaHistory(n.kv, w.q, seg.start, seg.end)
		if err != nil {
			return fmt.Errorf("node %d: %w", n.id, err)
		}
		if from != 0 {
			// Where both hold it, two replicas agree.
			lo := max(from, first)
			if a, b := since(ref, lo), since(got, lo); !slices.Equal(a, b) {
				return fmt.Errorf("replicas disagree from revision %d:\n%v\n%v", lo, a, b)
			}
		}
		if from == 0 || first < from {
			ref, from = got, first
		}
	}
	if got := since(seg.events, from); !slices.Equal(got, ref) {
		return fmt.Errorf("delivered from revision %d on:\n%s\nthe replicas' history:\n%s", from, describeEvents(got), describeEvents(ref))
	}
	for i := 1; i < len(seg.events); i++ {
		if seg.events[i].rev < seg.events[i-1].rev {
			return fmt.Errorf("events out of revision order: %v then %v", seg.events[i-1], seg.events[i])
		}
	}
	c.stats.WatchChecked += len(ref)
	return nil
}

// replicaHistory reads s's history of q from start (or the oldest
// revision it holds, first, if later) to end.
func replicaHistory(s *kv.Store, q kv.EventQuery, start, end uint64) (evs []watchEvent, first uint64, err error) {
	first = start
	q.From = start
	page, err := s.ReadEvents(q, nil)
	var ce *kv.CompactedError
	if errors.As(err, &ce) {
		first = ce.Oldest
		q.From = ce.Oldest
		page, err = s.ReadEvents(q, nil)
	}
	if err != nil {
		return nil, 0, err
	}
	for _, e := range page.Events {
		if e.Revision() <= end {
			evs = append(evs, copyEvent(e))
		}
	}
	if page.UpTo < end {
		return nil, 0, fmt.Errorf("holds revisions up to %d only, not %d", page.UpTo, end)
	}
	return evs, first, nil
}

// since returns the events from revision rev on.
func since(evs []watchEvent, rev uint64) []watchEvent {
	i := slices.IndexFunc(evs, func(e watchEvent) bool { return e.rev >= rev })
	if i < 0 {
		return nil
	}
	return evs[i:]
}

func describeEvents(evs []watchEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %v\n", e)
	}
	return b.String()
}
