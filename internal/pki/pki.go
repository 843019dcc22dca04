// Package pki makes a small certificate authority for a capraft cluster:
// a CA and the certificates it issues to nodes (role peer), operators and
// clients, as PEM, with ECDSA P-256 keys. Tests use it to build mutual TLS
// set-ups, and `raftctl certs create` to make a test or development
// cluster's certificates. A certificate's role is its Subject
// OrganizationalUnit, as package rpc reads it (rpc.CertificateRole).
//
// A node's certificate also names its node id, as a URI subject
// alternative name of the form
//
//	capraft:node:<id>
//
// with <id> the node id in decimal, without sign or leading zeros
// (capraft:node:7). A member's certificate that names its id speaks for
// that member alone (rpc.CertificateNodeID reads it).
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Backdate is how far before "now" a certificate's validity starts, so a
// machine whose clock is a little behind still accepts it.
const Backdate = 5 * time.Minute

// Organization is the Subject Organization of every certificate made here.
const Organization = "capraft"

// CA is a certificate authority: its certificate and private key.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its key (PKCS #8), PEM
	// encoded, as written to ca.pem and ca-key.pem.
	CertPEM, KeyPEM []byte

	key *ecdsa.PrivateKey
}

// KeyPair is a certificate the CA issued and its private key.
type KeyPair struct {
	// Cert is the issued certificate.
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its key (PKCS #8), PEM
	// encoded.
	CertPEM, KeyPEM []byte
}

// NewCA makes a CA named name (its Subject CommonName) valid for
// validity from now (less Backdate). It can issue leaf certificates only
// (no intermediate CAs).
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, errors.New("pki: a CA needs a name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("pki: CA validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{Organization}},
		NotBefore:             now.Add(-Backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	return caFromDER(der, key)
}

// caFromDER makes a CA of its certificate (DER) and key.
func caFromDER(der []byte, key *ecdsa.PrivateKey) (*CA, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: encodeCert(der), KeyPEM: keyPEM, key: key}, nil
}

// LoadCA reads a CA from its certificate and key, PEM encoded (as NewCA
// makes them), to issue more certificates with it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	der, err := decodePEM(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("pki: CA certificate: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: CA key: %w", err)
	}
	ca, err := caFromDER(der, key)
	if err != nil {
		return nil, err
	}
	if !ca.Cert.IsCA {
		return nil, fmt.Errorf("pki: %q is not a CA certificate", ca.Cert.Subject.CommonName)
	}
	if !key.PublicKey.Equal(ca.Cert.PublicKey) {
		return nil, errors.New("pki: the CA key does not belong to the CA certificate")
	}
	return ca, nil
}

// Pool returns a certificate pool holding the CA certificate alone, to
// verify what the CA issued.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Spec describes a certificate to issue.
type Spec struct {
	// CommonName is the Subject CommonName.
	CommonName string
	// Roles are the Subject OrganizationalUnit values: "peer", "operator"
	// or "client" name the holder's role. None (or only unrecognised
	// ones) gives a certificate with no role; tests use several to check
	// that an ambiguous certificate grants nothing.
	Roles []string
	// Hosts are the names the certificate is valid for as a server: each
	// an IP address or a DNS name. A certificate with hosts can serve
	// (as a node does) as well as authenticate a client.
	Hosts []string
	// NodeID, if not zero, is the node id the certificate names, as the
	// URI SAN capraft:node:<id> (see NodeURI): a node's certificate
	// speaks only for its own id.
	NodeID uint64
	// URIs are more URI SANs, after NodeID's. Tests use them to check
	// that a certificate naming two node ids, or a malformed one, grants
	// no peer role.
	URIs []*url.URL
	// NotBefore and NotAfter bound its validity. A zero NotBefore means
	// now less Backdate. NotAfter is cut to the CA's own NotAfter.
	NotBefore, NotAfter time.Time
}

// NodeURI is the URI SAN naming node id: capraft:node:<id>.
func NodeURI(id uint64) *url.URL {
	return &url.URL{Scheme: "capraft", Opaque: "node:" + strconv.FormatUint(id, 10)}
}

// Issue issues a certificate for role (the Subject OU; "" for none) and
// commonName, valid for hosts (IP addresses or DNS names; may be empty for
// a client-only certificate) for validity from now.
func (ca *CA) Issue(role, commonName string, hosts []string, validity time.Duration) (*KeyPair, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("pki: validity %v is not positive", validity)
	}
	var roles []string
	if role != "" {
		roles = []string{role}
	}
	return ca.IssueSpec(Spec{CommonName: commonName, Roles: roles, Hosts: hosts, NotAfter: time.Now().Add(validity)})
}

// IssueSpec issues the certificate s describes.
func (ca *CA) IssueSpec(s Spec) (*KeyPair, error) {
	if s.CommonName == "" {
		return nil, errors.New("pki: a certificate needs a common name")
	}
	ips, dns, err := parseHosts(s.Hosts)
	if err != nil {
		return nil, err
	}
	if s.NotBefore.IsZero() {
		s.NotBefore = time.Now().Add(-Backdate)
	}
	if time.Now().After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("pki: the CA %q expired at %s: make a new CA (and certificates)",
			ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.RFC3339))
	}
	if s.NotAfter.After(ca.Cert.NotAfter) {
		s.NotAfter = ca.Cert.NotAfter
	}
	if !s.NotAfter.After(s.NotBefore) {
		return nil, fmt.Errorf("pki: certificate for %q would end (%s) before it starts (%s)",
			s.CommonName, s.NotAfter.Format(time.RFC3339), s.NotBefore.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usage := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if len(ips)+len(dns) > 0 {
		usage = append(usage, x509.ExtKeyUsageServerAuth)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         s.CommonName,
			Organization:       []string{Organization},
			OrganizationalUnit: s.Roles,
		},
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usage,
		BasicConstraintsValid: true,
		IPAddresses:           ips,
		DNSNames:              dns,
	}
	if s.NodeID != 0 {
		tmpl.URIs = []*url.URL{NodeURI(s.NodeID)}
	}
	tmpl.URIs = append(tmpl.URIs, s.URIs...)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: issue certificate for %q: %w", s.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse issued certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Cert: cert, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// TLSCertificate returns the pair as a tls.Certificate, to present in a
// TLS handshake.
func (kp *KeyPair) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: %w", err)
	}
	return c, nil
}

// parseHosts splits hosts into IP addresses and DNS names.
func parseHosts(hosts []string) ([]net.IP, []string, error) {
	var ips []net.IP
	var dns []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := checkDNSName(h); err != nil {
			return nil, nil, err
		}
		dns = append(dns, h)
	}
	return ips, dns, nil
}

// checkDNSName accepts a host name of letters, digits, hyphens and dots
// (and a leading "*." wildcard), and refuses what is plainly something
// else: an empty name, a host:port, a URL.
func checkDNSName(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(h) > 253 {
		return fmt.Errorf("pki: host %q is neither an IP address nor a DNS name", h)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("pki: host %q is neither an IP address nor a DNS name", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("pki: host %q is neither an IP address nor a DNS name (give a host without port or scheme)", h)
			}
		}
	}
	return nil
}

// newSerial returns a random 128-bit serial number, as RFC 5280 allows
// (at most 20 octets) and browsers' CA rules ask (at least 64 random
// bits).
func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return s, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseKey reads an ECDSA private key, PKCS #8 ("PRIVATE KEY", as this
// package writes) or SEC 1 ("EC PRIVATE KEY", as openssl ecparam does).
func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	if der, err := decodePEM(data, "EC PRIVATE KEY"); err == nil {
		return x509.ParseECPrivateKey(der)
	}
	der, err := decodePEM(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T; want an ECDSA key", k)
	}
	return key, nil
}

// decodePEM returns the first PEM block of type typ in data.
func decodePEM(data []byte, typ string) ([]byte, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("no PEM block of type %s", typ)
		}
		if b.Type == typ {
			return b.Bytes, nil
		}
	}
}
