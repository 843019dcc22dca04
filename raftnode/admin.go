package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
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

// runOnLoop runs fn on the loop goroutine and waits for it.
func (n *Node) runOnLoop(ctx context.Context, fn func()) error {
	// state: 0 queued, 1 fn runs or ran, 2 abandoned (fn never runs).
	// An early return abandons fn first, or waits for it if it already
	// started, so fn never writes what its caller reads after returning.
	var state atomic.Int32
	done := make(chan struct{})
	n.q.push(task{func() {
		if state.CompareAndSwap(0, 1) {
			fn()
			close(done)
		}
	}})
	var err error
	select {
	case <-done:
		return nil
	case <-n.done:
		err = n.stoppedError()
	case <-ctx.Done():
		err = errTimeout
	}
	if state.CompareAndSwap(0, 2) {
		return err
	}
	<-done
	return nil
}

// Members returns the configuration as of a linearizable read.
func (n *Node) Members(ctx context.Context) (uint64, []Member, error) {
	if err := n.awaitRead(ctx, n.readWait()); err != nil {
		return 0, nil, err
	}
	var ms []Member
	var lead uint64
	err := n.runOnLoop(ctx, func() {
		st := n.core.Status()
		lead = st.Lead
		add := func(ids []uint64, learner bool) {
			for _, id := range ids {
				m := Member{ID: id, Address: n.loop.addrs[id], Learner: learner, Promoting: slices.Contains(st.Config.AutoPromote, id)}
				if pr, ok := st.Progress[id]; ok {
					m.Match = pr.Match
				}
				ms = append(ms, m)
			}
		}
		add(st.Config.Voters, false)
		add(st.Config.Learners, true)
	})
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return lead, ms, err
}

// changeMembership proposes cc on the leader (this node) and waits until
// it is applied.
func (n *Node) changeMembership(ctx context.Context, cc raft.ConfChange) error {
	ch := make(chan error, 1)
	err := n.runOnLoop(ctx, func() {
		if err := checkChanges(n.core.Status(), cc); err != nil {
			ch <- err
			return
		}
		if err := n.core.ProposeConfChange(cc); err != nil {
			ch <- membershipError(err)
			return
		}
		n.loop.confWaiters[n.core.LastIndex()] = ch
		n.loop.confTerm[n.core.LastIndex()] = n.core.Term()
	})
	if err != nil {
		return err
	}
	timer := time.NewTimer(n.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-ch:
		return err
	case <-timer.C:
		return errOutcomeUnknown
	case <-ctx.Done():
		return errOutcomeUnknown
	case <-n.done:
		// A leader that removed itself stops right after applying the
		// change; the answer may already be there.
		select {
		case err := <-ch:
			return err
		default:
			return errOutcomeUnknown
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
// one) and waits until this node no longer leads.
func (n *Node) transfer(ctx context.Context, to uint64) error {
	var terr error
	wake := n.leaderChanged()
	err := n.runOnLoop(ctx, func() {
		st := n.core.Status()
		if to == 0 {
			var best uint64
			for id, pr := range st.Progress {
				if id != n.cfg.ID && !pr.IsLearner && (to == 0 || pr.Match > best) {
					to, best = id, pr.Match
				}
			}
		}
		if to == 0 {
			terr = invalid("no other voter to hand leadership to")
			return
		}
		if err := n.core.TransferLeadership(to); err != nil {
			terr = membershipError(err)
		}
	})
	if err != nil {
		return err
	}
	if terr != nil {
		return terr
	}
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
			return errTimeout
		case <-ctx.Done():
			return errTimeout
		case <-n.done:
			return n.stoppedError()
		}
	}
}

// Snapshot snapshots the state machine now and waits until it is on
// disk; it returns the snapshot's index.
func (n *Node) Snapshot(ctx context.Context) (uint64, error) {
	var index uint64
	var busy bool
	if err := n.runOnLoop(ctx, func() {
		if n.loop.snapshotting {
			busy = true
			return
		}
		index = n.startSnapshot()
	}); err != nil {
		return 0, err
	}
	if busy {
		return 0, &requestError{schema.ErrorCode_unavailable, "a snapshot is already being written: retry shortly"}
	}
	// Wait for the background writer: the store reports the new snapshot.
	for {
		if meta, ok := n.store.SnapshotMeta(); ok && meta.Index >= index {
			return index, nil
		}
		done := false
		if err := n.runOnLoop(ctx, func() { done = !n.loop.snapshotting }); err != nil {
			return 0, err
		}
		if done {
			if meta, ok := n.store.SnapshotMeta(); ok && meta.Index >= index {
				return index, nil
			}
			return 0, &requestError{schema.ErrorCode_internal, "the snapshot failed; see the node's log"}
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return 0, errTimeout
		}
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
