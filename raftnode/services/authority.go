package services

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// Access is the authority a connection holds before it presents any
// credential (Security.Anonymous).
type Access uint8

// Anonymous access levels. The zero value means the default: AccessAll on
// a node without security, AccessNone on one with a cluster secret or
// certificate roles.
const (
	AccessDefault Access = iota
	// AccessNone: nothing but info, challenge, login and identity.
	AccessNone
	// AccessClient: kv, echo and status.
	AccessClient
	// AccessOperator: admin too.
	AccessOperator
	// AccessAll: raft too; only on a node without security.
	AccessAll
)

// String names the access level as the --anonymous flag spells it.
func (a Access) String() string {
	switch a {
	case AccessNone:
		return "none"
	case AccessClient:
		return "client"
	case AccessOperator:
		return "operator"
	case AccessAll:
		return "all"
	}
	return "default"
}

// ParseAccess parses an --anonymous value.
func ParseAccess(s string) (Access, error) {
	for a := AccessNone; a <= AccessAll; a++ {
		if s == a.String() {
			return a, nil
		}
	}
	return AccessDefault, fmt.Errorf("unknown access %q: want none, client, operator or all", s)
}

// Security says who may do what on a node (see docs/SECURITY.md).
type Security struct {
	// ClusterSecrets, if any, are the secrets members prove they know to
	// obtain the Raft capability (Node.challenge, then login with a
	// MemberProof); they never cross the wire. The node proves the first
	// (to the peers it dials, and to those that challenge it) and accepts
	// proof of any, so a secret is rotated without a pause: list the new
	// one second on every node, then first, then alone.
	ClusterSecrets [][]byte
	// CertRoles grants a connection the role its verified client
	// certificate names (mutual TLS; see rpc.CertificateRole).
	CertRoles bool
	// Anonymous is what a connection holds without a credential.
	Anonymous Access
	// OperatorTokenFile, if set, is where the node writes an operator
	// token (mode 0600) when it applies the cluster's first token key:
	// the first operator credential of a secure cluster.
	OperatorTokenFile string
}

// enabled reports whether the node authenticates anyone.
func (s *Security) enabled() bool { return len(s.ClusterSecrets) > 0 || s.CertRoles }

// secret returns the cluster secret this node proves, or nil.
func (s *Security) secret() []byte {
	if len(s.ClusterSecrets) == 0 {
		return nil
	}
	return s.ClusterSecrets[0]
}

// proven reports whether proof is what want computes for one of the
// accepted secrets.
func (s *Security) proven(proof []byte, want func(secret []byte) []byte) bool {
	for _, secret := range s.ClusterSecrets {
		if hmac.Equal(proof, want(secret)) {
			return true
		}
	}
	return false
}

// anonymous returns the effective anonymous access.
func (s *Security) anonymous() Access {
	if s.Anonymous != AccessDefault {
		return s.Anonymous
	}
	if s.enabled() {
		return AccessNone
	}
	return AccessAll
}

// Validate checks the settings: a secure node never grants the Raft
// capability to anonymous connections, and secrets are long enough.
func (s *Security) Validate() error {
	if s.enabled() && s.Anonymous == AccessAll {
		return errors.New("raftnode: anonymous connections can never hold the Raft capability when a cluster secret or certificate roles are configured")
	}
	for _, secret := range s.ClusterSecrets {
		if n := len(secret); n < rpc.MinSecretSize {
			return fmt.Errorf("raftnode: a cluster secret of %d bytes; it needs at least %d", n, rpc.MinSecretSize)
		}
	}
	return nil
}

// grant is what one Node capability holds.
type grant struct {
	peer, operator, client bool
	// memberID binds a peer to the member id its credential named (0:
	// any member: a peer certificate that names no node id).
	memberID uint64
	// scope confines kv.
	scope kvScope
	// tok is the token the grant came from, checked on every call.
	tok *liveToken
	// subject is the client certificate's subject, if any.
	subject string
}

func accessGrant(a Access) grant {
	return grant{
		client:   a >= AccessClient,
		operator: a >= AccessOperator,
		peer:     a >= AccessAll,
	}
}

// certGrant is what conn's verified client certificate grants. A peer
// certificate that names a node id (rpc.CertificateNodeID) speaks for
// that member alone, as a proof of the cluster secret does; one that
// names none (from a CA that writes no ids) for any member; one whose id
// is malformed or ambiguous grants nothing.
func certGrant(conn *rpc.ConnInfo, role rpc.Role, subject string) grant {
	g := grant{subject: subject}
	switch role {
	case rpc.RolePeer:
		id, named, err := conn.CertificateNodeID()
		switch {
		case err != nil:
			conn.Logger.Warn("peer certificate grants nothing: its node id is malformed", "subject", subject, "error", err)
		case named:
			g.peer, g.memberID = true, id
		default:
			g.peer = true
			conn.Logger.Debug("peer certificate names no node id (URI SAN capraft:node:<id>): it may speak for any member", "subject", subject)
		}
	case rpc.RoleOperator:
		g.operator, g.client = true, true
	case rpc.RoleClient:
		g.client = true
	default:
		conn.Logger.Warn("client certificate names no single role (Subject OU peer, operator or client): it grants nothing", "subject", subject)
	}
	return g
}

// union is what holding both g and o grants: a connection with a client
// certificate keeps what anonymous connections hold.
func (g grant) union(o grant) grant {
	g.peer = g.peer || o.peer
	g.operator = g.operator || o.operator
	g.client = g.client || o.client
	if g.subject == "" {
		g.subject = o.subject
	}
	if g.memberID == 0 {
		g.memberID = o.memberID
	}
	return g
}

// liveToken is a token's grant as a node checks it on every call: it ends
// when the token expires or its revocation is applied.
type liveToken struct {
	id       token.ID
	notAfter time.Time
	store    *kv.Store
	epoch    atomic.Uint64 // the revocation epoch last checked
	revoked  atomic.Bool
}

// check fails once the token has expired or been revoked. It costs an
// atomic load while nothing was revoked since the last call.
func (t *liveToken) check() error {
	if t.revoked.Load() {
		return errRevoked(t.id)
	}
	if !t.notAfter.IsZero() && time.Now().After(t.notAfter) {
		return fmt.Errorf("permissionDenied: token %s expired at %s; mint a new one (raftctl token create)", t.id, t.notAfter.UTC().Format(time.RFC3339))
	}
	if e := t.store.RevocationEpoch(); e != t.epoch.Load() {
		if t.store.Revoked(t.id) {
			t.revoked.Store(true)
			return errRevoked(t.id)
		}
		t.epoch.Store(e)
	}
	return nil
}

func errRevoked(id token.ID) error {
	return fmt.Errorf("permissionDenied: token %s was revoked", id)
}

// The credentials each authority needs, named in permissionDenied errors.
const (
	needClient   = "a client credential: a token (raftctl --token/--token-file, client.WithToken) or a client certificate from the cluster CA"
	needOperator = "an operator credential: an operator token (each member of a secure cluster writes one to operator.token in its data directory; raftctl --token-file) or an operator certificate from the cluster CA"
	needPeer     = "a member's credential: a peer certificate from the cluster CA, or proof of the cluster secret (--cluster-secret-file)"
)

func needs(what, need string) error {
	return fmt.Errorf("permissionDenied: %s needs %s", what, need)
}

// newNodeCapability returns a Node holding g on conn, whose challenge
// state chal and Raft stream bounds streams it shares with the
// connection's other Node capabilities.
func (sv *Server) newNodeCapability(conn *rpc.ConnInfo, g grant, chal *challengeState, streams *transport.StreamLimits) *nodeServer {
	ex := conn.Exporter
	if g.tok != nil {
		ex = ex.WithCheck(g.tok.check)
	}
	return &nodeServer{sv: sv, conn: conn, grant: g, ex: ex, chal: chal, streams: streams}
}

// connGrant is what a new connection holds: the anonymous access, plus
// the role of its verified client certificate when certificate roles are
// on.
func (sv *Server) connGrant(conn *rpc.ConnInfo) grant {
	sec := &sv.cfg.Security
	g := accessGrant(sec.anonymous())
	if sec.CertRoles {
		if role, subject, ok := conn.Certificate(); ok {
			g = g.union(certGrant(conn, role, subject))
		}
	}
	if g.peer {
		// A member's connection may keep a slot reserved for peers.
		conn.MarkPeer()
	}
	return g
}

// challengeState is a connection's pending secret challenge.
type challengeState struct {
	mu          sync.Mutex
	clientNonce []byte
	serverNonce []byte // nil once used
}

// Challenge starts a member's proof of the cluster secret: the node
// proves it knows the secret, and hands out a nonce for one login.
func (s *nodeServer) Challenge(_ context.Context, call schema.Node_challenge) error {
	sv := s.sv
	secret := sv.cfg.Security.secret()
	if secret == nil {
		return errors.New("permissionDenied: this node has no cluster secret; members prove themselves with peer certificates")
	}
	cn, err := call.Args().Nonce()
	if err != nil {
		return fmt.Errorf("challenge: read nonce: %w", err)
	}
	if err := rpc.CheckNonce(cn); err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	sn := rpc.NewNonce()
	st := s.challenge()
	st.mu.Lock()
	st.clientNonce, st.serverNonce = append([]byte(nil), cn...), sn
	st.mu.Unlock()
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	res.SetNodeId(sv.cfg.ID)
	res.SetClusterId(sv.clusterID)
	if err := res.SetNonce(sn); err != nil {
		return err
	}
	return res.SetNodeProof(rpc.NodeProof(secret, sv.clusterID, sv.cfg.ID, cn, sn))
}

// challenge returns the connection's challenge state, shared by every
// Node capability of the connection.
func (s *nodeServer) challenge() *challengeState { return s.chal }

// Login presents a credential and returns a Node holding what it grants.
func (s *nodeServer) Login(ctx context.Context, call schema.Node_login) error {
	cred, err := call.Args().Credential()
	if err != nil {
		return fmt.Errorf("login: read credential: %w", err)
	}
	var g grant
	switch cred.Which() {
	case schema.Credential_Which_token:
		t, err := cred.Token()
		if err != nil {
			return fmt.Errorf("login: read token: %w", err)
		}
		if g, err = s.sv.tokenGrant(ctx, t); err != nil {
			s.conn.Logger.Info("login refused", "error", err)
			return err
		}
	case schema.Credential_Which_member:
		m, err := cred.Member()
		if err != nil {
			return fmt.Errorf("login: read member proof: %w", err)
		}
		proof, err := m.Proof()
		if err != nil {
			return fmt.Errorf("login: read member proof: %w", err)
		}
		if g, err = s.memberGrant(m.Id(), proof); err != nil {
			s.conn.Logger.Warn("member login refused", "claimed_id", m.Id(), "error", err)
			return err
		}
		s.conn.MarkPeer()
	default:
		return errors.New("permissionDenied: unknown kind of credential")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	ns := s.sv.newNodeCapability(s.conn, g, s.chal, s.streams)
	if err := setIdentity(res.NewIdentity, ns.grant); err != nil {
		return err
	}
	return res.SetNode(schema.Node(ns.export()))
}

// memberGrant checks a member's proof against the connection's last
// challenge, which it uses up: a proof is good once, on one connection.
func (s *nodeServer) memberGrant(id uint64, proof []byte) (grant, error) {
	sv := s.sv
	if sv.cfg.Security.secret() == nil {
		return grant{}, errors.New("permissionDenied: this node has no cluster secret; members prove themselves with peer certificates")
	}
	st := s.challenge()
	st.mu.Lock()
	cn, sn := st.clientNonce, st.serverNonce
	st.clientNonce, st.serverNonce = nil, nil
	st.mu.Unlock()
	if sn == nil {
		return grant{}, errors.New("permissionDenied: no challenge to answer on this connection: call challenge first (each challenge answers one login)")
	}
	if id == 0 || id == sv.cfg.ID {
		return grant{}, fmt.Errorf("permissionDenied: invalid member id %d", id)
	}
	if !sv.cfg.Security.proven(proof, func(secret []byte) []byte { return rpc.MemberProof(secret, sv.clusterID, id, sv.cfg.ID, cn, sn) }) {
		return grant{}, errors.New("permissionDenied: wrong proof of the cluster secret (do both nodes use the same --cluster-secret-file?)")
	}
	return grant{peer: true, memberID: id}, nil
}

// tokenGrant verifies a token: its signature with the cluster's key, its
// caveats, and that it is not revoked. A token signed with a key this
// node has not applied yet (minted a moment ago, elsewhere) waits for a
// read barrier, which brings this node up to the leader's commit; a node
// that cannot pass one (no leader, or not caught up after losing its
// data) says it cannot check the token yet, which clients take as "try
// another node", not as a verdict.
func (sv *Server) tokenGrant(ctx context.Context, s string) (grant, error) {
	t, err := token.Parse(s)
	if err != nil {
		return grant{}, fmt.Errorf("permissionDenied: %w", err)
	}
	key, ok := sv.kv.TokenKey(t.KeyID())
	if !ok {
		if !sv.caughtUp(ctx) {
			// Not a verdict on the token: this node cannot check it yet.
			return grant{}, fmt.Errorf("unavailable: this node cannot check the token yet: it has not caught up with its cluster (key %d is not applied here); try another node", t.KeyID())
		}
		if key, ok = sv.kv.TokenKey(t.KeyID()); !ok {
			return grant{}, fmt.Errorf("permissionDenied: token %s was signed with key %d, which this cluster does not have (a token of another cluster?)", t.ID(), t.KeyID())
		}
	}
	tg, err := t.Verify(key, time.Now())
	if err != nil {
		return grant{}, fmt.Errorf("permissionDenied: %w", err)
	}
	lt := &liveToken{id: tg.ID, notAfter: tg.Restriction.NotAfter, store: sv.kv}
	if err := lt.check(); err != nil {
		return grant{}, err
	}
	r := tg.Restriction
	return grant{
		client:   true,
		operator: tg.Role == token.Operator,
		scope:    kvScope{restricted: r.RestrictPrefix, prefix: r.Prefix, readOnly: r.ReadOnly},
		tok:      lt,
	}, nil
}

// caughtUp reports whether this node has applied the log as far as its
// leader has committed it (a read barrier passes at once): only then does
// a key it does not know not exist.
func (sv *Server) caughtUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, sv.cfg.ElectionTimeout)
	defer cancel()
	return sv.d.ReadIndex(ctx) == nil
}

// Identity describes what this Node holds.
func (s *nodeServer) Identity(_ context.Context, call schema.Node_identity) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return setIdentity(res.NewIdentity, s.grant)
}

func setIdentity(alloc func() (schema.Identity, error), g grant) error {
	id, err := alloc()
	if err != nil {
		return err
	}
	id.SetPeer(g.peer)
	id.SetOperator(g.operator)
	id.SetClient(g.client)
	id.SetRestricted(g.scope.restricted)
	id.SetReadOnly(g.scope.readOnly)
	id.SetMemberId(g.memberID)
	if g.scope.restricted {
		if err := id.SetPrefix(g.scope.prefix); err != nil {
			return err
		}
	}
	if g.tok != nil {
		if !g.tok.notAfter.IsZero() {
			id.SetExpires(g.tok.notAfter.UnixMilli())
		}
		if err := id.SetTokenId(g.tok.id.String()); err != nil {
			return err
		}
	}
	return id.SetSubject(g.subject)
}

// CreateToken mints a token with the cluster's current key, creating the
// key through the log first if the cluster has none.
func (a adminServer) CreateToken(ctx context.Context, call schema.Admin_createToken) error {
	spec, err := call.Args().Spec()
	if err != nil {
		return fmt.Errorf("createToken: read spec: %w", err)
	}
	role := token.Client
	if spec.Operator() {
		role = token.Operator
	}
	r := token.Restriction{RestrictPrefix: spec.RestrictPrefix(), ReadOnly: spec.ReadOnly()}
	if r.RestrictPrefix {
		p, err := spec.Prefix()
		if err != nil {
			return fmt.Errorf("createToken: read prefix: %w", err)
		}
		r.Prefix = append([]byte(nil), p...)
	}
	if ttl := spec.TtlMillis(); ttl > 0 {
		if ttl > uint64(100*365*24*time.Hour/time.Millisecond) {
			return answerError(call.AllocResults, &requestError{schema.ErrorCode_invalidArgument, "ttl over 100 years: leave it out for a token that does not expire"}, a.sv)
		}
		r.NotAfter = time.Now().Add(time.Duration(ttl) * time.Millisecond)
	}
	call.Go()
	if err := a.sv.ensureTokenKey(ctx); err != nil {
		return answerError(call.AllocResults, err, a.sv)
	}
	t, err := a.sv.mintToken(role, r)
	if err != nil {
		return answerError(call.AllocResults, err, a.sv)
	}
	a.sv.log.Info("token created", "id", t.ID().String(), "role", role.String(), "prefix", fmt.Sprintf("%q", r.Prefix), "restricted", r.RestrictPrefix, "read_only", r.ReadOnly, "expires", r.NotAfter)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if err := res.SetToken(t.String()); err != nil {
		return err
	}
	return res.SetId(t.ID().String())
}

// mintToken mints a token with the newest key this node has applied.
func (sv *Server) mintToken(role token.Role, r token.Restriction) (*token.Token, error) {
	keyID, key, ok := sv.kv.CurrentTokenKey()
	if !ok {
		return nil, &requestError{schema.ErrorCode_unavailable, "the cluster's token key is not applied on this node yet: retry"}
	}
	t, err := token.Mint(key, keyID, token.NewID(), role, r)
	if err != nil {
		return nil, &requestError{schema.ErrorCode_invalidArgument, err.Error()}
	}
	return t, nil
}

// ensureTokenKey makes sure the cluster has a token key this node has
// applied: the leader proposes one if there is none; a follower asks the
// leader to, then waits until it has applied it.
func (sv *Server) ensureTokenKey(ctx context.Context) error {
	if _, _, ok := sv.kv.CurrentTokenKey(); ok {
		return nil
	}
	err := sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
		return sv.proposeTokenKey(ctx)
	}, func(ctx context.Context, adm schema.Admin) error {
		// Minting a read-only token on the leader creates the key
		// there; the token itself is dropped.
		f, rel := adm.CreateToken(ctx, func(p schema.Admin_createToken_Params) error {
			spec, err := p.NewSpec()
			if err != nil {
				return err
			}
			spec.SetReadOnly(true)
			spec.SetRestrictPrefix(true)
			spec.SetTtlMillis(1)
			return nil
		})
		defer rel()
		return forwardedErr(f.Struct())
	})
	if err != nil {
		return err
	}
	// The key was applied on the leader; a read barrier waits until it
	// is applied here too.
	if err := sv.d.ReadIndex(ctx); err != nil {
		return err
	}
	if _, _, ok := sv.kv.CurrentTokenKey(); !ok {
		return &requestError{schema.ErrorCode_unavailable, "the cluster's token key is not applied on this node yet: retry"}
	}
	return nil
}

// proposeTokenKey proposes a fresh token key on the leader, unless one
// was applied meanwhile.
func (sv *Server) proposeTokenKey(ctx context.Context) error {
	if _, _, ok := sv.kv.CurrentTokenKey(); ok {
		return nil
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("token key: %w", err)
	}
	id := uint64(1)
	if cur, _, ok := sv.kv.CurrentTokenKey(); ok {
		id = cur + 1
	}
	a, err := sv.proposeCommand(ctx, kv.Command{Kind: kv.CmdTokenKey, TokenKey: kv.TokenKey{ID: id, Secret: secret}})
	if err != nil {
		return err
	}
	return resultErr(a)
}

// RevokeToken revokes a token (and what was derived from it) through the
// log.
func (a adminServer) RevokeToken(ctx context.Context, call schema.Admin_revokeToken) error {
	idText, err := call.Args().Id()
	if err != nil {
		return fmt.Errorf("revokeToken: read id: %w", err)
	}
	expires := call.Args().Expires()
	id, err := token.ParseID(idText)
	if err != nil {
		return answerError(call.AllocResults, &requestError{schema.ErrorCode_invalidArgument, fmt.Sprintf("token id: %v", err)}, a.sv)
	}
	call.Go()
	err = a.sv.onLeaderAdmin(ctx, func(ctx context.Context) error {
		var exp int64
		if expires > 0 {
			exp = time.UnixMilli(expires).UnixNano()
		}
		ap, err := a.sv.proposeCommand(ctx, kv.Command{Kind: kv.CmdRevoke, Revoke: kv.Revocation{ID: id, Expires: exp}})
		if err != nil {
			return err
		}
		return resultErr(ap)
	}, func(ctx context.Context, adm schema.Admin) error {
		f, rel := adm.RevokeToken(ctx, func(p schema.Admin_revokeToken_Params) error {
			p.SetExpires(expires)
			return p.SetId(idText)
		})
		defer rel()
		return forwardedErr(f.Struct())
	})
	if err == nil {
		a.sv.log.Info("token revoked", "id", idText)
	}
	return answerError(call.AllocResults, err, a.sv)
}

// resultErr turns the result of an applied auth command into an error.
func resultErr(a kv.Applied) error {
	if a.Err != nil {
		return &requestError{schema.ErrorCode_internal, a.Err.Error()}
	}
	if len(a.Results) > 0 && a.Results[0].Code != kv.OK {
		return &requestError{schema.ErrorCode_invalidArgument, a.Results[0].Message}
	}
	return nil
}

// createFirstTokenKey runs when this node becomes leader of a secure
// cluster: a cluster whose members prove themselves needs operators who
// can, so the first token key is created at once (and each node that
// applies it writes the first operator token; see writeOperatorToken).
func (sv *Server) createFirstTokenKey() {
	if !sv.cfg.Security.enabled() {
		return
	}
	if _, _, ok := sv.kv.CurrentTokenKey(); ok {
		return
	}
	sv.goUntilClosed(func() {
		ctx, cancel := sv.untilStopped(sv.cfg.RequestTimeout)
		defer cancel()
		if err := sv.proposeTokenKey(ctx); err != nil {
			// The next leader tries again; so does the first createToken.
			sv.log.Debug("could not create the cluster's token key", "error", err)
		}
	})
}

// writeOperatorToken writes an operator token to the configured file
// (mode 0600) unless the file exists: the first operator credential of a
// secure cluster, minted when this node applies the cluster's first
// token key — once: not again when it replays its log after a restart, so
// a token moved away does not come back.
func (sv *Server) writeOperatorToken() {
	path := sv.cfg.Security.OperatorTokenFile
	if path == "" || !sv.cfg.Security.enabled() {
		return
	}
	if _, err := os.Stat(path); err == nil {
		return
	}
	t, err := sv.mintToken(token.Operator, token.Restriction{})
	if err != nil {
		sv.log.Warn("could not mint the operator token", "error", err)
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if !errors.Is(err, fs.ErrExist) {
			sv.log.Warn("could not write the operator token", "path", path, "error", err)
		}
		return
	}
	_, err = f.WriteString(t.String() + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		sv.log.Warn("could not write the operator token", "path", path, "error", err)
		os.Remove(path)
		return
	}
	sv.log.Info("wrote an operator token: use it with raftctl --token-file, and keep it secret", "path", path, "token_id", t.ID().String())
}
