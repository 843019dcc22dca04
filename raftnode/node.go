package raftnode

import (
	"context"
	"errors"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Config configures a Node.
type Config struct {
	// ID is the node's id in its cluster (non-zero).
	ID uint64
	// Version is the build version reported by Node.info.
	Version string
	// Advertise is the address clients and peers use to reach this node,
	// reported by Node.info.
	Advertise string
	// Echo configures the echo hub (listener queue length and batching).
	Echo echo.HubConfig
	// Logger is the node's logger; components log through named
	// sub-loggers of it.
	Logger hclog.Logger
}

// Node is one consensus node's services. Bootstrap hands each connection
// its own Node capability; Close stops the services.
type Node struct {
	cfg Config
	log hclog.Logger
	hub *echo.Hub
}

// New returns a node ready to serve.
func New(cfg Config) (*Node, error) {
	if cfg.ID == 0 {
		return nil, errors.New("raftnode: node id must be non-zero")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Echo.Logger == nil {
		cfg.Echo.Logger = cfg.Logger.Named("echo")
	}
	return &Node{cfg: cfg, log: cfg.Logger, hub: echo.NewHub(cfg.Echo)}, nil
}

// Bootstrap returns the Node capability for one connection. It is meant
// for rpc.Config.Bootstrap.
func (n *Node) Bootstrap(conn *rpc.ConnInfo) capnp.Client {
	impl := &nodeServer{node: n, ex: conn.Exporter}
	return conn.Exporter.Export(schema.Node_Methods(nil, impl), impl, nil)
}

// Close ends every echo subscription and waits for their senders.
func (n *Node) Close() { n.hub.Close() }

// nodeServer is the bootstrap capability of one connection.
type nodeServer struct {
	node *Node
	ex   *rpc.Exporter
}

// Echo returns an Echo capability for this connection.
func (s *nodeServer) Echo(_ context.Context, call schema.Node_echo) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetEcho(echo.NewCapability(s.node.hub, s.ex))
}

// errRaftNotServed: the Raft peer protocol is specified in the schema but
// not served by this build yet.
var errRaftNotServed = exc.New(exc.Unimplemented, "", "raft: this node does not serve the Raft peer protocol yet")

// Raft returns the Raft peer capability.
func (s *nodeServer) Raft(context.Context, schema.Node_raft) error {
	return errRaftNotServed
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
	info.SetId(s.node.cfg.ID)
	if err := info.SetVersion(s.node.cfg.Version); err != nil {
		return err
	}
	return info.SetListen(s.node.cfg.Advertise)
}

var errKVNotServed = exc.New(exc.Unimplemented, "", "kv: this node does not serve the key-value store yet")

// KV returns the key-value capability.
func (s *nodeServer) Kv(context.Context, schema.Node_kv) error { return errKVNotServed }

// Status reports the node's view of the cluster.
func (s *nodeServer) Status(context.Context, schema.Node_status) error { return errKVNotServed }

// Admin returns the membership capability.
func (s *nodeServer) Admin(context.Context, schema.Node_admin) error { return errKVNotServed }
