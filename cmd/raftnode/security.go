package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
)

// nodeSecurity is what the security flags configure.
type nodeSecurity struct {
	raftnode.Security
	serverTLS *tls.Config // nil: plain TCP
	peerTLS   *tls.Config // for dialing peers; nil: plain TCP
}

// secure reports whether the node authenticates peers (and so anyone).
func (s *nodeSecurity) secure() bool {
	return len(s.ClusterSecrets) > 0 || s.CertRoles
}

// security reads the TLS, cluster secret and anonymous-access flags and
// applies the start rules: a node that can be reached from other machines,
// or that has peers, must authenticate them (a cluster secret or mutual
// TLS) unless --insecure says otherwise.
func (f *flags) security(peers map[uint64]string, log hclog.Logger) (nodeSecurity, error) {
	var s nodeSecurity
	if f.tlsCert != "" || f.tlsKey != "" {
		if f.tlsCert == "" || f.tlsKey == "" {
			return s, errors.New("--tls-cert and --tls-key go together: give both or neither")
		}
		cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
		if err != nil {
			return s, fmt.Errorf("load TLS key pair: %w", err)
		}
		var pool *x509.CertPool
		if f.tlsCA != "" {
			if pool, err = loadCA(f.tlsCA); err != nil {
				return s, err
			}
			// Mutual TLS: certificates from the cluster CA carry roles,
			// and this node's must name the peer role, or its peers
			// would refuse it as a member.
			leaf, err := x509.ParseCertificate(cert.Certificate[0])
			if err != nil {
				return s, fmt.Errorf("--tls-cert: %w", err)
			}
			if role, err := rpc.CheckCertificateRole(leaf); role != rpc.RolePeer {
				why := fmt.Sprintf("it names the %s role", role)
				if err != nil {
					why = err.Error()
				}
				return s, fmt.Errorf("--tls-cert %s: a node's certificate must name the peer role (Subject OU=peer), or its peers refuse it as a member: %s (make one with raftctl certs create)", f.tlsCert, why)
			}
			// Its peers bind what it says to the id it names: another
			// node's certificate would have every message refused.
			id, named, err := rpc.CertificateNodeID(leaf)
			if err != nil {
				return s, fmt.Errorf("--tls-cert %s: %w (its peers would refuse it as a member)", f.tlsCert, err)
			}
			if named && id != f.id {
				return s, fmt.Errorf("--tls-cert %s is node %d's certificate (URI SAN capraft:node:%d), but this node is --id %d: give the node its own certificate, or the --id its certificate names", f.tlsCert, id, id, f.id)
			}
			s.CertRoles = true
		}
		s.serverTLS = rpc.ServerTLS(cert, pool)
		s.peerTLS = rpc.ClientTLS(pool, &cert)
	} else if f.tlsCA != "" {
		return s, errors.New("--tls-ca needs --tls-cert and --tls-key")
	}
	for _, path := range f.clusterSecretFiles {
		secret, err := rpc.LoadClusterSecret(path)
		if err != nil {
			return s, fmt.Errorf("--cluster-secret-file: %w", err)
		}
		s.ClusterSecrets = append(s.ClusterSecrets, secret)
	}
	if f.anonymous != "" {
		a, err := raftnode.ParseAccess(f.anonymous)
		if err != nil {
			return s, fmt.Errorf("--anonymous: %w", err)
		}
		if a == raftnode.AccessAll && s.secure() {
			return s, errors.New("--anonymous all: anonymous connections never hold the Raft capability when a cluster secret or mutual TLS is configured; give none, client or operator")
		}
		s.Anonymous = a
	}

	exposed := !cli.IsLoopback(f.listen)
	clustered := len(peers) > 1 || f.join
	switch {
	case s.secure():
		s.OperatorTokenFile = filepath.Join(f.dataDir, "operator.token")
		if f.insecure && !f.metricsExposed() {
			log.Warn("--insecure has no effect: members prove themselves with the cluster secret or certificates, and every other connection needs a credential")
		}
	case (exposed || clustered) && !f.insecure:
		where := "has peers"
		if exposed {
			where = fmt.Sprintf("listens on %s, which other machines can reach", f.listen)
		}
		return s, fmt.Errorf("refusing to start without authentication: this node %s. "+
			"Give every member the same cluster secret (--cluster-secret-file FILE; make one with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE), "+
			"or mutual TLS (--tls-cert, --tls-key and --tls-ca; raftctl certs create makes a test CA), "+
			"or pass --insecure to run without: anyone who can connect could then read, write and reconfigure the cluster", where)
	case f.insecure:
		log.Warn("INSECURE: running without authentication (--insecure): anyone who can connect to this node can read, write and reconfigure the cluster, and forge Raft messages; use --cluster-secret-file or mutual TLS")
	}
	if f.anonymous != "" && s.Anonymous >= raftnode.AccessClient && s.secure() {
		log.Warn("connections without a credential hold client authority (--anonymous)", "access", s.Anonymous.String())
	}
	return s, nil
}

// loadCA reads a PEM file of CA certificates.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}
