package client

import (
	"context"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// NodeStatus is one node's view of the cluster, as its Node.status
// reports it.
type NodeStatus struct {
	ID            uint64
	Address       string // the address the node advertises
	Role          string // follower, candidate, precandidate, leader, learner or stopped
	Term          uint64
	Leader        uint64 // the leader's id as this node knows it, or 0
	Commit        uint64
	Applied       uint64
	LastIndex     uint64
	SnapshotIndex uint64
	ClusterID     uint64
	Version       string
	Revision      uint64 // the key-value store's revision
	StopReason    string // when Role is stopped: why
}

// roleName returns the name the client uses for a schema role.
func roleName(r schema.Role) string {
	switch r {
	case schema.Role_follower:
		return "follower"
	case schema.Role_candidate:
		return "candidate"
	case schema.Role_preCandidate:
		return "precandidate"
	case schema.Role_leader:
		return "leader"
	case schema.Role_learner:
		return "learner"
	case schema.Role_stopped:
		return "stopped"
	}
	return fmt.Sprintf("role(%d)", r)
}

// Status asks the node at endpoint (which need not be one of the client's
// endpoints) for its status. It uses the client's connection if that goes
// to endpoint, else a connection of its own that it closes after.
func (c *Client) Status(ctx context.Context, endpoint string) (NodeStatus, error) {
	node, done, err := c.nodeAt(ctx, endpoint)
	if err != nil {
		return NodeStatus{}, err
	}
	defer done()
	f, release := node.Status(ctx, nil)
	defer release()
	res, err := f.Struct()
	if pe := permissionError(err, endpoint); pe != nil {
		return NodeStatus{}, fmt.Errorf("status: %w", pe)
	}
	if err != nil {
		return NodeStatus{}, &CallError{Op: "status", Addr: endpoint, ConnectionLost: exc.IsType(err, exc.Disconnected), Err: err}
	}
	st, err := res.Status()
	if err != nil {
		return NodeStatus{}, fmt.Errorf("status from %s: %w", endpoint, err)
	}
	addr, _ := st.Address()
	version, _ := st.Version()
	reason, _ := st.StopReason()
	return NodeStatus{
		ID: st.Id(), Address: addr, Role: roleName(st.Role()), Term: st.Term(), Leader: st.Leader(),
		Commit: st.Commit(), Applied: st.Applied(), LastIndex: st.LastIndex(), SnapshotIndex: st.SnapshotIndex(),
		ClusterID: st.ClusterId(), Version: version, Revision: st.Revision(), StopReason: reason,
	}, nil
}

// nodeAt returns the Node capability of endpoint (logged in with the
// client's token, if any) and a function that releases what it took.
func (c *Client) nodeAt(ctx context.Context, endpoint string) (schema.Node, func(), error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return schema.Node{}, nil, ErrClosed
	}
	cn := c.cur
	if cn != nil && !cn.dead() && cn.cc != nil && cn.cc.Addr() == endpoint {
		select {
		case <-cn.ready:
			cn.users++
			c.mu.Unlock()
			return cn.node, func() { c.release(cn) }, nil
		default:
		}
	}
	c.mu.Unlock()
	cc, err := rpc.Dial(ctx, endpoint, c.opts.dial)
	if err != nil {
		return schema.Node{}, nil, &UnavailableError{causes: []error{err}}
	}
	node, release := c.login(cc)
	return node, func() {
		_ = cc.Close()
		node.Release()
		release()
	}, nil
}

// Member is one member of the cluster's configuration.
type Member struct {
	ID      uint64
	Address string
	Learner bool // a non-voting member
	// Promoting marks a learner the leader makes a voter by itself once
	// it has caught up (added as a voter, or a voter that lost its
	// storage).
	Promoting bool
	Match     uint64 // as the leader sees it: the highest index known replicated there (0 if unknown)
}

// adminCall runs call on an Admin capability of the current connection,
// retrying while nodes are unreachable or have no leader. An idempotent
// call (unknown nil) is also retried after a lost connection or an unknown
// outcome; for the others, such a failure ends the call with
// ErrUnknownOutcome, saying what may have happened (unknown).
func (c *Client) adminCall(ctx context.Context, op string, unknown *outcome,
	call func(ctx context.Context, adm schema.Admin) (*ServerError, error)) error {
	var last error
	var b backoff
	idempotent := unknown == nil
	maybeApplied := false
	fail := func(err error) error {
		if maybeApplied {
			return &unknownOutcomeError{op: op, what: *unknown, cause: err}
		}
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			if !maybeApplied {
				return unavailable(op, last, err)
			}
			return fail(fmt.Errorf("%s: %w", op, errors.Join(last, err)))
		}
		cn, err := c.acquire(ctx)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				if errors.Is(err, ErrClosed) {
					return fail(err)
				}
				continue
			}
			last = err
			b.wait(ctx, c.ctx.Done())
			continue
		}
		actx, cancel := context.WithTimeout(ctx, c.opts.requestTimeout)
		af, arel := cn.node.Admin(actx, nil)
		adm := af.Admin()
		answered := make(chan struct{})
		unwatch := c.watchStall(cn, answered)
		se, err := call(actx, adm)
		close(answered)
		unwatch()
		arel()
		if err != nil {
			err = c.batchError(cn, actx, err)
		}
		cancel()
		c.release(cn)
		if err != nil {
			var te *transportError
			switch {
			case errors.Is(err, ErrClosed):
				return fail(fmt.Errorf("%s: %w", op, err))
			case errors.As(err, &te):
				if !idempotent {
					maybeApplied = true
					return fail(fmt.Errorf("%s: %w", op, err))
				}
				last = err
			default:
				return fail(fmt.Errorf("%s: %w", op, err))
			}
			b.wait(ctx, c.ctx.Done())
			continue
		}
		if se == nil {
			return nil
		}
		se.Addr = cn.addr()
		switch se.Code {
		case CodeUnavailable, CodeShuttingDown:
			last = se
			c.moveOn(cn)
		case CodeOutcomeUnknown, CodeTimeout:
			if !idempotent {
				maybeApplied = true
				return fail(fmt.Errorf("%s: %w", op, se))
			}
			last = se
		default:
			return fail(fmt.Errorf("%s: %w", op, se))
		}
		b.wait(ctx, c.ctx.Done())
	}
}

// Members returns the cluster's configuration and the leader's id (0 if
// unknown), as of the answering node's applied log.
func (c *Client) Members(ctx context.Context) (leader uint64, members []Member, err error) {
	err = c.adminCall(ctx, "members", nil, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.Members(ctx, nil)
		defer release()
		res, err := f.Struct()
		if se, err := answer(res, err); se != nil || err != nil {
			return se, err
		}
		list, err := res.Members()
		if err != nil {
			return nil, err
		}
		members = make([]Member, list.Len())
		for i := range members {
			m := list.At(i)
			addr, _ := m.Address()
			members[i] = Member{ID: m.Id(), Address: addr, Learner: m.Learner(), Promoting: m.Promoting(), Match: m.Match()}
		}
		leader = res.Leader()
		return nil, nil
	})
	if err != nil {
		return 0, nil, err
	}
	return leader, members, nil
}

// adminResult is what the generated admin results share.
type adminResult interface {
	HasError() bool
	Error() (schema.Error, error)
}

// answer copies the error out of an admin call's results (before they
// are released).
func answer[R adminResult](res R, err error) (*ServerError, error) {
	if err != nil {
		return nil, err
	}
	if res.HasError() {
		e, err := res.Error()
		if err != nil {
			return nil, err
		}
		return serverError(e, ""), nil
	}
	return nil, nil
}

// AddMember adds node id, reachable at addr, to the cluster. The node must
// start with an empty data directory (raftnode --join). A learner gets the
// log without a vote; promote it once it caught up.
func (c *Client) AddMember(ctx context.Context, id uint64, addr string, learner bool) error {
	if id == 0 || addr == "" {
		return errors.New("add member: the id must be non-zero and the address non-empty")
	}
	return c.adminCall(ctx, fmt.Sprintf("add member %d", id), &memberOutcome, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
			p.SetId(id)
			p.SetLearner(learner)
			return p.SetAddress(addr)
		})
		defer release()
		return answer(f.Struct())
	})
}

// PromoteMember turns learner id into a voter.
func (c *Client) PromoteMember(ctx context.Context, id uint64) error {
	return c.adminCall(ctx, fmt.Sprintf("promote member %d", id), &memberOutcome, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.PromoteMember(ctx, func(p schema.Admin_promoteMember_Params) error {
			p.SetId(id)
			return nil
		})
		defer release()
		return answer(f.Struct())
	})
}

// RemoveMember removes node id from the cluster; the removed node stops.
func (c *Client) RemoveMember(ctx context.Context, id uint64) error {
	return c.adminCall(ctx, fmt.Sprintf("remove member %d", id), &memberOutcome, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error {
			p.SetId(id)
			return nil
		})
		defer release()
		return answer(f.Struct())
	})
}

// TransferLeadership hands leadership to voter to (0: the most up-to-date
// other voter) and returns once it has moved.
func (c *Client) TransferLeadership(ctx context.Context, to uint64) error {
	return c.adminCall(ctx, "transfer leadership", &transferOutcome, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error {
			p.SetTo(to)
			return nil
		})
		defer release()
		return answer(f.Struct())
	})
}

// Snapshot makes the node the client is connected to snapshot its state
// now, and returns the snapshot's index.
func (c *Client) Snapshot(ctx context.Context) (index uint64, err error) {
	err = c.adminCall(ctx, "snapshot", nil, func(ctx context.Context, adm schema.Admin) (*ServerError, error) {
		f, release := adm.Snapshot(ctx, nil)
		defer release()
		res, err := f.Struct()
		se, err := answer(res, err)
		if err == nil && se == nil {
			index = res.Index()
		}
		return se, err
	})
	return index, err
}
