package services

import (
	"context"
	"errors"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// adminServer is the Admin capability: membership, leadership transfer
// and on-demand snapshots. Changes are handed to the leader.
type adminServer struct{ sv *Server }

// onLeaderAdmin runs an admin request on the leader (see onLeader):
// local when this node leads, remote on the leader's Admin capability
// otherwise. Admin requests are not sent again once they may have reached
// a leader: membership changes are not idempotent.
func (sv *Server) onLeaderAdmin(ctx context.Context, local func(context.Context) error, remote func(context.Context, schema.Admin) error) error {
	return sv.onLeader(ctx, leaderCall{
		writes: true,
		local: func(ctx context.Context) answer {
			err := local(ctx)
			return answer{err: err, refused: errors.Is(err, driver.ErrNotLeader)}
		},
		remote: func(ctx context.Context, rc schema.Raft) (answer, error) {
			af, arel := rc.Admin(ctx, nil)
			defer arel()
			return answerOf(remote(ctx, af.Admin()))
		},
	})
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
	err = a.sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
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
	err := a.sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
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
	err := a.sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
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
	err := a.sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
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
