package e2e

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
)

// certValidity is how long the test certificates are good for: longer
// than any test runs.
const certValidity = time.Hour

// testPKI is a mutual-TLS cluster's CA and certificates, in files under
// a test's temporary directory: node certificates (role peer, for
// 127.0.0.1) issued as nodes need them, and an operator's and a client's.
type testPKI struct {
	dir    string
	ca     *pki.CA
	caFile string
	// operator and client are certificates for the roles they name.
	operator, client *pki.KeyPair

	mu    sync.Mutex
	nodes map[uint64][2]string // node id -> certificate and key files
}

// newTestPKI makes a CA and an operator's and a client's certificates.
func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := pki.NewCA("capraft e2e CA", certValidity)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca, nodes: map[uint64][2]string{}}
	p.caFile = filepath.Join(p.dir, "ca.pem")
	if err := ca.Write(p.caFile, filepath.Join(p.dir, "ca-key.pem"), false); err != nil {
		t.Fatal(err)
	}
	p.operator = p.issue(t, "operator", "e2e operator")
	p.client = p.issue(t, "client", "e2e client")
	return p
}

// issue returns a certificate from the CA naming role (none if empty).
func (p *testPKI) issue(t testing.TB, role, name string) *pki.KeyPair {
	t.Helper()
	kp, err := p.ca.Issue(role, name, nil, certValidity)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// nodeFiles returns node id's certificate and key files (role peer,
// naming the node's id, valid for 127.0.0.1), issuing them on first use.
// It may run on a goroutine that starts nodes, so a failure is reported
// with Errorf (the node then fails to start, naming the missing file).
func (p *testPKI) nodeFiles(t testing.TB, id uint64) (certFile, keyFile string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.nodes[id]; ok {
		return f[0], f[1]
	}
	certFile = filepath.Join(p.dir, fmt.Sprintf("node%d.pem", id))
	keyFile = filepath.Join(p.dir, fmt.Sprintf("node%d-key.pem", id))
	kp, err := p.ca.IssueSpec(pki.Spec{CommonName: fmt.Sprintf("node%d", id), Roles: []string{"peer"},
		Hosts: []string{"127.0.0.1"}, NodeID: id, NotAfter: time.Now().Add(certValidity)})
	if err == nil {
		err = kp.Write(certFile, keyFile, false)
	}
	if err != nil {
		t.Errorf("certificate for node %d: %v", id, err)
		return certFile, keyFile
	}
	p.nodes[id] = [2]string{certFile, keyFile}
	return certFile, keyFile
}

// clientTLS returns a client's TLS configuration: it verifies nodes
// against the CA and presents kp (nil: no certificate).
func (p *testPKI) clientTLS(t testing.TB, kp *pki.KeyPair) *tls.Config {
	t.Helper()
	if kp == nil {
		return rpc.ClientTLS(p.ca.Pool(), nil)
	}
	cert, err := kp.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	return rpc.ClientTLS(p.ca.Pool(), &cert)
}
