package raftnode_test

import (
	"testing"

	"github.com/capraft/capraft/schema"
)

// Bad Admin requests, at the leader or handed over by a follower, answer
// invalidArgument and change nothing.
func TestBadAdminRequests(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	type call = func(schema.Admin) error
	transfer := func(to uint64) call {
		return func(a schema.Admin) error {
			f, rel := a.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(to); return nil })
			defer rel()
			return resultErr(f.Struct())
		}
	}
	add := func(id uint64, addr string) call {
		return func(a schema.Admin) error {
			f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error { p.SetId(id); return p.SetAddress(addr) })
			defer rel()
			return resultErr(f.Struct())
		}
	}
	remove := func(id uint64) call {
		return func(a schema.Admin) error {
			f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(id); return nil })
			defer rel()
			return resultErr(f.Struct())
		}
	}
	promote := func(id uint64) call {
		return func(a schema.Admin) error {
			f, rel := a.PromoteMember(ctx, func(p schema.Admin_promoteMember_Params) error { p.SetId(id); return nil })
			defer rel()
			return resultErr(f.Struct())
		}
	}
	before := c.nodes[lead].Status(ctx)
	for _, via := range []uint64{lead, lead%3 + 1} {
		for name, fn := range map[string]call{
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
			if err := adminCall(ctx, c, via, fn); !isCode(err, schema.ErrorCode_invalidArgument) {
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
