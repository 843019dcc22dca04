package rpc

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"strings"
)

// Role is the authority a credential names: a cluster member (peer), an
// operator or a client. What each grants is the node's business (an
// operator is also a client there); here a Role is only what a
// certificate says.
type Role uint8

// Roles, weakest first. A certificate's role is its Subject
// OrganizationalUnit: "peer", "operator" or "client".
const (
	RoleNone Role = iota
	RoleClient
	RoleOperator
	RolePeer
)

// String returns the role's name as a certificate's OU spells it, or
// "none".
func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleClient:
		return "client"
	case RoleOperator:
		return "operator"
	case RolePeer:
		return "peer"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// roleOfOU maps an OrganizationalUnit to the role it names. Matching is
// exact: a role name is lower case.
func roleOfOU(ou string) Role {
	for _, r := range []Role{RoleClient, RoleOperator, RolePeer} {
		if ou == r.String() {
			return r
		}
	}
	return RoleNone
}

// CertificateRole returns the role c's Subject OrganizationalUnit names:
// RoleNone if no OU names one, and also if OUs name more than one role —
// an ambiguous certificate grants nothing (CheckCertificateRole says
// why). It does not verify c: use it on a verified chain's leaf.
func CertificateRole(c *x509.Certificate) Role {
	r, _ := CheckCertificateRole(c)
	return r
}

// CheckCertificateRole is CertificateRole with the reason a certificate
// has no role, for the caller to log: its OUs name none, or several.
func CheckCertificateRole(c *x509.Certificate) (Role, error) {
	if c == nil {
		return RoleNone, fmt.Errorf("no certificate")
	}
	role := RoleNone
	for _, ou := range c.Subject.OrganizationalUnit {
		r := roleOfOU(ou)
		switch {
		case r == RoleNone || r == role:
		case role == RoleNone:
			role = r
		default:
			return RoleNone, fmt.Errorf("certificate %q names more than one role in its OU (%s): a certificate must name exactly one",
				c.Subject.String(), strings.Join(c.Subject.OrganizationalUnit, ", "))
		}
	}
	if role == RoleNone {
		return RoleNone, fmt.Errorf("certificate %q names no role: its Subject OU must be %s, %s or %s",
			c.Subject.String(), RolePeer, RoleOperator, RoleClient)
	}
	return role, nil
}

// Certificate returns the role and Subject of the connection's client
// certificate, if the client presented one and the TLS handshake
// verified it against Config.TLSConfig's ClientCAs (see ServerTLS); ok is
// false otherwise (a plain connection, or no certificate). Only a
// verified chain counts: a certificate the server did not verify grants
// nothing.
func (ci *ConnInfo) Certificate() (role Role, subject string, ok bool) {
	leaf := verifiedLeaf(ci.TLS)
	if leaf == nil {
		return RoleNone, "", false
	}
	return CertificateRole(leaf), leaf.Subject.String(), true
}

// NodeURIScheme is the scheme of the URI subject alternative name that
// names a member's node id in its certificate: capraft:node:<id>, the id
// in decimal without sign or leading zeros (e.g. capraft:node:7).
const NodeURIScheme = "capraft"

// CertificateNodeID returns the node id c names in a URI SAN
// capraft:node:<id>; ok is false if it names none (a certificate from a
// CA that does not write ids). A certificate that names two different
// ids, or has a capraft URI of any other form (capraft:node:007,
// capraft:node:0, capraft://node/7, ...), is an error: such a
// certificate must grant no peer role. The same id named twice is
// allowed. It does not verify c: use it on a verified chain's leaf.
func CertificateNodeID(c *x509.Certificate) (id uint64, ok bool, err error) {
	if c == nil {
		return 0, false, nil
	}
	for _, u := range c.URIs {
		if !strings.EqualFold(u.Scheme, NodeURIScheme) {
			continue
		}
		n, err := parseNodeURI(u.Opaque, u.Host == "" && u.Path == "" && u.RawQuery == "" && !u.ForceQuery && u.Fragment == "")
		if err != nil {
			return 0, false, fmt.Errorf("certificate %q: URI %q: %w; a node's certificate names its id as capraft:node:<id>, e.g. capraft:node:7",
				c.Subject.String(), u.String(), err)
		}
		if ok && n != id {
			return 0, false, fmt.Errorf("certificate %q names two node ids (%d and %d): a node's certificate names its own id alone",
				c.Subject.String(), id, n)
		}
		id, ok = n, true
	}
	return id, ok, nil
}

// parseNodeURI reads the opaque part of a capraft URI, "node:<id>";
// bare says the URI has nothing else (no host, path, query or fragment).
func parseNodeURI(opaque string, bare bool) (uint64, error) {
	digits, found := strings.CutPrefix(opaque, "node:")
	if !found || !bare {
		return 0, fmt.Errorf("not of the form capraft:node:<id>")
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != digits {
		return 0, fmt.Errorf("%q is not a node id (a positive decimal number without leading zeros)", digits)
	}
	return n, nil
}

// CertificateNodeID returns the node id the connection's client
// certificate names (see the function CertificateNodeID), if the TLS
// handshake verified it as Certificate requires; ok is false without a
// verified certificate or when it names no id.
func (ci *ConnInfo) CertificateNodeID() (id uint64, ok bool, err error) {
	return CertificateNodeID(verifiedLeaf(ci.TLS))
}

// verifiedLeaf returns the peer's certificate from the first chain the
// handshake verified, or nil.
func verifiedLeaf(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// ServerTLS returns a server configuration that presents cert and
// verifies client certificates against clientCAs, for mutual TLS. A
// client that presents no certificate is still served (it may log in
// with a token or the cluster secret); one that presents a certificate
// clientCAs does not verify (another CA, expired, not for client use) is
// refused at the handshake. With a nil clientCAs no client certificate is
// asked for: verifying them against the system's roots would let any
// public CA name roles. TLS 1.2 is the oldest version spoken; TLS 1.3 is
// chosen whenever the client speaks it.
func ServerTLS(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}
	if clientCAs != nil {
		cfg.ClientCAs = clientCAs
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return cfg
}

// ClientTLS returns a client configuration that verifies servers against
// cas (nil: the system's roots) and, if cert is not nil, presents it: a
// node presents its peer certificate when it dials peers, raftctl its
// operator or client certificate. The certificate is presented whatever
// CAs the server says it accepts, so a certificate from the wrong CA
// fails the handshake with an error saying so instead of quietly
// connecting without one.
func ClientTLS(cas *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: cas, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c := *cert
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &c, nil
		}
	}
	return cfg
}
