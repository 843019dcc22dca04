package services

import (
	"context"
	"slices"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// nodeServer is a Node capability of one connection: the bootstrap one,
// holding what the connection's identity grants, or one a login returned.
type nodeServer struct {
	sv    *Server
	conn  *rpc.ConnInfo
	grant grant
	// ex exports what this Node hands out; with a token's grant, every
	// call of those capabilities checks the token first.
	ex   *rpc.Exporter
	chal *challengeState
	// streams bounds the Raft streams of the connection, whichever of
	// its Raft capabilities opens them.
	streams *transport.StreamLimits
}

// export returns the Node capability itself, through the grant's
// Exporter: a Node a token granted stops answering with it.
func (s *nodeServer) export() capnp.Client {
	return s.ex.Export(schema.Node_Methods(nil, s), s, nil)
}

// Echo returns an Echo capability for this connection.
func (s *nodeServer) Echo(_ context.Context, call schema.Node_echo) error {
	if !s.grant.client {
		return needs("echo", needClient)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetEcho(echo.NewCapability(s.sv.hub, s.ex))
}

// Raft returns the Raft peer capability for this connection.
func (s *nodeServer) Raft(_ context.Context, call schema.Node_raft) error {
	if !s.grant.peer {
		return needs("raft", needPeer)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	sv := s.sv
	c := transport.NewServer(transport.ServerConfig{
		ClusterID: sv.clusterID,
		LocalID:   sv.cfg.ID,
		PeerID:    s.grant.memberID,
		Handler:   sv.cfg.Peers,
		Logger:    s.conn.Logger,
		Streams:   s.streams,
		ForwardKV: func() schema.KV { return schema.KV(sv.kvCapability(s.ex, kvScope{})) },
		ForwardAdmin: func() schema.Admin {
			impl := adminServer{sv}
			return schema.Admin(s.ex.Export(schema.Admin_Methods(nil, impl), impl, nil))
		},
	}, s.conn)
	return res.SetRaft(schema.Raft(c))
}

// Kv returns the key-value capability, confined as the grant says.
func (s *nodeServer) Kv(_ context.Context, call schema.Node_kv) error {
	if !s.grant.client {
		return needs("kv", needClient)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetKv(schema.KV(s.sv.kvCapability(s.ex, s.grant.scope)))
}

// Admin returns the membership capability.
func (s *nodeServer) Admin(_ context.Context, call schema.Node_admin) error {
	if !s.grant.operator {
		return needs("admin", needOperator)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	impl := adminServer{s.sv}
	return res.SetAdmin(schema.Admin(s.ex.Export(schema.Admin_Methods(nil, impl), impl, nil)))
}

// Info describes the node.
func (s *nodeServer) Info(_ context.Context, call schema.Node_info) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	info, err := res.NewInfo()
	if err != nil {
		return err
	}
	info.SetId(s.sv.cfg.ID)
	if err := info.SetVersion(s.sv.cfg.Version); err != nil {
		return err
	}
	return info.SetListen(s.sv.cfg.Advertise)
}

// Status reports this node's view of the cluster.
func (s *nodeServer) Status(ctx context.Context, call schema.Node_status) error {
	if !s.grant.client {
		return needs("status", needClient)
	}
	call.Go()
	st := s.sv.Status(ctx)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	dst, err := res.NewStatus()
	if err != nil {
		return err
	}
	dst.SetId(st.ID)
	dst.SetRole(st.Role)
	dst.SetTerm(st.Term)
	dst.SetLeader(st.Leader)
	dst.SetCommit(st.Commit)
	dst.SetApplied(st.Applied)
	dst.SetLastIndex(st.LastIndex)
	dst.SetSnapshotIndex(st.SnapshotIndex)
	dst.SetClusterId(s.sv.clusterID)
	dst.SetRevision(st.Revision)
	dst.SetSnapshotsInstalled(st.SnapshotsInstalled)
	if err := dst.SetVersion(s.sv.cfg.Version); err != nil {
		return err
	}
	if err := dst.SetStopReason(st.StopReason); err != nil {
		return err
	}
	return dst.SetAddress(s.sv.cfg.Advertise)
}

// NodeStatus is a node's view of itself and its cluster.
type NodeStatus struct {
	ID                      uint64
	Role                    schema.Role
	Term, Leader            uint64
	Commit, Applied         uint64
	LastIndex               uint64
	SnapshotIndex, Revision uint64
	StopReason              string
	// SnapshotsInstalled counts snapshots received from a leader since
	// the node started.
	SnapshotsInstalled uint64
	Config             raft.ConfState
	// Progress is the leader's view of each member (leader only).
	Progress map[uint64]raft.ProgressStatus
	// Incarnation identifies this node's storage (see
	// raft.Config.Incarnation); Config records the one counted for each
	// voter.
	Incarnation uint64
}

// Status reports the node's current state. It asks the loop and falls
// back to what is known without it when the loop does not answer in time
// (stopped or busy).
func (sv *Server) Status(ctx context.Context) NodeStatus {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	ds, err := sv.d.Status(ctx)
	if err == nil {
		cs := ds.Status
		st := NodeStatus{
			ID: sv.cfg.ID, Role: schemaRole(cs.Role), Term: cs.Term, Leader: cs.Lead,
			Commit: cs.Commit, Applied: sv.kv.AppliedIndex(), LastIndex: cs.LastIndex,
			SnapshotIndex: ds.SnapshotIndex, Revision: sv.kv.Revision(),
			Config: cs.Config, Progress: cs.Progress, SnapshotsInstalled: ds.SnapshotsInstalled,
			Incarnation: cs.Incarnation,
		}
		if slices.Contains(cs.Config.Learners, sv.cfg.ID) {
			st.Role = schema.Role_learner
		}
		return st
	}
	st := NodeStatus{ID: sv.cfg.ID, Role: schema.Role_stopped, Applied: sv.kv.AppliedIndex(), Revision: sv.kv.Revision()}
	if err := sv.d.Err(); err != nil {
		st.StopReason = err.Error()
	} else if !sv.d.Stopped() {
		st.Role, st.Leader = schema.Role_follower, sv.d.Leader()
		st.StopReason = "the node's loop did not answer within a second (overloaded?)"
	}
	return st
}

func schemaRole(r raft.StateType) schema.Role {
	switch r {
	case raft.StateLeader:
		return schema.Role_leader
	case raft.StateCandidate:
		return schema.Role_candidate
	case raft.StatePreCandidate:
		return schema.Role_preCandidate
	}
	return schema.Role_follower
}
