package services

import (
	"context"
	"errors"
	"fmt"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// adminServer is the Admin capability: membership, leadership transfer
// and on-demand snapshots. Changes are handed to the leader.
type adminServer struct{ sv *Server }

// onLeader runs local when this node leads and remote on the leader's
// Admin capability otherwise. A handed-over call is abandoned soon after
// another node leads (see whileLeading): membership changes are not
// idempotent, so it is not sent again but answered outcomeUnknown, as any
// call lost after it was sent, without waiting for the request timeout.
func (sv *Server) onLeader(ctx context.Context, local func() error, remote func(context.Context, schema.Admin) error) error {
	ctx, cancel := context.WithTimeout(ctx, sv.cfg.RequestTimeout)
	defer cancel()
	for {
		lead, err := sv.d.WaitLeader(ctx)
		if err != nil {
			return err
		}
		if lead == sv.cfg.ID {
			err := local()
			if errors.Is(err, driver.ErrNotLeader) {
				continue
			}
			return err
		}
		sent, moved, err := sv.callLeader(ctx, lead, sv.movedGrace(), func(ctx context.Context, rc schema.Raft) error {
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
			err = &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf("leader %d stopped answering and node %d leads now; the change may or may not have been applied: check with raftctl members", lead, sv.d.Leader())}
		default:
			err = &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf("leader %d: %v", lead, err)}
		}
		return err
	}
}

// Members lists the configuration.
func (a adminServer) Members(ctx context.Context, call schema.Admin_members) error {
	call.Go()
	lead, ms, err := a.sv.d.Members(ctx)
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	if err != nil {
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, a.sv.d.Leader())
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
	err = a.sv.onLeader(ctx, func() error {
		if id == 0 || addr == "" {
			return invalid("a member needs a non-zero id and an address")
		}
		// A new voter joins as a learner that the leader promotes by
		// itself once it has caught up (thesis §4.2.1): the quorum never
		// counts a node that does not have the log yet, and the voter
		// is recorded with the incarnation of the storage it answers
		// from, so it cannot lose that storage unnoticed.
		c := raft.ConfChangeSingle{Type: raft.ConfChangeAddLearner, NodeID: id, AutoPromote: !learner}
		return a.sv.d.ChangeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{c}, Context: []byte(addr)})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
			p.SetId(id)
			p.SetLearner(learner)
			return p.SetAddress(addr)
		})
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.sv)
}

// PromoteMember turns a learner into a voter.
func (a adminServer) PromoteMember(ctx context.Context, call schema.Admin_promoteMember) error {
	id := call.Args().Id()
	call.Go()
	err := a.sv.onLeader(ctx, func() error {
		return a.sv.d.ChangeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeAddVoter, NodeID: id}}})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.PromoteMember(ctx, func(p schema.Admin_promoteMember_Params) error { p.SetId(id); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.sv)
}

// RemoveMember removes a node.
func (a adminServer) RemoveMember(ctx context.Context, call schema.Admin_removeMember) error {
	id := call.Args().Id()
	call.Go()
	err := a.sv.onLeader(ctx, func() error {
		return a.sv.d.ChangeMembership(ctx, raft.ConfChange{Changes: []raft.ConfChangeSingle{{Type: raft.ConfChangeRemoveNode, NodeID: id}}})
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(id); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.sv)
}

// TransferLeadership hands leadership to another voter.
func (a adminServer) TransferLeadership(ctx context.Context, call schema.Admin_transferLeadership) error {
	to := call.Args().To()
	call.Go()
	err := a.sv.onLeader(ctx, func() error {
		return a.sv.d.TransferLeadership(ctx, to)
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(to); return nil })
		defer rel()
		return forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, a.sv)
}

// Snapshot snapshots the answering node now.
func (a adminServer) Snapshot(ctx context.Context, call schema.Admin_snapshot) error {
	call.Go()
	index, err := a.sv.d.Snapshot(ctx)
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
	return fillError(e, err, a.sv.d.Leader())
}

// answerError fills the error field of a result whose only field it is.
func answerError[R interface {
	NewError() (schema.Error, error)
}](alloc func() (R, error), err error, sv *Server) error {
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
	return fillError(e, err, sv.d.Leader())
}
