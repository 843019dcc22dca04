package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/capraft/capraft/raftnode/raft"
)

// Member is one cluster member as a node sees it.
type Member struct {
	ID      uint64
	Address string
	Learner bool
	// Promoting: a learner the leader makes a voter once it has caught up.
	Promoting bool
	Match     uint64
}

// Members returns the leader and the configuration as of a linearizable
// read.
func (d *Driver) Members(ctx context.Context) (uint64, []Member, error) {
	if err := d.ReadIndex(ctx); err != nil {
		return 0, nil, err
	}
	type view struct {
		lead    uint64
		members []Member
	}
	v, err := onLoop(ctx, d, func() view {
		st := d.core.Status()
		v := view{lead: st.Lead}
		add := func(ids []uint64, learner bool) {
			for _, id := range ids {
				m := Member{ID: id, Address: d.loop.addrs[id], Learner: learner, Promoting: slices.Contains(st.Config.AutoPromote, id)}
				if pr, ok := st.Progress[id]; ok {
					m.Match = pr.Match
				}
				v.members = append(v.members, m)
			}
		}
		add(st.Config.Voters, false)
		add(st.Config.Learners, true)
		return v
	})
	if err != nil {
		return 0, nil, err
	}
	slices.SortFunc(v.members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return v.lead, v.members, nil
}

// ChangeMembership proposes cc on the leader (this node) and waits until
// it is applied. A refused change (*InvalidError, ErrNotLeader,
// ErrChangeInProgress) and one overwritten by a new leader
// (ErrConfNotApplied) have a known outcome; a proposed change whose end
// this node does not see may still be applied: ErrChangeOutcomeUnknown.
func (d *Driver) ChangeMembership(ctx context.Context, cc raft.ConfChange) error {
	ch := make(chan error, 1)
	refused, err := onLoop(ctx, d, func() error {
		if err := checkChanges(d.core.Status(), cc); err != nil {
			return err
		}
		if err := d.core.ProposeConfChange(cc); err != nil {
			return membershipError(err)
		}
		d.loop.confWaiters[d.core.LastIndex()] = ch
		d.loop.confTerm[d.core.LastIndex()] = d.core.Term()
		return nil
	})
	if err != nil {
		return err // not proposed
	}
	if refused != nil {
		return refused
	}
	timer := d.clock.NewTimer(d.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C():
		return ErrChangeOutcomeUnknown
	case <-ctx.Done():
		return ErrChangeOutcomeUnknown
	case <-d.done:
		// A leader that removed itself stops right after applying the
		// change; the answer may already be there (failEverything
		// answers the others ErrChangeOutcomeUnknown).
		select {
		case err := <-ch:
			return err
		default:
			return ErrChangeOutcomeUnknown
		}
	}
}

// checkChanges refuses membership changes that name a node in the wrong
// state, which the core would otherwise log: removing a node that is not
// a member (a no-op); adding (with an address) a node that is already a
// member (which would demote a voter); promoting (adding as a voter
// without an address) a node that is already a voter (a no-op), that is
// not a learner (a voter nobody can reach, which raises the quorum), or
// that never answered the leader (nothing shows it has the log, and no
// incarnation of its storage is known to record).
func checkChanges(st raft.Status, cc raft.ConfChange) error {
	cs := st.Config
	for _, c := range cc.Changes {
		voter := slices.Contains(cs.Voters, c.NodeID) || slices.Contains(cs.VotersOutgoing, c.NodeID)
		learner := slices.Contains(cs.Learners, c.NodeID) || slices.Contains(cs.LearnersNext, c.NodeID)
		promotion := c.Type == raft.ConfChangeAddVoter && len(cc.Context) == 0
		add := c.Type != raft.ConfChangeRemoveNode && len(cc.Context) > 0
		switch {
		case c.Type == raft.ConfChangeRemoveNode && !voter && !learner:
			return invalid("node %d is not a member of the cluster (raftctl members lists them)", c.NodeID)
		case add && (voter || learner):
			return invalid("node %d is already a member (raftctl members lists them); to replace a node, remove it first", c.NodeID)
		case promotion && voter:
			return invalid("node %d is already a voter", c.NodeID)
		case promotion && !learner:
			return invalid("node %d is not a member; add it as a learner first (raftctl member add --learner)", c.NodeID)
		case promotion && st.Role == raft.StateLeader && st.Progress[c.NodeID].Incarnation == 0:
			return invalid("node %d has not answered the leader yet: start it (raftnode --join) and promote it once "+
				"it has caught up (raftctl status), or add it without --learner to have it promoted by itself", c.NodeID)
		}
	}
	return nil
}

func membershipError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrProposalDropped):
		return ErrChangeInProgress
	}
	return invalid("%v", err)
}

// TransferLeadership hands leadership to another voter (to 0: the most
// caught-up one) and waits until this node no longer leads. A transfer
// the core refused has a known outcome (*InvalidError, ErrNotLeader,
// ErrChangeInProgress), and so has one another node won
// (*LeaderMovedError); one started whose end this node does not see may
// still complete (the target may already have been told to campaign):
// ErrTransferOutcomeUnknown.
func (d *Driver) TransferLeadership(ctx context.Context, to uint64) error {
	wake := d.LeaderChanged()
	type started struct {
		to  uint64
		err error
	}
	s, err := onLoop(ctx, d, func() started {
		st := d.core.Status()
		target := to
		if target == 0 {
			// Ties go to the lowest id: the choice must not depend on
			// the map's order, or a simulated run would not replay.
			var best uint64
			for _, id := range slices.Sorted(maps.Keys(st.Progress)) {
				if pr := st.Progress[id]; id != d.cfg.ID && !pr.IsLearner && (target == 0 || pr.Match > best) {
					target, best = id, pr.Match
				}
			}
		}
		if target == 0 {
			return started{err: invalid("no other voter to hand leadership to")}
		}
		if err := d.core.TransferLeadership(target); err != nil {
			return started{err: membershipError(err)}
		}
		return started{to: target}
	})
	if err != nil {
		return err // not started
	}
	if s.err != nil {
		return s.err
	}
	to = s.to
	timer := d.clock.NewTimer(d.cfg.RequestTimeout)
	defer timer.Stop()
	for {
		select {
		case <-wake:
			switch lead := d.lead.Load(); {
			case lead == to:
				return nil
			case lead != d.cfg.ID && lead != 0:
				// Another node won the election the transfer started.
				return &LeaderMovedError{Leader: lead, Target: to}
			}
			wake = d.LeaderChanged()
		case <-timer.C():
			return ErrTransferOutcomeUnknown
		case <-ctx.Done():
			return ErrTransferOutcomeUnknown
		case <-d.done:
			return fmt.Errorf("%w (%v)", ErrTransferOutcomeUnknown, d.StoppedError())
		}
	}
}

// Snapshot snapshots the state machine now and waits until it is on
// disk; it returns the snapshot's index, which covers everything applied
// when it was called. A snapshot already being written (one started by
// the log's growth, say) is waited for first: it answers if it covers
// that much, else a new one is taken after it.
func (d *Driver) Snapshot(ctx context.Context) (uint64, error) {
	type started struct {
		index uint64
		done  <-chan error // the snapshot's outcome (snapDone)
		busy  bool         // done is another snapshot's, started before
		err   error
	}
	var asked uint64 // the applied index when called
	for {
		s, err := onLoop(ctx, d, func() started {
			if d.loop.stopping != nil {
				return started{err: fmt.Errorf("%w: %v", ErrStopped, d.loop.stopping)}
			}
			if asked == 0 {
				asked = d.sm.Applied()
			}
			done := make(chan error, 1)
			if d.loop.snapshotting {
				d.loop.snapWaiters = append(d.loop.snapWaiters, done)
				return started{busy: true, done: done}
			}
			index := d.startSnapshot()
			if d.loop.stopping != nil {
				// Persisting the commit index first failed: the node stops.
				return started{err: fmt.Errorf("%w: %v", ErrStopped, d.loop.stopping)}
			}
			d.loop.snapWaiters = append(d.loop.snapWaiters, done)
			return started{index: index, done: done}
		})
		if err != nil {
			return 0, err
		}
		if s.err != nil {
			return 0, s.err
		}
		var snapErr error
		select {
		case snapErr = <-s.done:
		case <-ctx.Done():
			return 0, ErrTimeout
		case <-d.done:
			select {
			case snapErr = <-s.done:
			default:
				return 0, d.StoppedError()
			}
		}
		if !s.busy {
			if snapErr != nil {
				return 0, fmt.Errorf("the snapshot at index %d failed: %v", s.index, snapErr)
			}
			return s.index, nil
		}
		// The snapshot waited for ended: it answers if it covers what
		// was applied when asked.
		if snapErr == nil {
			if st, err := d.Status(ctx); err == nil && st.SnapshotIndex >= asked {
				return st.SnapshotIndex, nil
			}
		}
	}
}

// Status is the core's status with the driver's own counters.
type Status struct {
	raft.Status
	// SnapshotIndex is the newest snapshot's index.
	SnapshotIndex uint64
	// SnapshotsInstalled counts snapshots received from a leader since
	// the driver started.
	SnapshotsInstalled uint64
}

// Status reads the core's status on the loop.
func (d *Driver) Status(ctx context.Context) (Status, error) {
	return onLoop(ctx, d, func() Status {
		return Status{Status: d.core.Status(), SnapshotIndex: d.loop.snapIndex, SnapshotsInstalled: d.loop.installed}
	})
}

// Configured reports whether the core holds a configuration: it
// bootstrapped, or a leader caught it up.
func (d *Driver) Configured(ctx context.Context) (bool, error) {
	return onLoop(ctx, d, func() bool {
		cs := d.core.ConfState()
		return len(cs.Voters) > 0 || len(cs.Learners) > 0
	})
}

// Bootstrap hands the core sn, the first snapshot of a new cluster (see
// BootstrapSnapshot), which the next Ready persists: what a node does
// when peer discovery found every initial member new.
// raft.ErrBootstrapped: a leader's snapshot or entries arrived first.
func (d *Driver) Bootstrap(ctx context.Context, sn raft.Snapshot) error {
	err, lerr := onLoop(ctx, d, func() error {
		err := d.core.Bootstrap(sn)
		if err == nil {
			d.loop.bootstrapping = true
		}
		return err
	})
	if lerr != nil {
		return lerr
	}
	return err
}
