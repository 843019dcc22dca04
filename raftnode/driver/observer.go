package driver

import (
	"context"
	"sync/atomic"
	"time"
)

// Observer sees how long the driver's stages take, for metrics. Its
// methods run on the loop goroutine (Applied) or the snapshot writer's
// (SnapshotSaved) and must not block. The driver knows nothing of how
// they are recorded.
type Observer interface {
	// Applied reports a batch of n committed entries the state machine
	// applied in took.
	Applied(n int, took time.Duration)
	// SnapshotSaved reports a snapshot of the state machine written to
	// disk (and the log compacted) in took, or failed with err.
	SnapshotSaved(took time.Duration, err error)
	// SnapshotReceived reports a snapshot received from a leader, from
	// its offer until the core took it (err nil) or it was refused.
	SnapshotReceived(took time.Duration, err error)
	// LeaderChanged reports that this node learned of a new leader in
	// term, or (lead 0) lost the one it knew.
	LeaderChanged(lead, term uint64)
}

// nopObserver is the Observer of a driver configured without one.
type nopObserver struct{}

func (nopObserver) Applied(int, time.Duration)            {}
func (nopObserver) SnapshotSaved(time.Duration, error)    {}
func (nopObserver) SnapshotReceived(time.Duration, error) {}
func (nopObserver) LeaderChanged(uint64, uint64)          {}

// Counters are the driver's cumulative counters since it started, read
// at any time without asking the loop.
type Counters struct {
	// LeaderChanges counts the times this node learned of a new leader
	// (not counting losing one).
	LeaderChanges uint64
	// Proposed counts proposals handed to the driver; Committed those
	// answered with their entry applied, Failed those answered with an
	// error (not leader, dropped, outcome unknown, stopped). The rest are
	// pending.
	Proposed, Committed, Failed uint64
}

// Pending is the number of proposals not yet answered.
func (c Counters) Pending() uint64 { return c.Proposed - min(c.Proposed, c.Committed+c.Failed) }

// counters are the atomics behind Counters.
type counters struct {
	leaderChanges, proposed, committed, failed atomic.Uint64
}

// Counters returns the driver's counters.
func (d *Driver) Counters() Counters {
	// Answers are read before proposals, so a scrape never sees more
	// answered than proposed.
	c := Counters{Committed: d.stats.committed.Load(), Failed: d.stats.failed.Load(), LeaderChanges: d.stats.leaderChanges.Load()}
	c.Proposed = d.stats.proposed.Load()
	return c
}

// countProposal counts a proposal and returns its reply, counting the
// answer.
func (c *counters) countProposal(reply func(Result)) func(Result) {
	c.proposed.Add(1)
	return func(r Result) {
		if r.Err != nil {
			c.failed.Add(1)
		} else {
			c.committed.Add(1)
		}
		reply(r)
	}
}

// leaderSeen counts a change to a new, known leader and reports any
// change of leader to the observer. Run on the loop.
func (d *Driver) leaderSeen(changed bool, lead uint64) {
	if !changed {
		return
	}
	if lead != 0 {
		d.stats.leaderChanges.Add(1)
	}
	d.obs.LeaderChanged(lead, d.core.Term())
}

// since is the time elapsed since start on the driver's clock.
func (d *Driver) since(start time.Time) time.Duration { return d.clock.Now().Sub(start) }

// Finish is finish, observed (SnapshotSink).
func (s *snapSink) Finish(ctx context.Context) error {
	err := s.finish(ctx)
	s.d.obs.SnapshotReceived(s.d.since(s.start), err)
	return err
}
