// Package rpc serves and dials Cap'n Proto capabilities over TCP.
//
// It is shaped like net/http: a Server configured by a Config, Serve on a
// net.Listener, ListenAndServe, Shutdown(ctx) to drain and Close to stop at
// once; Dial returns a ClientConn whose Node is the remote bootstrap
// capability.
//
// What it adds to go-capnp's rpc.Conn, and why:
//
//   - One bootstrap object per connection (Config.Bootstrap is called for
//     each). go-capnp runs the calls of one capability object one at a time,
//     so a shared object would funnel every connection through one goroutine.
//   - A transport codec that refuses frames larger than MaxMessageSize before
//     allocating them (go-capnp v3.1.0-alpha.2 allocates whatever size a frame
//     header claims), telling the sender why in an Abort; that does not send
//     a frame over the limit (the call fails with a *MessageTooLargeError, or,
//     for results, the caller gets an exception that says so, and the
//     connection carries on); and read deadlines: a new connection must deliver its
//     first frame within HandshakeTimeout, a started frame must complete
//     within FrameTimeout, and a connection silent for IdleTimeout is closed.
//     Writes that make no progress for WriteTimeout fail, so a peer that
//     stops reading cannot pin a connection's goroutines forever.
//   - MaxConns bounds file descriptors and per-connection memory, and
//     clients cannot take the slots peers need. PeerConns of the slots are
//     kept for connections the node marks as peers (ConnInfo.MarkPeer);
//     clients, idle or busy and however many, hold the others, and a new
//     connection that finds them full replaces the client connection that
//     has been silent longest (at least EvictIdle, and no call in flight),
//     or else is let into a free reserved slot on probation: it keeps it if
//     it becomes a peer within HandshakeTimeout. So a peer that connects
//     finds a slot while fewer than PeerConns connections are peers or on
//     probation. Not guaranteed: until peers authenticate, MarkPeer is only
//     as trustworthy as its caller, and a flood of new connections can keep
//     the reserve full of probationers, each for up to a handshake timeout.
//   - Every capability a connection hands out is exported through the
//     connection's Exporter, which recovers a panicking handler (the call
//     fails, the node lives on) and counts calls in flight so Shutdown can
//     let them finish.
//   - Connection identity: with mutual TLS (ServerTLS, ClientTLS) a
//     handler reads the role a verified client certificate names
//     (ConnInfo.Certificate, from its Subject OU: peer, operator or
//     client). Without TLS, members prove the cluster secret by
//     challenge and response (NodeProof, MemberProof, LoadClusterSecret).
//     What a role grants is the node's business.
//
// A bad connection is that connection's problem only: it is logged and
// closed, and every other connection carries on.
package rpc
