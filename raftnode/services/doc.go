// Package services is a node's Cap'n Proto edge: the capabilities it
// serves to clients, operators and peers, in front of the driver
// (raftnode/driver), which it reaches only through the driver's API.
//
// # Authority
//
// Each connection gets its own Node capability (Server.Bootstrap) holding
// what the connection's identity was granted (authority.go): peers
// (proven by mutual TLS or a cluster-secret challenge) get Raft,
// operators Admin, clients KV (possibly confined to a prefix and/or
// read-only: kv_scope.go), Echo and status. A capability not held is
// refused with permissionDenied naming the credential it needs. Tokens
// are verified against the cluster's token keys, which live in the
// replicated store, and end when they expire or their revocation is
// applied.
//
// # Clients
//
// Any node accepts any call. The KV requests take one path (kvrequest.go):
// writes are proposed to the driver and linearizable reads wait for a read
// barrier, both through callbacks, and the last to arrive completes the
// request, mostly on the driver's loop, without a goroutine; linearizable
// reads are served by the receiving node once its state machine has
// applied the read index the leader confirmed, serializable reads at
// once. Writes are exactly-once through kv sessions: a write whose
// outcome is unknown is retried by the client with the same session and
// sequence number and applied at most once.
//
// A follower hands what needs the leader (writes, session and admin
// calls) to the leader's Raft capability, through one path with one
// error policy (forward.go). A handed-over request is never handed on
// again, so nodes that disagree about the leader cannot bounce it.
//
// Watches (kvwatch.go) are served by the receiving node from its own
// applied state, never forwarded: KV.watch confines the watched prefix to
// the capability's grant, waits for a read index when asked for a
// linearizable start, and hands the caller's Watcher to the node's watch
// hub (raftnode/watch), which reads the kv store's event history.
//
// # Errors
//
// What a client sees of an error (an ErrorCode and a message that says
// what to do) is decided in one place, errors.go: the driver's domain
// errors are mapped there; the services' own refusals and the answers of
// forwarded calls carry their code. The KV codec is the one the client
// shares (internal/kvwire).
package services
