package transport

import (
	"context"
	"fmt"

	"capnproto.org/go/capnp/v3/exc"
	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// DiscoverInfo is what a node tells a peer that asks, before bootstrapping,
// whether a cluster already exists (schema Discover).
type DiscoverInfo struct {
	// Incarnation is the answering node's storage incarnation.
	Incarnation uint64
	// Configured says the node holds a configuration: it bootstrapped, or
	// a leader caught it up. A node asking before it bootstraps a new
	// cluster must not, if any peer is configured.
	Configured bool
	// Term and Commit are the node's current term and commit index.
	Term, Commit uint64
	// Voters are the configuration's voters with the incarnation each is
	// counted with (0: none recorded), when Configured.
	Voters []raft.MemberIncarnation
	// BootstrapOnly: Configured with nothing applied since the bootstrap
	// snapshot, so Voters is the new cluster's bootstrap configuration.
	BootstrapOnly bool
}

// Discoverer is implemented by a driver that answers Discover. The
// server refuses the call when the Handler does not implement it.
type Discoverer interface {
	// Discover describes this node to peer from (whose storage has the
	// given incarnation). It may block until ctx is done.
	Discover(ctx context.Context, from, incarnation uint64) (DiscoverInfo, error)
}

// restMethods returns the servers of the capability's blocking methods.
func (s *raftServer) restMethods() map[string]func(context.Context, *server.Call) error {
	return map[string]func(context.Context, *server.Call) error{
		"open":            s.open,
		"discover":        s.discover,
		"kv":              s.forwardKV,
		"admin":           s.forwardAdmin,
		"installSnapshot": s.installSnapshot,
	}
}

// discover serves Discover: it checks the header and asks the driver.
func (s *raftServer) discover(ctx context.Context, c *server.Call) error {
	call := schema.Discover_discover{Call: c}
	req, err := call.Args().Req()
	if err != nil {
		return s.refuse("discover", 0, fmt.Errorf("read DiscoverRequest: %w", err))
	}
	h, err := req.Header()
	hd, err := readHeader(h, err, s.cfg.ClusterID, s.cfg.LocalID)
	if err == nil {
		err = s.checkSender(hd.from)
	}
	if err != nil {
		return s.refuse("discover", hd.from, err)
	}
	d, ok := s.cfg.Handler.(Discoverer)
	if !ok {
		return s.refuse("discover", hd.from, fmt.Errorf("this node does not answer discover"))
	}
	info, err := d.Discover(ctx, hd.from, hd.inc)
	if err != nil {
		return fmt.Errorf("discover: %w", err)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	r, err := res.NewResp()
	if err != nil {
		return err
	}
	r.SetIncarnation(info.Incarnation)
	r.SetConfigured(info.Configured)
	r.SetTerm(info.Term)
	r.SetCommit(info.Commit)
	r.SetBootstrapOnly(info.BootstrapOnly)
	return setIncarnations(r.NewVoters, info.Voters)
}

// Discover asks peer id whether it holds a configuration (see
// DiscoverInfo), telling it this node's storage incarnation. It dials if
// needed and gives up when ctx is done.
func (t *Transport) Discover(ctx context.Context, id, incarnation uint64) (DiscoverInfo, error) {
	rc, err := t.Raft(ctx, id)
	if err != nil {
		return DiscoverInfo{}, err
	}
	defer rc.Release()
	f, rel := rc.Discover(ctx, func(p schema.Discover_discover_Params) error {
		r, err := p.NewReq()
		if err != nil {
			return err
		}
		h, err := r.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: t.cfg.ClusterID, from: t.cfg.LocalID, to: id, inc: incarnation})
		return nil
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return DiscoverInfo{}, fmt.Errorf("discover node %d: %w", id, err)
	}
	r, err := res.Resp()
	if err != nil {
		return DiscoverInfo{}, fmt.Errorf("discover node %d: read answer: %w", id, err)
	}
	info := DiscoverInfo{Incarnation: r.Incarnation(), Configured: r.Configured(), Term: r.Term(), Commit: r.Commit(), BootstrapOnly: r.BootstrapOnly()}
	if info.Voters, err = readIncarnations(r.Voters()); err != nil {
		return DiscoverInfo{}, fmt.Errorf("discover node %d: read voters: %w", id, err)
	}
	return info, nil
}

// errNoForward answers Raft.kv and Raft.admin on a capability that was
// given nothing to forward to.
var errNoForward = exc.New(exc.Failed, "", "raft: this node serves no forwarding capabilities")

// forwardKV serves Raft.kv: the unrestricted KV a member forwards to.
func (s *raftServer) forwardKV(_ context.Context, c *server.Call) error {
	if s.cfg.ForwardKV == nil {
		return errNoForward
	}
	res, err := schema.Raft_kv{Call: c}.AllocResults()
	if err != nil {
		return err
	}
	return res.SetKv(s.cfg.ForwardKV())
}

// forwardAdmin serves Raft.admin: the Admin a member forwards to.
func (s *raftServer) forwardAdmin(_ context.Context, c *server.Call) error {
	if s.cfg.ForwardAdmin == nil {
		return errNoForward
	}
	res, err := schema.Raft_admin{Call: c}.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAdmin(s.cfg.ForwardAdmin())
}
