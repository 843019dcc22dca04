package rpctest

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
)

// loopbackHosts are the hosts every certificate made here serves.
var loopbackHosts = []string{"127.0.0.1", "::1", "localhost"}

// PKI is a fresh cluster CA for a test, with helpers for mutual TLS.
type PKI struct {
	CA *pki.CA
}

// NewPKI makes a CA valid for a day.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := pki.NewCA("capraft test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca}
}

// Cert issues a certificate naming roles in its Subject OU ("peer",
// "operator", "client"; none or several for tests of what those grant),
// valid for a day and for loopback hosts, so it can serve as well.
func (p *PKI) Cert(t testing.TB, roles ...string) tls.Certificate {
	t.Helper()
	return p.CertSpec(t, pki.Spec{Roles: roles, NotAfter: time.Now().Add(24 * time.Hour)})
}

// CertSpec issues the certificate s describes; an empty CommonName
// becomes "test" and the roles, and no Hosts the loopback ones.
func (p *PKI) CertSpec(t testing.TB, s pki.Spec) tls.Certificate {
	t.Helper()
	if s.CommonName == "" {
		s.CommonName = strings.Join(append([]string{"test"}, s.Roles...), "-")
	}
	if s.Hosts == nil {
		s.Hosts = loopbackHosts
	}
	kp, err := p.CA.IssueSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// ServerTLS is a server configuration for mutual TLS (rpc.ServerTLS):
// it presents a fresh peer certificate and verifies client certificates
// against the CA.
func (p *PKI) ServerTLS(t testing.TB) *tls.Config {
	t.Helper()
	return rpc.ServerTLS(p.Cert(t, rpc.RolePeer.String()), p.CA.Pool())
}

// ClientTLS is a client configuration (rpc.ClientTLS) that trusts the CA
// and presents cert, or no certificate if cert is nil.
func (p *PKI) ClientTLS(cert *tls.Certificate) *tls.Config {
	return rpc.ClientTLS(p.CA.Pool(), cert)
}

// SelfSignedTLS returns a server config with a certificate from a fresh
// CA for 127.0.0.1, ::1 and localhost, which asks for no client
// certificate, and a client config that trusts that CA.
func SelfSignedTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	p := NewPKI(t)
	return rpc.ServerTLS(p.Cert(t, rpc.RolePeer.String()), nil), p.ClientTLS(nil)
}
