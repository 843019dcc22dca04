package raftnode_test

import (
	"context"
	"crypto/tls"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// certNode is a one-node cluster that grants certificates' roles
// (mutual TLS), logging to a buffer at Debug, and its CA.
type certNode struct {
	c   *testCluster
	pki *rpctest.PKI
	log *rpctest.LogBuffer
}

func newCertNode(t *testing.T) *certNode {
	p := rpctest.NewPKI(t)
	_, buf := rpctest.BufferLogger(hclog.Debug)
	own := p.CertSpec(t, pki.Spec{Roles: []string{"peer"}, NodeID: 1, NotAfter: time.Now().Add(time.Hour)})
	c := newCluster(t, 1, func(cfg *raftnode.Config) {
		cfg.Security = raftnode.Security{CertRoles: true}
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Debug}).With("node", cfg.ID)
	}, rpc.ServerTLS(own, p.CA.Pool()))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node log:\n%s", buf)
		}
	})
	c.leader()
	return &certNode{c: c, pki: p, log: buf}
}

// raftWith connects with cert and returns the connection's Raft
// capability, or the error asking for it.
func (x *certNode) raftWith(t *testing.T, ctx context.Context, cert tls.Certificate) (schema.Raft, schema.Identity, error) {
	t.Helper()
	node := rpctest.Dial(t, x.c.addrs[1], rpc.DialConfig{TLSConfig: x.pki.ClientTLS(&cert)}).Node()
	idf, idrel := node.Identity(ctx, nil)
	t.Cleanup(idrel)
	res, err := idf.Struct()
	if err != nil {
		t.Fatalf("identity: %v", err)
	}
	id, err := res.Identity()
	if err != nil {
		t.Fatalf("identity: %v", err)
	}
	rf, rel := node.Raft(ctx, nil)
	t.Cleanup(rel)
	if _, err := rf.Struct(); err != nil {
		return schema.Raft{}, id, err
	}
	return rf.Raft(), id, nil // the accessor once: go-capnp deadlocks on a second call before resolution
}

// A peer certificate that names node 7 gets Raft bound to member 7, as a
// proof of the cluster secret naming 7 does: a message from any other id
// is refused.
func TestPeerCertificateNamingANodeIDSpeaksForThatMemberAlone(t *testing.T) {
	x := newCertNode(t)
	ctx := ctxT(t)
	cert := x.pki.CertSpec(t, pki.Spec{Roles: []string{"peer"}, NodeID: 7, NotAfter: time.Now().Add(time.Hour)})
	rc, id, err := x.raftWith(t, ctx, cert)
	if err != nil {
		t.Fatalf("raft with a peer certificate: %v", err)
	}
	if !id.Peer() || id.MemberId() != 7 {
		t.Errorf("identity: peer %v, member id %d; want peer bound to 7", id.Peer(), id.MemberId())
	}
	if err := discoverAs(ctx, rc, 7, 1); err != nil {
		t.Fatalf("discover as node 7: %v", err)
	}
	for _, from := range []uint64{2, 3} {
		if err := discoverAs(ctx, rc, from, 1); err == nil || !strings.Contains(err.Error(), "authenticated as node 7") {
			t.Fatalf("discover as node %d with node 7's certificate: %v, want a refusal", from, err)
		}
	}
}

// A peer certificate from a CA that writes no node ids still works, for
// any member; the node says so at Debug, once per connection.
func TestPeerCertificateWithoutNodeIDSpeaksForAnyMember(t *testing.T) {
	x := newCertNode(t)
	ctx := ctxT(t)
	rc, id, err := x.raftWith(t, ctx, x.pki.Cert(t, "peer"))
	if err != nil {
		t.Fatalf("raft with a peer certificate naming no id: %v", err)
	}
	if !id.Peer() || id.MemberId() != 0 {
		t.Errorf("identity: peer %v, member id %d; want an unbound peer", id.Peer(), id.MemberId())
	}
	for _, from := range []uint64{2, 7, 2} {
		if err := discoverAs(ctx, rc, from, 1); err != nil {
			t.Fatalf("discover as node %d: %v", from, err)
		}
	}
	if n := strings.Count(x.log.String(), "peer certificate names no node id"); n != 1 {
		t.Errorf("%d log lines say the certificate is unbound, want 1 for the one connection", n)
	}
}

// A peer certificate whose node id is ambiguous or malformed grants no
// Raft at all, and the node logs why.
func TestPeerCertificateWithABadNodeIDGrantsNoRaft(t *testing.T) {
	x := newCertNode(t)
	ctx := ctxT(t)
	for name, uri := range map[string]string{"a second id": "capraft:node:8", "a malformed id": "capraft:node:07"} {
		u, err := url.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		cert := x.pki.CertSpec(t, pki.Spec{Roles: []string{"peer"}, NodeID: 7, URIs: []*url.URL{u}, NotAfter: time.Now().Add(time.Hour)})
		_, id, err := x.raftWith(t, ctx, cert)
		wantRefused(t, "raft with a peer certificate naming "+name, err, "peer certificate")
		if id.Peer() {
			t.Errorf("%s: identity says peer", name)
		}
	}
	if n := strings.Count(x.log.String(), "its node id is malformed"); n != 2 {
		t.Errorf("%d log lines say why the certificates grant nothing, want 2", n)
	}
}
