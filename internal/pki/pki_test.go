package pki

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func verify(ca *CA, kp *KeyPair, usage x509.ExtKeyUsage) error {
	_, err := kp.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestIssuedCertificateCarriesRoleHostsAndVerifiesAgainstItsCA(t *testing.T) {
	ca := newCA(t)
	kp, err := ca.Issue("peer", "node1", []string{"127.0.0.1", "::1", "node1.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := kp.Cert.Subject.OrganizationalUnit; !slices.Equal(got, []string{"peer"}) {
		t.Errorf("OU = %q, want [peer]", got)
	}
	if kp.Cert.Subject.CommonName != "node1" {
		t.Errorf("CN = %q", kp.Cert.Subject.CommonName)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if err := verify(ca, kp, usage); err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	for _, h := range []string{"127.0.0.1", "::1", "node1.example"} {
		if err := kp.Cert.VerifyHostname(h); err != nil {
			t.Errorf("host %s: %v", h, err)
		}
	}
	if err := kp.Cert.VerifyHostname("10.0.0.1"); err == nil {
		t.Error("certificate is valid for a host it was not issued for")
	}
	if _, err := kp.TLSCertificate(); err != nil {
		t.Errorf("TLSCertificate: %v", err)
	}

	other := newCA(t)
	if err := verify(other, kp, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("certificate verifies against a CA that did not issue it")
	}
}

func TestClientCertificateWithoutHostsCannotServe(t *testing.T) {
	ca := newCA(t)
	kp, err := ca.Issue("client", "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, kp, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("client auth: %v", err)
	}
	if err := verify(ca, kp, x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("a client certificate verifies for server auth")
	}
}

func TestIssueSpecBoundsValidity(t *testing.T) {
	ca := newCA(t)
	kp, err := ca.IssueSpec(Spec{CommonName: "long", NotAfter: time.Now().Add(100 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !kp.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the CA's %v", kp.Cert.NotAfter, ca.Cert.NotAfter)
	}
	if len(kp.Cert.Subject.OrganizationalUnit) != 0 {
		t.Errorf("no roles asked, got OU %q", kp.Cert.Subject.OrganizationalUnit)
	}

	past := time.Now().Add(-2 * time.Hour)
	expired, err := ca.IssueSpec(Spec{CommonName: "old", Roles: []string{"client"}, NotBefore: past, NotAfter: past.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, expired, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("expired certificate verifies")
	}

	if _, err := ca.IssueSpec(Spec{CommonName: "backwards", NotBefore: time.Now(), NotAfter: past}); err == nil {
		t.Error("a certificate that ends before it starts was issued")
	}
	if _, err := ca.Issue("client", "zero", nil, 0); err == nil {
		t.Error("a certificate with zero validity was issued")
	}
}

func TestIssueRefusesWhatIsNotAHost(t *testing.T) {
	ca := newCA(t)
	for _, h := range []string{"", "127.0.0.1:7000", "https://node1", "node 1", "-bad.example", "a..b"} {
		if _, err := ca.Issue("peer", "n", []string{h}, time.Hour); err == nil {
			t.Errorf("host %q accepted", h)
		}
	}
	for _, h := range []string{"localhost", "node-1.example.com", "*.example.com", "fe80::1"} {
		if _, err := ca.Issue("peer", "n", []string{h}, time.Hour); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	}
}

func TestLoadCAIssuesCertificatesTheOriginalVerifies(t *testing.T) {
	ca := newCA(t)
	loaded, err := LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := loaded.Issue("operator", "op", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(ca, kp, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("certificate from the loaded CA: %v", err)
	}

	other := newCA(t)
	if _, err := LoadCA(ca.CertPEM, other.KeyPEM); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("CA with another CA's key: err = %v", err)
	}
	if _, err := LoadCA(kp.CertPEM, kp.KeyPEM); err == nil || !strings.Contains(err.Error(), "not a CA") {
		t.Errorf("leaf certificate as a CA: err = %v", err)
	}
	if _, err := LoadCA([]byte("garbage"), ca.KeyPEM); err == nil {
		t.Error("garbage CA certificate accepted")
	}
	if _, err := LoadCA(ca.CertPEM, ca.CertPEM); err == nil {
		t.Error("a certificate accepted as the CA key")
	}
}

func TestWriteFileSetsModesAndRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	// A file that exists world-readable must end up 0600 once replaced.
	if err := os.WriteFile(keyPath, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(certPath, keyPath, false); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Write over an existing key: err = %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(keyPath); string(b) != "old" {
		t.Fatalf("refused write changed the file: %q", b)
	}
	if err := ca.Write(certPath, keyPath, true); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{certPath: CertMode, keyPath: KeyMode} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), want)
		}
	}
	certPEM, _ := os.ReadFile(certPath)
	keyPEM, _ := os.ReadFile(keyPath)
	if _, err := LoadCA(certPEM, keyPEM); err != nil {
		t.Errorf("written CA does not load: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want the two files alone", names)
	}
}

func TestNodeCertificateNamesItsIDAsAURI(t *testing.T) {
	ca := newCA(t)
	kp, err := ca.IssueSpec(Spec{CommonName: "node7", Roles: []string{"peer"}, Hosts: []string{"127.0.0.1"}, NodeID: 7, NotAfter: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.Cert.URIs) != 1 || kp.Cert.URIs[0].String() != "capraft:node:7" {
		t.Errorf("URIs %v, want [capraft:node:7]", kp.Cert.URIs)
	}
	if err := verify(ca, kp, x509.ExtKeyUsageServerAuth); err != nil {
		t.Errorf("a certificate with a node URI does not verify: %v", err)
	}
	if got := NodeURI(1<<64 - 1).String(); got != "capraft:node:18446744073709551615" {
		t.Errorf("NodeURI(max) = %q", got)
	}
	kp, err = ca.Issue("client", "alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(kp.Cert.URIs) != 0 {
		t.Errorf("a certificate without a NodeID has URIs %v", kp.Cert.URIs)
	}
}
