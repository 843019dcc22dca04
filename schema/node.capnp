@0xebec4b688efeb28f;
# Node: the bootstrap capability every connection receives. Its methods hand
# out the node's services, so a client pipelines straight through it:
# bootstrap.echo().ping("x") is a single network round trip.

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "echo.capnp".Echo;
using import "raft.capnp".Raft;
using import "kv.capnp".KV;
using import "admin.capnp".Admin;
using import "admin.capnp".NodeStatus;

interface Node {
  echo @0 () -> (echo :Echo);
  raft @1 () -> (raft :Raft);
  info @2 () -> (info :NodeInfo);
  # kv is the replicated key-value store (see kv.capnp).
  kv @3 () -> (kv :KV);
  # status reports this node's view of the cluster.
  status @4 () -> (status :NodeStatus);
  # admin changes membership and leadership.
  admin @5 () -> (admin :Admin);
}

struct NodeInfo {
  id @0 :UInt64;
  version @1 :Text;   # build version of the raftnode binary
  listen @2 :Text;    # the address the node serves on
}
