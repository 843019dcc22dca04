package rpc_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

func TestCertificateRoleIsTheOneRoleItsOUNames(t *testing.T) {
	cases := []struct {
		ous  []string
		want rpc.Role
		why  string // in CheckCertificateRole's error, if it has no role
	}{
		{[]string{"peer"}, rpc.RolePeer, ""},
		{[]string{"operator"}, rpc.RoleOperator, ""},
		{[]string{"client"}, rpc.RoleClient, ""},
		{[]string{"engineering", "client"}, rpc.RoleClient, ""},
		{[]string{"operator", "operator"}, rpc.RoleOperator, ""},
		{nil, rpc.RoleNone, "names no role"},
		{[]string{"Peer"}, rpc.RoleNone, "names no role"},
		{[]string{"admin"}, rpc.RoleNone, "names no role"},
		{[]string{"peer", "client"}, rpc.RoleNone, "more than one role"},
		{[]string{"client", "operator"}, rpc.RoleNone, "more than one role"},
	}
	for _, c := range cases {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "x", OrganizationalUnit: c.ous}}
		if got := rpc.CertificateRole(cert); got != c.want {
			t.Errorf("OU %q: role %v, want %v", c.ous, got, c.want)
		}
		_, err := rpc.CheckCertificateRole(cert)
		switch {
		case c.why == "" && err != nil:
			t.Errorf("OU %q: CheckCertificateRole: %v", c.ous, err)
		case c.why != "" && (err == nil || !strings.Contains(err.Error(), c.why)):
			t.Errorf("OU %q: CheckCertificateRole error %v, want one saying %q", c.ous, err, c.why)
		}
	}
	if got := rpc.CertificateRole(nil); got != rpc.RoleNone {
		t.Errorf("nil certificate: role %v", got)
	}
	for r, want := range map[rpc.Role]string{rpc.RoleNone: "none", rpc.RoleClient: "client", rpc.RoleOperator: "operator", rpc.RolePeer: "peer", 9: "Role(9)"} {
		if r.String() != want {
			t.Errorf("Role(%d).String() = %q, want %q", uint8(r), r.String(), want)
		}
	}
}

func TestConnInfoCertificateIgnoresUnverifiedCertificates(t *testing.T) {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "mallory", OrganizationalUnit: []string{"peer"}}}
	for name, ci := range map[string]*rpc.ConnInfo{
		"plain":      {},
		"unverified": {TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}},
	} {
		if role, subject, ok := ci.Certificate(); ok || role != rpc.RoleNone || subject != "" {
			t.Errorf("%s: Certificate() = %v, %q, %v; want none", name, role, subject, ok)
		}
	}
	verified := &rpc.ConnInfo{TLS: &tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{cert},
		VerifiedChains:   [][]*x509.Certificate{{cert}},
	}}
	if role, subject, ok := verified.Certificate(); !ok || role != rpc.RolePeer || !strings.Contains(subject, "CN=mallory") {
		t.Errorf("verified: Certificate() = %v, %q, %v", role, subject, ok)
	}
}

func TestCertificateNodeIDReadsOneWellFormedNodeURI(t *testing.T) {
	uris := func(ss ...string) []*url.URL {
		var us []*url.URL
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatalf("url %q: %v", s, err)
			}
			us = append(us, u)
		}
		return us
	}
	cases := []struct {
		uris   []string
		id     uint64
		ok     bool
		errHas string
	}{
		{nil, 0, false, ""},
		{[]string{"spiffe://example.org/node/7", "https://node7.example"}, 0, false, ""},
		{[]string{"capraft:node:7"}, 7, true, ""},
		{[]string{"CAPRAFT:node:7"}, 7, true, ""},
		{[]string{"capraft:node:18446744073709551615"}, 18446744073709551615, true, ""},
		{[]string{"spiffe://example.org/x", "capraft:node:3", "capraft:node:3"}, 3, true, ""},
		{[]string{"capraft:node:3", "capraft:node:4"}, 0, false, "two node ids (3 and 4)"},
		{[]string{"capraft:node:0"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:007"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:+7"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:-1"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:7x"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:18446744073709551616"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:%37"}, 0, false, "is not a node id"},
		{[]string{"capraft:node:7?x=1"}, 0, false, "not of the form"},
		{[]string{"capraft:node:7#f"}, 0, false, "not of the form"},
		{[]string{"capraft://node/7"}, 0, false, "not of the form"},
		{[]string{"capraft:Node:7"}, 0, false, "not of the form"},
		{[]string{"capraft:member:7"}, 0, false, "not of the form"},
		// A malformed one beside a good one still makes it an error.
		{[]string{"capraft:node:7", "capraft:node:x"}, 0, false, "is not a node id"},
	}
	for _, c := range cases {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: "n", OrganizationalUnit: []string{"peer"}}, URIs: uris(c.uris...)}
		id, ok, err := rpc.CertificateNodeID(cert)
		if id != c.id || ok != c.ok {
			t.Errorf("URIs %q: id %d, ok %v; want %d, %v", c.uris, id, ok, c.id, c.ok)
		}
		switch {
		case c.errHas == "" && err != nil:
			t.Errorf("URIs %q: %v", c.uris, err)
		case c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas) || !strings.Contains(err.Error(), "capraft:node:<id>") && !strings.Contains(err.Error(), "its own id")):
			t.Errorf("URIs %q: error %v, want one saying %q and how to name an id", c.uris, err, c.errHas)
		}
	}
	if id, ok, err := rpc.CertificateNodeID(nil); id != 0 || ok || err != nil {
		t.Errorf("nil certificate: %d, %v, %v", id, ok, err)
	}
}

// What package pki writes is what CertificateNodeID reads, through a
// certificate's DER encoding.
func TestIssuedNodeCertificateNamesItsNodeID(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint64{1, 7, 1<<64 - 1} {
		kp, err := ca.IssueSpec(pki.Spec{CommonName: "n", Roles: []string{"peer"}, NodeID: want, NotAfter: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if id, ok, err := rpc.CertificateNodeID(kp.Cert); id != want || !ok || err != nil {
			t.Errorf("NodeID %d: read %d, %v, %v", want, id, ok, err)
		}
	}
	kp, err := ca.IssueSpec(pki.Spec{CommonName: "n", Roles: []string{"peer"}, NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok, err := rpc.CertificateNodeID(kp.Cert); ok || err != nil {
		t.Errorf("no NodeID: read %d, %v, %v", id, ok, err)
	}
}

// ConnInfo.CertificateNodeID reads the verified leaf alone.
func TestConnInfoCertificateNodeIDIgnoresUnverifiedCertificates(t *testing.T) {
	u, _ := url.Parse("capraft:node:7")
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: "mallory", OrganizationalUnit: []string{"peer"}}, URIs: []*url.URL{u}}
	for name, ci := range map[string]*rpc.ConnInfo{
		"plain":      {},
		"unverified": {TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}},
	} {
		if id, ok, err := ci.CertificateNodeID(); ok || id != 0 || err != nil {
			t.Errorf("%s: CertificateNodeID() = %d, %v, %v; want none", name, id, ok, err)
		}
	}
	verified := &rpc.ConnInfo{TLS: &tls.ConnectionState{
		PeerCertificates: []*x509.Certificate{cert},
		VerifiedChains:   [][]*x509.Certificate{{cert}},
	}}
	if id, ok, err := verified.CertificateNodeID(); id != 7 || !ok || err != nil {
		t.Errorf("verified: CertificateNodeID() = %d, %v, %v", id, ok, err)
	}
}

// identity is what the test Node's identity() reports of the connection's
// certificate (see testNode.Identity).
type identity struct {
	peer, operator, client bool
	subject                string
}

func identityOf(t *testing.T, cc *rpc.ClientConn) (identity, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, release := cc.Node().Identity(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return identity{}, err
	}
	id, err := res.Identity()
	if err != nil {
		return identity{}, err
	}
	subject, err := id.Subject()
	return identity{peer: id.Peer(), operator: id.Operator(), client: id.Client(), subject: subject}, err
}

func TestMutualTLSMapsEachCertificateToItsRole(t *testing.T) {
	p := rpctest.NewPKI(t)
	svc, _, addr := serve(t, rpc.Config{TLSConfig: p.ServerTLS(t)})

	cert := func(roles ...string) *tls.Certificate { c := p.Cert(t, roles...); return &c }
	cases := []struct {
		name string
		cert *tls.Certificate
		want identity
	}{
		{"peer", cert("peer"), identity{peer: true, subject: "CN=test-peer,OU=peer,O=capraft"}},
		{"operator", cert("operator"), identity{operator: true, subject: "CN=test-operator,OU=operator,O=capraft"}},
		{"client", cert("client"), identity{client: true, subject: "CN=test-client,OU=client,O=capraft"}},
		{"two roles", cert("peer", "client"), identity{subject: "CN=test-peer-client,OU=peer+OU=client,O=capraft"}},
		{"no role", cert(), identity{subject: "CN=test,O=capraft"}},
		{"no certificate", nil, identity{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cc := rpctest.Dial(t, addr, rpc.DialConfig{TLSConfig: p.ClientTLS(c.cert)})
			got, err := identityOf(t, cc)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("identity %+v, want %+v", got, c.want)
			}
			mustPing(t, echoOf(t, cc), "still served")
		})
	}
	if n := svc.bootstraps.Load(); n != int64(len(cases)) {
		t.Errorf("%d connections bootstrapped, want %d", n, len(cases))
	}
}

// TestMutualTLSRefusesBadClientCertificates checks that a certificate
// the cluster CA does not vouch for ends the connection at the handshake,
// before the server hands out anything.
func TestMutualTLSRefusesBadClientCertificates(t *testing.T) {
	p := rpctest.NewPKI(t)
	log, logs := rpctest.BufferLogger(0)
	svc, _, addr := serve(t, rpc.Config{TLSConfig: p.ServerTLS(t), Logger: log})

	other := rpctest.NewPKI(t)
	foreign := other.Cert(t, "peer")
	past := time.Now().Add(-48 * time.Hour)
	expired := p.CertSpec(t, pki.Spec{Roles: []string{"peer"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
	notYet := p.CertSpec(t, pki.Spec{Roles: []string{"peer"}, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	cases := []struct {
		name, logged string
		cert         tls.Certificate
	}{
		{"from another CA", "unknown authority", foreign},
		{"expired", "expired", expired},
		{"not yet valid", "not yet valid", notYet},
	}
	for _, c := range cases {
		for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(c.name+" "+tls.VersionName(version), func(t *testing.T) {
				cfg := p.ClientTLS(&c.cert)
				cfg.MaxVersion = version
				cc, err := rpc.Dial(context.Background(), addr, rpc.DialConfig{TLSConfig: cfg})
				if version == tls.VersionTLS12 {
					if err == nil || !strings.Contains(err.Error(), "TLS handshake") || !strings.Contains(err.Error(), "certificate") {
						t.Fatalf("dial error %v, want a TLS handshake error about the certificate", err)
					}
					return
				}
				// TLS 1.3: the client's side of the handshake ends before the
				// server has checked its certificate; the server's refusal
				// arrives as the connection's end.
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				if _, err = identityOf(t, cc); err == nil {
					t.Fatal("a call over the refused connection succeeded")
				}
			})
		}
		rpctest.Eventually(t, 5*time.Second, "the server logs why it refused: "+c.logged, func() bool {
			return strings.Contains(logs.String(), c.logged)
		})
	}
	if n := svc.bootstraps.Load(); n != 0 {
		t.Errorf("%d refused connections reached Bootstrap", n)
	}
}

func TestServerTLSNegotiatesTLS13AndRefusesOldVersions(t *testing.T) {
	p := rpctest.NewPKI(t)
	_, _, addr := serve(t, rpc.Config{TLSConfig: p.ServerTLS(t)})
	dial := func(cfg *tls.Config) (*tls.Conn, error) {
		d := &tls.Dialer{Config: cfg}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return c.(*tls.Conn), nil
	}
	c, err := dial(p.ClientTLS(nil))
	if err != nil {
		t.Fatal(err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(v))
	}
	c.Close()

	old := p.ClientTLS(nil)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := dial(old); err == nil {
		c.Close()
		t.Error("a TLS 1.1 client was served")
	}
}

// TestServerTLSWithoutClientCAsAsksForNoCertificate: without a cluster CA
// a client certificate would be verified against the system's roots, so
// none is asked for and none grants a role.
func TestServerTLSWithoutClientCAsAsksForNoCertificate(t *testing.T) {
	p := rpctest.NewPKI(t)
	_, _, addr := serve(t, rpc.Config{TLSConfig: rpc.ServerTLS(p.Cert(t, "peer"), nil)})
	cert := p.Cert(t, "operator")
	cc := rpctest.Dial(t, addr, rpc.DialConfig{TLSConfig: p.ClientTLS(&cert)})
	got, err := identityOf(t, cc)
	if err != nil {
		t.Fatal(err)
	}
	if got != (identity{}) {
		t.Errorf("identity %+v, want none", got)
	}
}
