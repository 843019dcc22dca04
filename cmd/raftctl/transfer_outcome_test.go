package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// outcomeNode is an operator's connection to a node whose leadership
// transfers end with an unknown outcome, and whose members call reports
// lead as the leader.
type outcomeNode struct {
	*authNode
	lead *atomic.Uint64
}

func (n outcomeNode) Admin(_ context.Context, call schema.Node_admin) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAdmin(schema.Admin_ServerToClient(outcomeAdmin{&authAdmin{f: n.f}, n.lead}))
}

type outcomeAdmin struct {
	*authAdmin
	lead *atomic.Uint64
}

func (a outcomeAdmin) TransferLeadership(_ context.Context, call schema.Admin_transferLeadership) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	e, err := res.NewError()
	if err != nil {
		return err
	}
	e.SetCode(schema.ErrorCode_outcomeUnknown)
	return e.SetMessage_("leadership did not move in time; the transfer may still complete (fake)")
}

func (a outcomeAdmin) Members(_ context.Context, call schema.Admin_members) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetLeader(a.lead.Load())
	_, err = res.NewMembers(0)
	return err
}

// A leadership transfer whose outcome the node could not see is settled
// by asking who leads: done if the target leads now; otherwise raftctl
// says the outcome is unknown in terms of leadership (not of a write)
// and how to find out.
func TestTransferWithUnknownOutcomeIsSettledOrExplained(t *testing.T) {
	f := &authFake{grants: make(map[string]schemaGrant)}
	var lead atomic.Uint64
	_, ep := rpctest.Serve(t, rpc.Config{Bootstrap: func(*rpc.ConnInfo) capnp.Client {
		return capnp.Client(schema.Node_ServerToClient(outcomeNode{&authNode{f: f, grant: &schemaGrant{operator: true}}, &lead}))
	}})

	lead.Store(3)
	if out, errOut, code := runCtl(t, "", nil, "--endpoints", ep, "transfer", "3"); code != 0 || out != "OK\n" {
		t.Errorf("transfer 3 with an unknown outcome, node 3 leading: exit %d, stdout %q, stderr %q; want OK", code, out, errOut)
	}

	lead.Store(1)
	for _, args := range [][]string{{"transfer", "3"}, {"transfer"}} {
		out, errOut, code := runCtl(t, "", nil, append([]string{"--endpoints", ep}, args...)...)
		if code != 1 || out != "" {
			t.Errorf("raftctl %q with an unknown outcome, node 1 leading: exit %d, stdout %q; want 1 and nothing", args, code, out)
		}
		for _, want := range []string{"outcome unknown", "leadership may or may not have moved", "raftctl status"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("raftctl %q: stderr %q does not say %q", args, errOut, want)
			}
		}
		if strings.Contains(errOut, "write") {
			t.Errorf("raftctl %q: stderr %q talks about a write", args, errOut)
		}
	}
}
