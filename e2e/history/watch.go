package history

import (
	"fmt"
	"strings"
)

// The watch checker. A watcher's events must be exactly the committed
// history of its prefix between the revision it started at and the
// revision it ended up to date with: no gap, no duplicate, no reordering,
// nothing that was not committed. The committed history is the caller's
// oracle (in the e2e tests: a fresh watch from the first revision of the
// test on every node once the cluster is healthy, cross-checked between
// nodes, against the final store and against the acknowledged writes).

// WatchEvent is one change as a watch delivered it.
type WatchEvent struct {
	Rev    uint64
	Key    string
	Delete bool
	Value  string // a put's value
}

func (e WatchEvent) String() string {
	if e.Delete {
		return fmt.Sprintf("@%d delete %s", e.Rev, e.Key)
	}
	return fmt.Sprintf("@%d put %s=%q", e.Rev, e.Key, e.Value)
}

// WatchSpec is what a watcher asked for and how far it got.
type WatchSpec struct {
	Prefix string
	// From is the first revision the watch had to deliver, when the
	// watcher asked for one (a watch from a past revision).
	From uint64
	// StartLo and StartHi bound the first revision of a watch without
	// From (from "now", linearizable or not): the watch started at some
	// revision in [StartLo, StartHi], so it may leave out changes before
	// StartHi, none from StartHi on. StartLo is a revision no earlier than
	// the watch could have started (a linearizable start: after every
	// write acknowledged before the call); StartHi one no later (the first
	// write called after the watch delivered its first response).
	StartLo, StartHi uint64
	// UpTo is the revision the watcher was up to date with at the end:
	// every change at or below it must have been delivered.
	UpTo uint64
}

type eventID struct {
	rev uint64
	key string
}

// CheckWatch checks a watcher's events against the committed history
// (every change of the test's keys, in revision order, a revision's
// changes in the order its transaction made them). The error names the
// first problem: a duplicate, an event out of order, a gap (a committed
// change the watcher should have had), an event never committed, or one
// that differs from the committed change.
func CheckWatch(got, committed []WatchEvent, w WatchSpec) error {
	seen := map[eventID]int{}
	for i, e := range got {
		if !strings.HasPrefix(e.Key, w.Prefix) {
			return fmt.Errorf("event %d (%v) is outside the watched prefix %q", i, e, w.Prefix)
		}
		if j, dup := seen[eventID{e.Rev, e.Key}]; dup {
			return fmt.Errorf("duplicate: event %d (%v) repeats event %d", i, e, j)
		}
		seen[eventID{e.Rev, e.Key}] = i
		if i > 0 && e.Rev < got[i-1].Rev {
			return fmt.Errorf("out of order: event %d (%v) comes after event %d (%v)", i, e, i-1, got[i-1])
		}
		if e.Rev > w.UpTo {
			return fmt.Errorf("event %d (%v) is past the revision the watcher was up to date with (%d)", i, e, w.UpTo)
		}
	}
	committedAt := map[eventID]WatchEvent{}
	lo := w.From
	if lo == 0 {
		lo = w.StartLo
	}
	var want []WatchEvent
	for _, e := range committed {
		committedAt[eventID{e.Rev, e.Key}] = e
		if strings.HasPrefix(e.Key, w.Prefix) && e.Rev >= lo && e.Rev <= w.UpTo {
			want = append(want, e)
		}
	}
	if w.From == 0 {
		// The start is known within a window: the committed changes
		// before the first one delivered are the watch's past, if they
		// come before StartHi.
		first := w.UpTo + 1
		if len(got) > 0 {
			first = got[0].Rev
		}
		n := 0
		for n < len(want) && want[n].Rev < first {
			if want[n].Rev >= w.StartHi {
				return fmt.Errorf("gap: %v was never delivered, and the watch started by revision %d", want[n], w.StartHi)
			}
			n++
		}
		want = want[n:]
	}
	for i, e := range got {
		if i >= len(want) {
			if _, ok := committedAt[eventID{e.Rev, e.Key}]; !ok {
				return fmt.Errorf("event %d (%v) was never committed", i, e)
			}
			return fmt.Errorf("event %d (%v) is beyond the committed history of %q from %d to %d", i, e, w.Prefix, lo, w.UpTo)
		}
		if e == want[i] {
			continue
		}
		if want[i].Rev < e.Rev {
			return fmt.Errorf("gap: %v was never delivered (event %d is %v)", want[i], i, e)
		}
		c, ok := committedAt[eventID{e.Rev, e.Key}]
		switch {
		case !ok:
			return fmt.Errorf("event %d (%v) was never committed", i, e)
		case c != e:
			return fmt.Errorf("event %d (%v) differs from the committed change %v", i, e, c)
		default:
			return fmt.Errorf("event %d (%v) is not the next committed change, %v", i, e, want[i])
		}
	}
	if len(got) < len(want) {
		return fmt.Errorf("gap: %v was never delivered (%d of %d changes up to %d delivered)", want[len(got)], len(got), len(want), w.UpTo)
	}
	return nil
}

// CheckCommitted checks that a committed history is itself well formed:
// revisions never go back and no key changes twice at one revision.
func CheckCommitted(evs []WatchEvent) error {
	seen := map[eventID]bool{}
	for i, e := range evs {
		if seen[eventID{e.Rev, e.Key}] {
			return fmt.Errorf("change %d (%v) repeats a key at its revision", i, e)
		}
		seen[eventID{e.Rev, e.Key}] = true
		if i > 0 && e.Rev < evs[i-1].Rev {
			return fmt.Errorf("change %d (%v) comes after %v", i, e, evs[i-1])
		}
	}
	return nil
}

// StoreKV is a key's state as replaying a committed history makes it.
type StoreKV struct {
	Value                                string
	Version, CreateRevision, ModRevision uint64
}

// ReplayWatchEvents applies a committed history to an empty store and
// returns the keys it leaves, with the versions and revisions the store
// must report for them.
func ReplayWatchEvents(evs []WatchEvent) map[string]StoreKV {
	state := map[string]StoreKV{}
	for _, e := range evs {
		if e.Delete {
			delete(state, e.Key)
			continue
		}
		kv, ok := state[e.Key]
		if !ok {
			kv.CreateRevision = e.Rev
		}
		kv.Value, kv.ModRevision = e.Value, e.Rev
		kv.Version++
		state[e.Key] = kv
	}
	return state
}
