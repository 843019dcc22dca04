package client_test

// The fake cluster's authority: tokens a test registers or mints through
// Admin.createToken, Node.login, Node.identity, and a connection sniffer
// that shows what reached a node while a call was pending.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// mintFake returns a well-formed token for role, distinct for each seed.
// The fake does not verify tokens (it looks them up), so the key is a
// test's constant.
func mintFake(role token.Role, seed string) string {
	var id token.ID
	copy(id[:], seed)
	t, err := token.Mint(bytes.Repeat([]byte{7}, token.MinKeySize), 1, id, role, token.Restriction{})
	if err != nil {
		panic(err) // a test's constant input
	}
	return t.String()
}

// fakeGrant is what a token grants on the fake.
type fakeGrant struct {
	id       string
	operator bool
	prefix   *string // nil: every key
	readOnly bool
	expires  int64 // unix millis, 0: never
}

// fakeRevocation is one Admin.revokeToken call.
type fakeRevocation struct {
	id      string
	expires int64
}

// fakeAuth is the fake cluster's token state, shared by every fake node.
type fakeAuth struct {
	required atomic.Bool  // anonymous connections hold nothing but info and login
	logins   atomic.Int64 // Node.login calls
	notReady atomic.Int64 // logins still to refuse as a node that has not caught up does

	mu      sync.Mutex
	tokens  map[string]fakeGrant // by token
	minted  int
	specs   []client.TokenSpec // as createToken received them
	revoked []fakeRevocation
	hold    []byte   // logins wait until their connection carried these bytes
	denials []string // what deny refused, in order
}

// denied returns how many times deny refused what ("": anything).
func (a *fakeAuth) denied(what string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, w := range a.denials {
		if what == "" || w == what {
			n++
		}
	}
	return n
}

// addToken makes token valid, granting g.
func (a *fakeAuth) addToken(token string, g fakeGrant) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tokens == nil {
		a.tokens = make(map[string]fakeGrant)
	}
	a.tokens[token] = g
}

// holdLoginsUntil makes every login wait, before it answers, until its
// connection has carried marker from the client: a call the client
// pipelined on the login's answer. Set it before the client connects.
func (a *fakeAuth) holdLoginsUntil(marker []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hold = marker
}

func (a *fakeAuth) holdMarker() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hold
}

// deny refuses what a connection's Node does not hold, as a node does.
func (f *fakeNodeCap) deny(what string, operator bool) error {
	a := &f.node.store.auth
	if f.grant == nil && !a.required.Load() || f.grant != nil && (f.grant.operator || !operator) {
		return nil
	}
	a.mu.Lock()
	a.denials = append(a.denials, what)
	a.mu.Unlock()
	switch {
	case f.grant == nil:
		return fmt.Errorf("permissionDenied: %s needs a client credential (a token: raftctl --token-file, client.WithToken; or a client certificate from the cluster CA)", what)
	default:
		return fmt.Errorf("permissionDenied: %s needs an operator credential (an operator token or certificate)", what)
	}
}

func (f *fakeNodeCap) Challenge(context.Context, schema.Node_challenge) error {
	return errFakeUnimplemented
}

func (f *fakeNodeCap) Login(ctx context.Context, call schema.Node_login) error {
	a := &f.node.store.auth
	a.logins.Add(1)
	if a.holdMarker() != nil {
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-f.node.sniffed(f.remote):
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errors.New("fake: nothing pipelined on the login reached the node while the login was pending")
		}
	}
	cred, err := call.Args().Credential()
	if err != nil {
		return err
	}
	tok, err := cred.Token()
	if err != nil {
		return err
	}
	if a.notReady.Add(-1) >= 0 {
		return errors.New("unavailable: this node cannot check the token yet (fake)")
	}
	a.mu.Lock()
	g, ok := a.tokens[tok]
	a.mu.Unlock()
	if !ok {
		return errors.New("permissionDenied: the token was refused: unknown token (fake)")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	logged := &fakeNodeCap{node: f.node, remote: f.remote, grant: &g}
	if err := res.SetNode(schema.Node_ServerToClient(logged)); err != nil {
		return err
	}
	id, err := res.NewIdentity()
	if err != nil {
		return err
	}
	return logged.fillIdentity(id)
}

func (f *fakeNodeCap) Identity(_ context.Context, call schema.Node_identity) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	id, err := res.NewIdentity()
	if err != nil {
		return err
	}
	return f.fillIdentity(id)
}

func (f *fakeNodeCap) fillIdentity(id schema.Identity) error {
	g := f.grant
	if g == nil {
		open := !f.node.store.auth.required.Load()
		id.SetClient(open)
		id.SetOperator(open)
		return nil
	}
	id.SetClient(true)
	id.SetOperator(g.operator)
	id.SetReadOnly(g.readOnly)
	id.SetExpires(g.expires)
	if g.prefix != nil {
		id.SetRestricted(true)
		if err := id.SetPrefix([]byte(*g.prefix)); err != nil {
			return err
		}
	}
	return id.SetTokenId(g.id)
}

func (k *fakeKVCap) Restrict(context.Context, schema.KV_restrict) error { return errFakeUnimplemented }

func (a *fakeAdminCap) CreateToken(_ context.Context, call schema.Admin_createToken) error {
	spec, err := call.Args().Spec()
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	prefix, err := spec.Prefix()
	if err != nil {
		return err
	}
	got := client.TokenSpec{Operator: spec.Operator(), RestrictPrefix: spec.RestrictPrefix(), Prefix: string(prefix),
		ReadOnly: spec.ReadOnly(), TTL: time.Duration(spec.TtlMillis()) * time.Millisecond}
	auth := &a.n.node.store.auth
	auth.mu.Lock()
	auth.minted++
	auth.specs = append(auth.specs, got)
	n := auth.minted
	auth.mu.Unlock()
	g := fakeGrant{id: fmt.Sprintf("%032x", n), operator: got.Operator && !got.RestrictPrefix && !got.ReadOnly, readOnly: got.ReadOnly}
	if got.RestrictPrefix {
		g.prefix = &got.Prefix
	}
	if got.TTL != 0 {
		g.expires = time.Now().Add(got.TTL).UnixMilli()
	}
	tok := mintFake(token.Client, "minted "+strconv.Itoa(n))
	auth.addToken(tok, g)
	if err := res.SetToken(tok); err != nil {
		return err
	}
	return res.SetId(g.id)
}

func (a *fakeAdminCap) RevokeToken(_ context.Context, call schema.Admin_revokeToken) error {
	id, err := call.Args().Id()
	if err != nil {
		return err
	}
	auth := &a.n.node.store.auth
	auth.mu.Lock()
	auth.revoked = append(auth.revoked, fakeRevocation{id: id, expires: call.Args().Expires()})
	for tok, g := range auth.tokens {
		if g.id == id {
			delete(auth.tokens, tok)
		}
	}
	auth.mu.Unlock()
	_, err = call.AllocResults()
	return err
}

// sniffer watches the bytes a fake node reads on each connection for
// the marker the store's auth holds logins for.
type sniffer struct {
	smu   sync.Mutex
	conns map[string]*sniffConn // by remote address
}

// sniff wraps c, a connection to node, so that sniffed can tell when it
// carried the marker.
func (s *sniffer) sniff(c net.Conn, marker func() []byte) net.Conn {
	sc := &sniffConn{Conn: c, marker: marker, found: make(chan struct{})}
	s.smu.Lock()
	defer s.smu.Unlock()
	if s.conns == nil {
		s.conns = make(map[string]*sniffConn)
	}
	s.conns[c.RemoteAddr().String()] = sc
	return sc
}

// sniffed returns a channel closed once the connection from remote has
// carried the marker.
func (s *sniffer) sniffed(remote string) <-chan struct{} {
	s.smu.Lock()
	defer s.smu.Unlock()
	if sc := s.conns[remote]; sc != nil {
		return sc.found
	}
	return make(chan struct{}) // never
}

// sniffConn is a connection that watches what it reads for a marker.
type sniffConn struct {
	net.Conn
	marker func() []byte // nil result: nothing to watch for
	found  chan struct{} // closed once the marker was read

	mu   sync.Mutex
	tail []byte // the last bytes read, in case the marker spans two reads
	done bool
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if m := c.marker(); m != nil && n > 0 {
		c.mu.Lock()
		if !c.done {
			buf := append(c.tail, p[:n]...)
			if bytes.Contains(buf, m) {
				c.done = true
				close(c.found)
			} else {
				c.tail = bytes.Clone(buf[max(0, len(buf)-len(m)+1):])
			}
		}
		c.mu.Unlock()
	}
	return n, err
}
