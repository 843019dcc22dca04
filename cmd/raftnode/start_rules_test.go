package main

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/raftnode"
)

// securityOf parses args and applies the security flags and start rules.
func securityOf(t *testing.T, args ...string) (nodeSecurity, error) {
	t.Helper()
	var f flags
	if err := newCommandFor(&f).ParseFlags(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	peers, err := f.validate()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return f.security(peers, hclog.NewNullLogger())
}

func writeSecret(t *testing.T, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(strings.Repeat("0123456789", 4)), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// A node that other machines can reach, or that has peers, must
// authenticate them; the refusal names every way out.
func TestUnauthenticatedExposedOrClusteredNodeRefusesToStart(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "0.0.0.0:7000", "--advertise", "192.0.2.1:7000"},
		{"--listen", "192.0.2.1:7000"},
		{"--id", "1", "--listen", "127.0.0.1:7001", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002"},
		{"--id", "2", "--listen", "127.0.0.1:7002", "--peers", "1=127.0.0.1:7001,2=127.0.0.1:7002", "--join"},
	} {
		_, err := securityOf(t, args...)
		if err == nil {
			t.Errorf("%v: started without authentication", args)
			continue
		}
		for _, want := range []string{"--cluster-secret-file", "--tls-ca", "--insecure"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v: %q does not name %s", args, err, want)
			}
		}
	}
}

// The quickstart (one node on loopback) needs no credential; --insecure
// lets any node run without one; a secret makes anonymous connections
// hold nothing.
func TestStartRulesLetTheQuickstartAndExplicitChoicesThrough(t *testing.T) {
	s, err := securityOf(t)
	if err != nil || s.secure() || s.Anonymous != raftnode.AccessDefault {
		t.Fatalf("quickstart: %+v, %v", s, err)
	}
	if _, err := securityOf(t, "--listen", "0.0.0.0:7000", "--advertise", "192.0.2.1:7000", "--insecure"); err != nil {
		t.Fatalf("--insecure: %v", err)
	}
	secret := writeSecret(t, 0o600)
	s, err = securityOf(t, "--peers", "1=127.0.0.1:7000,2=127.0.0.1:7001", "--cluster-secret-file", secret)
	if err != nil || !s.secure() || len(s.ClusterSecrets) != 1 || s.OperatorTokenFile == "" {
		t.Fatalf("with a secret: %+v, %v", s, err)
	}
	s, err = securityOf(t, "--cluster-secret-file", secret, "--cluster-secret-file", writeSecret(t, 0o400))
	if err != nil || len(s.ClusterSecrets) != 2 {
		t.Fatalf("two secrets (rotation): %+v, %v", s, err)
	}
	if _, err := securityOf(t, "--cluster-secret-file", secret, "--anonymous", "all"); err == nil || !strings.Contains(err.Error(), "never hold the Raft capability") {
		t.Fatalf("--anonymous all with a secret: %v", err)
	}
	if _, err := securityOf(t, "--cluster-secret-file", writeSecret(t, 0o644)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("a world-readable secret: %v", err)
	}
	if _, err := securityOf(t, "--anonymous", "everyone"); err == nil || !strings.Contains(err.Error(), "none, client, operator") {
		t.Fatalf("a bad --anonymous: %v", err)
	}
}

// With mutual TLS the node's own certificate must name the peer role.
func TestMutualTLSNeedsAPeerCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.pem", ca.CertPEM)
	for _, tc := range []struct {
		role string
		ok   bool
	}{{"peer", true}, {"client", false}, {"operator", false}} {
		c, err := ca.Issue(tc.role, "node1", []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := write(tc.role+".pem", c.CertPEM), write(tc.role+"-key.pem", c.KeyPEM)
		s, err := securityOf(t, "--tls-cert", cert, "--tls-key", key, "--tls-ca", caFile, "--peers", "1=127.0.0.1:7000,2=127.0.0.1:7001")
		if tc.ok != (err == nil) {
			t.Fatalf("node certificate with role %s: %v", tc.role, err)
		}
		if err != nil && !strings.Contains(err.Error(), "peer role") {
			t.Fatalf("role %s: %v does not say the peer role is needed", tc.role, err)
		}
		if tc.ok && (!s.CertRoles || s.serverTLS == nil || s.peerTLS == nil) {
			t.Fatalf("mutual TLS not configured: %+v", s)
		}
	}
}

// With mutual TLS, a node certificate that names a node id must name
// this node's --id: its peers bind what it says to that id.
func TestMutualTLSNeedsTheNodesOwnCertificate(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	malformed, err := url.Parse("capraft:node:02")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		spec   pki.Spec
		errHas []string // nil: it starts
	}{
		{"its own id", pki.Spec{NodeID: 2}, nil},
		{"no id (from another CA)", pki.Spec{}, nil},
		{"another node's id", pki.Spec{NodeID: 3}, []string{"node 3's certificate", "--id 2"}},
		{"a malformed id", pki.Spec{URIs: []*url.URL{malformed}}, []string{"capraft:node:02", "is not a node id"}},
	} {
		tc.spec.CommonName, tc.spec.Roles, tc.spec.Hosts = "node2", []string{"peer"}, []string{"127.0.0.1"}
		tc.spec.NotAfter = time.Now().Add(time.Hour)
		kp, err := ca.IssueSpec(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
		if err := kp.Write(cert, key, true); err != nil {
			t.Fatal(err)
		}
		_, err = securityOf(t, "--id", "2", "--tls-cert", cert, "--tls-key", key, "--tls-ca", caFile, "--peers", "1=127.0.0.1:7000,2=127.0.0.1:7001")
		switch {
		case tc.errHas == nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.errHas != nil && err == nil:
			t.Errorf("%s: the node starts", tc.name)
		case err != nil:
			for _, want := range tc.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%s: %q does not say %q", tc.name, err, want)
				}
			}
		}
	}
}
