package raftnode_test

import (
	"context"
	"testing"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// adminErr runs one Admin call on node via and returns its error field,
// read before the result is released.
func adminErr(ctx context.Context, t *testing.T, c *testCluster, via uint64, call func(schema.Admin) (func() (bool, schema.Error, error), func())) error {
	cc := rpctest.Dial(t, c.addrs[via], rpc.DialConfig{})
	af, arel := cc.Node().Admin(ctx, nil)
	defer arel()
	get, rel := call(af.Admin())
	defer rel()
	has, e, err := get()
	if err != nil || !has {
		return err
	}
	msg, _ := e.Message_()
	return &codeError{e.Code(), msg}
}

// resultError returns the reader of an Admin result's error field.
func resultError[R interface {
	HasError() bool
	Error() (schema.Error, error)
}](f interface{ Struct() (R, error) }) func() (bool, schema.Error, error) {
	return func() (bool, schema.Error, error) {
		r, err := f.Struct()
		if err != nil {
			return false, schema.Error{}, err
		}
		e, err := r.Error()
		return r.HasError(), e, err
	}
}

// Bad Admin requests, at the leader or handed over by a follower, answer
// invalidArgument and change nothing.
func TestReviewBadAdminRequests(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	type adminCall = func(schema.Admin) (func() (bool, schema.Error, error), func())
	transfer := func(to uint64) adminCall {
		return func(a schema.Admin) (func() (bool, schema.Error, error), func()) {
			f, rel := a.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(to); return nil })
			return resultError[schema.Admin_transferLeadership_Results](f), rel
		}
	}
	add := func(id uint64, addr string) adminCall {
		return func(a schema.Admin) (func() (bool, schema.Error, error), func()) {
			f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error { p.SetId(id); return p.SetAddress(addr) })
			return resultError[schema.Admin_addMember_Results](f), rel
		}
	}
	remove := func(id uint64) adminCall {
		return func(a schema.Admin) (func() (bool, schema.Error, error), func()) {
			f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(id); return nil })
			return resultError[schema.Admin_removeMember_Results](f), rel
		}
	}
	promote := func(id uint64) adminCall {
		return func(a schema.Admin) (func() (bool, schema.Error, error), func()) {
			f, rel := a.PromoteMember(ctx, func(p schema.Admin_promoteMember_Params) error { p.SetId(id); return nil })
			return resultError[schema.Admin_promoteMember_Results](f), rel
		}
	}
	before := c.nodes[lead].Status(ctx)
	for _, via := range []uint64{lead, lead%3 + 1} {
		for name, call := range map[string]adminCall{
			"transfer to the leader itself": transfer(lead),
			"transfer to a non-member":      transfer(99),
			"add member id 0":               add(0, "127.0.0.1:1"),
			"add member without address":    add(9, ""),
			// Logged, these were a no-op and, for the promotion of a
			// stranger, a voter without an address raising the quorum.
			"remove a non-member":  remove(99),
			"promote a non-member": promote(99),
			"promote a voter":      promote(lead%3 + 1),
		} {
			if err := adminErr(ctx, t, c, via, call); !isCode(err, schema.ErrorCode_invalidArgument) {
				t.Errorf("via node %d (leader %d): %s: %v, want invalidArgument", via, lead, name, err)
			}
		}
	}
	if l := c.leader(); l != lead {
		t.Errorf("leadership moved from %d to %d", lead, l)
	}
	if _, ms, err := c.nodes[lead].Members(ctx); err != nil || len(ms) != 3 {
		t.Errorf("members after bad requests: %v %v", ms, err)
	}
	if after := c.nodes[lead].Status(ctx); after.LastIndex != before.LastIndex {
		t.Errorf("bad requests appended to the log: last index %d, was %d", after.LastIndex, before.LastIndex)
	}
}
