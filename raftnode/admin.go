package raftnode

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// adminServer is the Admin capability: membership, leadership transfer
// and on-demand snapshots. Changes are handed to the leader.
type adminServer struct{ n *Node }

// Member is one cluster member as a node sees it.
type Member struct {
	ID      uint64
	Address string
	Learner bool
	// Promoting: a learner the leader makes a voter once it has caught up.
	Promoting bool
	Match     uint64
}

// onLoop runs fn on the loop goroutine and returns its result, handed
// back by value over a channel: nothing fn builds stays shared with a
// caller that gave up waiting (ctx ended, node stopped). A task whose
// caller gave up before the loop took it never runs, so the caller's
// error (timeout, shuttingDown) never hides an effect of fn, such as a
// proposal; a task that already started is waited for (it runs on the
// loop, so it is short).
func onLoop[T any](ctx context.Context, n *Node, fn func() T) (T, error) {
	const queued, started, abandoned = 0, 1, 2
	var state atomic.Int32
	res := make(chan T, 1)
	var zero T
	if !n.q.push(task{func() {
		if state.CompareAndSwap(queued, started) {
			res <- fn()
		}
	}}) {
		return zero, n.stoppedError()
	}
	var err error
	select {
	case v := <-res:
		return v, nil
	case <-n.done:
		err = n.stoppedError()
	case <-ctx.Done():
		err = errTimeout
	}
	if state.CompareAndSwap(queued, abandoned) {
		return zero, err
	}
	// fn runs or ran: its result comes, unless fn stopped the loop.
	select {
	case v := <-res:
		return v, nil
	case <-n.done:
		select {
		case v := <-res:
			return v, nil
		default:
			return zero, n.stoppedError()
		}
	}
}

// Members returns the configuration as of a linearizable read.
func (n *Node) Members(ctx context.Context) (uint64, []Member, error) {
	if err := n.awaitRead(ctx, n.readWait()); err != nil {
		return 0, nil, err
	}
	type view struct {
		lead    uint64
		members []Member
	}
	v, err := onLoop(ctx, n, func() view {
		st := n.core.Status()
		v := view{lead: st.Lead}
		add := func(ids []uint64, learner bool) {
			for _, id := range ids {
				m := Member{ID: id, Address: n.loop.addrs[id], Learner: learner, Promoting: slices.Contains(st.Config.AutoPromote, id)}
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

// changeMembership proposes cc on the leader (this node) and waits until
// it is applied. A refused change (invalid, not leader, another change
// under way) and one overwritten by a new leader (errConfNotApplied) have
// a known outcome; a proposed change whose end this node does not see
// may still be applied: errChangeOutcomeUnknown.
func (n *Node) changeMembership(ctx context.Context, cc raft.ConfChange) error {
	ch := make(chan error, 1)
	refused, err := onLoop(ctx, n, func() error {
		if err := checkChanges(n.core.Status(), cc); err != nil {
			return err
		}
		if err := n.core.ProposeConfChange(cc); err != nil {
			return membershipError(err)
		}
		n.loop.confWaiters[n.core.LastIndex()] = ch
		n.loop.confTerm[n.core.LastIndex()] = n.core.Term()
		return nil
	})
	if err != nil {
		return err // not proposed
	}
	if refused != nil {
		return refused
	}
	timer := time.NewTimer(n.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
		return errChangeOutcomeUnknown
	case <-ctx.Done():
		return errChangeOutcomeUnknown
	case <-n.done:
		// A leader that removed itself stops right after applying the
		// change; the answer may already be there (failEverything
		// answers the others errChangeOutcomeUnknown).
		select {
		case err := <-ch:
			return err
		default:
			return errChangeOutcomeUnknown
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
		return errNotLeader
	case errors.Is(err, raft.ErrProposalDropped):
		return &requestError{schema.ErrorCode_unavailable, "another membership change or a leadership transfer is in progress: retry shortly"}
	}
	return invalid("%v", err)
}

// transfer hands leadership to another voter (0: the most caught-up
// one) and waits until this node no longer leads. A transfer the core
// refused has a known outcome; one started whose end this node does not
// see may still complete (the target may already have been told to
// campaign): errTransferOutcomeUnknown.
func (n *Node) transfer(ctx context.Context, to uint64) error {
	wake := n.leaderChanged()
	type started struct {
		to  uint64
		err error
	}
	s, err := onLoop(ctx, n, func() started {
		st := n.core.Status()
		target := to
		if target == 0 {
			var best uint64
			for id, pr := range st.Progress {
				if id != n.cfg.ID && !pr.IsLearner && (target == 0 || pr.Match > best) {
					target, best = id, pr.Match
				}
			}
		}
		if target == 0 {
			return started{err: invalid("no other voter to hand leadership to")}
		}
		if err := n.core.TransferLeadership(target); err != nil {
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
	timer := time.NewTimer(n.cfg.RequestTimeout)
	defer timer.Stop()
	for {
		select {
		case <-wake:
			switch lead := n.lead.Load(); {
			case lead == to:
				return nil
			case lead != n.cfg.ID && lead != 0:
				// Another node won the election the transfer started.
				return &requestError{schema.ErrorCode_unavailable, fmt.Sprintf("leadership moved to node %d, not %d: retry the transfer", lead, to)}
			}
			wake = n.leaderChanged()
		case <-timer.C:
			return errTransferOutcomeUnknown
		case <-ctx.Done():
			return errTransferOutcomeUnknown
		case <-n.done:
			return fmt.Errorf("%w (%v)", errTransferOutcomeUnknown, n.stoppedError())
		}
	}
}

// Snapshot snapshots the state machine now and waits until it is on
// disk; it returns the snapshot's index.
func (n *Node) Snapshot(ctx context.Context) (uint64, error) {
	type started struct {
		index uint64
		done  <-chan error // the snapshot's outcome (snapDone)
		err   error
	}
	s, err := onLoop(ctx, n, func() started {
		if n.loop.snapshotting {
			return started{err: errSnapshotBusy}
		}
		index := n.startSnapshot()
		if n.loop.stopping != nil {
			// Persisting the commit index first failed: the node stops.
			return started{err: fmt.Errorf("%w: %v", errShuttingDown, n.loop.stopping)}
		}
		done := make(chan error, 1)
		n.loop.snapWaiters = append(n.loop.snapWaiters, done)
		return started{index: index, done: done}
	})
	if err != nil {
		return 0, err
	}
	if s.err != nil {
		return 0, s.err
	}
	select {
	case err := <-s.done:
		if err != nil {
			return 0, &requestError{schema.ErrorCode_internal, fmt.Sprintf("the snapshot at index %d failed: %v", s.index, err)}
		}
		return s.index, nil
	case <-ctx.Done():
		return 0, errTimeout
	case <-n.done:
		select {
		case err := <-s.done:
			if err == nil {
				return s.index, nil
			}
		default:
		}
		return 0, n.stoppedError()
	}
}

// onLeader runs local when this node leads and remote on the leader's
// Admin capability otherwise. A handed-over call is abandoned soon after
// another node leads (see whileLeading): membership changes are not
// idempotent, so it is not sent again but answered outcomeUnknown, as any
// call lost after it was sent, without waiting for the request timeout.
func (n *Node) onLeader(ctx context.Context, local func() error, remote func(context.Context, schema.Admin) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	for {
		lead, err := n.waitLeader(ctx)
		if err != nil {
			return err
		}
		if lead == n.cfg.ID {
			err := local()
			if errors.Is(err, errNotLeader) {
				continue
			}
			return err
		}
		sent, moved, err := n.callLeader(ctx, lead, n.movedGrace(), func(ctx context.Context, rc schema.Raft) error {
			af, arel := rc.Admin(ctx, nil)
			defer arel()
			return remote(ctx, af.Admin())
		})
		var re *requestError
		switch {
		case err == nil || errors.As(err, &re):
		case !sent:
			err = &requestError{schema.ErrorCode_unavailable, err.Error()}
		case moved:
			err = &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf("leader %d stopped answering and node %d leads now; the change may or may not have been applied: check with raftctl members", lead, n.lead.Load())}
		default:
			err = &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf("leader %d: %v", lead, err)}
		}
		return err
	}
}

// Members lists the configuration.
func (a adminServer) Members(ctx context.Context, call schema.Admin_members) error {
	call.Go()
	lead, ms, err := a.n.Members(ctx)
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	if err != nil {
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, a.n.lead.Load())
	}
	res.SetLeader(lead)
	l, err := res.NewMembers(int32(len(ms)))
	if err != nil {
		return err
	}
	for i, m := range ms {
		d := l.At(i)
		d.SetId(m.ID)
		d.SetLearner(m.Learner)
		d.SetPromoting(m.Promoting)
		d.SetMatch(m.Match)
		if err := d.SetAddress(m.Address); err != nil {
			return err
		}
	}
	return nil
}

// AddMember adds a node.
func (a adminServer) AddMember(ctx context.Context, call schema.Admin_addMember) error {
	args := call.Args()
	id, learner := args.Id(), args.Learner()
	addr, err := args.Address()
	if err != nil {
		return invalid("address: %v", err)
	}
	call.Go()
	err = a.n.onLeader(ctx, func() error {
		if id == 0 || addr == "" {
			return invalid("a member needs a non-zero id and an address")
		}
		// A new voter joins as a learner that the leader promotes by
		// itself once it has caught up (thesis §4.2.1): the quorum never
		// counts a node that does not have the log yet, and the voter
		// is recorded with the incarnation of the storage it answers
		// from, so it cannot lose that storage unnoticed.
		c := raft.ConfChangeSingle{Type: raft.ConfChangeAddLearner, NodeID: id, AutoPromote: !learner}
		return a.n.changeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{c}, Context: []byte(addr)})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
			p.SetId(id)
			p.SetLearner(learner)
			return p.SetAddress(addr)
		})
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.n)
}

// PromoteMember turns a learner into a voter.
func (a adminServer) PromoteMember(ctx context.Context, call schema.Admin_promoteMember) error {
	id := call.Args().Id()
	call.Go()
	err := a.n.onLeader(ctx, func() error {
		return a.n.changeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddVoter, NodeID: id}}})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.PromoteMember(ctx, func(p schema.Admin_promoteMember_Params) error { p.SetId(id); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.n)
}

// RemoveMember removes a node.
func (a adminServer) RemoveMember(ctx context.Context, call schema.Admin_removeMember) error {
	id := call.Args().Id()
	call.Go()
	err := a.n.onLeader(ctx, func() error {
		return a.n.changeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeRemoveNode, NodeID: id}}})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(id); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.n)
}

// TransferLeadership hands leadership to another voter.
func (a adminServer) TransferLeadership(ctx context.Context, call schema.Admin_transferLeadership) error {
	to := call.Args().To()
	call.Go()
	err := a.n.onLeader(ctx, func() error {
		return a.n.transfer(ctx, to)
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(to); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.n)
}

// Snapshot snapshots the answering node now.
func (a adminServer) Snapshot(ctx context.Context, call schema.Admin_snapshot) error {
	call.Go()
	index, err := a.n.Snapshot(ctx)
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	res.SetIndex(index)
	if err == nil {
		return nil
	}
	e, aerr := res.NewError()
	if aerr != nil {
		return aerr
	}
	return fillError(e, err, a.n.lead.Load())
}

// answerError fills the error field of a result whose only field it is.
func answerError[R interface {
	NewError() (schema.Error, error)
}](alloc func() (R, error), err error, n *Node) error {
	res, aerr := alloc()
	if aerr != nil {
		return aerr
	}
	if err == nil {
		return nil
	}
	e, aerr := res.NewError()
	if aerr != nil {
		return aerr
	}
	return fillError(e, err, n.lead.Load())
}
