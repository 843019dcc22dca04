@0xebec4b688efeb28f;
# Node: the bootstrap capability every connection receives.
#
# A capability is a permission. The Node a connection receives holds
# exactly the authority its identity was granted, and nothing else is
# reachable through it:
#
#   - peer: a member of this cluster (a certificate from the cluster CA
#     naming the peer role, or proof of the cluster secret through
#     challenge/login). Grants raft.
#   - operator: membership, leadership, snapshots, tokens (an operator
#     certificate or token). Grants admin, and everything a client has.
#   - client: kv (possibly restricted to a key prefix and/or read-only),
#     echo and status (a client certificate or token).
#
# An unauthenticated connection holds what the node grants anonymous
# connections: everything on a node without security (the loopback
# quickstart, or --insecure with no cluster secret and no TLS), nothing
# but info, challenge and login otherwise (see --anonymous). Asking for a
# capability the Node does not hold fails with an exception whose message
# starts with "permissionDenied:" and names the credential that grants it;
# it never hangs and is never "unimplemented".
#
# The methods hand out the node's services, so a client pipelines straight
# through it: bootstrap.echo().ping("x") is one network round trip, and so
# is bootstrap.login(token).node.kv().put(...).

using Go = import "/go.capnp";
$Go.package("schema");
$Go.import("github.com/capraft/capraft/schema");

using import "echo.capnp".Echo;
using import "raft.capnp".Raft;
using import "kv.capnp".KV;
using import "admin.capnp".Admin;
using import "admin.capnp".NodeStatus;

interface Node {
  # echo: client authority.
  echo @0 () -> (echo :Echo);
  # raft: peer authority (see Raft in raft.capnp).
  raft @1 () -> (raft :Raft);
  # info: anyone; names the node (no cluster state).
  info @2 () -> (info :NodeInfo);
  # kv is the replicated key-value store (see kv.capnp): client authority,
  # restricted as the credential says.
  kv @3 () -> (kv :KV);
  # status reports this node's view of the cluster: client authority.
  status @4 () -> (status :NodeStatus);
  # admin changes membership and leadership and mints tokens: operator
  # authority.
  admin @5 () -> (admin :Admin);

  # login presents a credential and returns a Node holding exactly what it
  # grants (not added to what this Node holds). Pipeline on the result:
  # login(c).node.kv().put(...) is one round trip. A bad credential (a
  # malformed, tampered, expired or revoked token, a wrong proof) fails
  # with "permissionDenied: ..." saying which. A token's grant is checked
  # again on every call made through what it granted, so a connection
  # whose token is revoked or expires loses it at once. A node that cannot
  # check a token yet (it has no leader, or has not caught up with its
  # cluster, so it may lack the token's key) fails with an exception
  # starting "unavailable: " instead: try another node.
  login @6 (credential :Credential) -> (node :Node, identity :Identity);

  # challenge starts a member's proof of the cluster secret (mutual: the
  # node proves it first). The caller sends a fresh random nonce of 32
  # bytes; the node answers with its own nonce (32 bytes, usable for one
  # login on this connection) and
  #   nodeProof = HMAC-SHA256(secret, "capraft-node-v1" || clusterId ||
  #                           nodeId || clientNonce || serverNonce)
  # (integers 8 bytes big-endian), which the caller checks before it
  # trusts the node. It then calls login with a MemberProof. Fails with
  # "permissionDenied:" on a node without a cluster secret.
  challenge @7 (nonce :Data) -> (nonce :Data, nodeId :UInt64, clusterId :UInt64, nodeProof :Data);

  # identity describes what this Node holds.
  identity @8 () -> (identity :Identity);
}

struct NodeInfo {
  id @0 :UInt64;
  version @1 :Text;   # build version of the raftnode binary
  listen @2 :Text;    # the address the node serves on
}

struct Credential {
  union {
    token @0 :Text;
    # A token (see the token package: "capraft1." followed by base64url),
    # minted by an operator and possibly attenuated offline.
    member @1 :MemberProof;
    # A cluster member's proof of the cluster secret, answering the last
    # challenge on this connection.
  }
}

struct MemberProof {
  id @0 :UInt64;      # the member's node id: its Raft messages must come from it
  proof @1 :Data;
  # HMAC-SHA256(secret, "capraft-peer-v1" || clusterId || id ||
  #             nodeId || clientNonce || serverNonce): the challenge's
  # values, so a proof is good on one connection, once.
}

struct Identity {
  peer @0 :Bool;        # holds raft
  operator @1 :Bool;    # holds admin
  client @2 :Bool;      # holds kv, echo and status
  restricted @3 :Bool;  # kv is restricted to prefix (which may be empty: every key)
  prefix @4 :Data;
  readOnly @5 :Bool;    # kv refuses writes
  tokenId @6 :Text;     # the token logged in with, if any (its id, not the token)
  expires @7 :Int64;    # unix milliseconds after which the grant ends; 0: never
  memberId @8 :UInt64;  # peer: the member's node id, if the credential names one
  subject @9 :Text;     # a certificate's subject, if one was presented
}
