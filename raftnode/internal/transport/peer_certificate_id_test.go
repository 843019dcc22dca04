package transport

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/internal/pki"
)

// Dialing member 2, a server certificate that names another node is
// refused; one naming node 2, or no node, is accepted.
func TestDialRefusesACertificateNamingAnotherNode(t *testing.T) {
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(node uint64) *x509.Certificate {
		kp, err := ca.IssueSpec(pki.Spec{CommonName: "n", Roles: []string{"peer"}, Hosts: []string{"127.0.0.1"}, NodeID: node, NotAfter: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	verify := expectNode(&tls.Config{}, 2).VerifyConnection
	for _, tc := range []struct {
		node uint64
		ok   bool
	}{{2, true}, {0, true}, {3, false}} {
		err := verify(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf(tc.node)}})
		if tc.ok != (err == nil) {
			t.Fatalf("certificate naming node %d: %v", tc.node, err)
		}
		if err != nil && !strings.Contains(err.Error(), "names node 3") {
			t.Fatalf("refusal %q does not name the node the certificate names", err)
		}
	}
}
