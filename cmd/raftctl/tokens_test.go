package main

// raftctl's credentials and token commands, run in-process (run) against
// a fake node that refuses what a connection does not hold, as a secured
// node does.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// runCtl runs raftctl in-process with args and stdin, and returns what it
// printed and its exit status. The credential and endpoint environment
// variables are cleared unless env sets them.
func runCtl(t *testing.T, stdin string, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	for _, v := range []string{envToken, envTokenFile, "RAFTCTL_ENDPOINTS"} {
		t.Setenv(v, env[v])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

// testKey is the root key of the tokens the tests mint.
var testKey = bytes.Repeat([]byte{0x5a}, token.MinKeySize)

func mint(t *testing.T, role token.Role, r token.Restriction) *token.Token {
	t.Helper()
	tok, err := token.Mint(testKey, 1, token.NewID(), role, r)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inspectedID runs token inspect -o json with args and env, and returns
// the id of the token it inspected, or the one-line error and the status.
func inspectedID(t *testing.T, env map[string]string, args ...string) (id, errLine string, code int) {
	t.Helper()
	out, errOut, code := runCtl(t, "", env, append(args, "-o", "json", "token", "inspect")...)
	if code != 0 {
		return "", errOut, code
	}
	var obj struct{ ID string }
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("token inspect -o json printed %q: %v", out, err)
	}
	return obj.ID, errOut, 0
}

// The token comes from --token or --token-file, else from
// $RAFTCTL_TOKEN or $RAFTCTL_TOKEN_FILE: flags win over the environment,
// and two at one level, a missing or empty file, or a malformed token are
// errors that say which source was at fault.
func TestTokenFromFlagsAndEnvironment(t *testing.T) {
	a, b, c, d := mint(t, token.Client, token.Restriction{}), mint(t, token.Client, token.Restriction{}),
		mint(t, token.Client, token.Restriction{}), mint(t, token.Client, token.Restriction{})
	fileB := writeFile(t, "b.token", "\n  "+b.String()+"\r\n\n")
	fileD := writeFile(t, "d.token", d.String())
	empty := writeFile(t, "empty.token", " \n\t\n")
	missing := filepath.Join(t.TempDir(), "missing.token")
	garbage := writeFile(t, "garbage.token", "hunter2-not-a-token\n")

	ok := []struct {
		name string
		env  map[string]string
		args []string
		want *token.Token
	}{
		{"--token", nil, []string{"--token", a.String()}, a},
		{"--token-file, trimmed", nil, []string{"--token-file", fileB}, b},
		{"$RAFTCTL_TOKEN", map[string]string{envToken: c.String()}, nil, c},
		{"$RAFTCTL_TOKEN_FILE", map[string]string{envTokenFile: fileD}, nil, d},
		{"--token over $RAFTCTL_TOKEN_FILE", map[string]string{envTokenFile: fileD}, []string{"--token", a.String()}, a},
		{"--token-file over $RAFTCTL_TOKEN", map[string]string{envToken: c.String()}, []string{"--token-file", fileB}, b},
		{"--token over $RAFTCTL_TOKEN", map[string]string{envToken: c.String()}, []string{"--token", a.String()}, a},
		{"flags over both variables", map[string]string{envToken: c.String(), envTokenFile: fileD}, []string{"--token-file", fileB}, b},
	}
	for _, tc := range ok {
		id, errLine, code := inspectedID(t, tc.env, tc.args...)
		if code != 0 || id != tc.want.ID().String() {
			t.Errorf("%s: inspected %q (exit %d, %q), want the token %s", tc.name, id, code, errLine, tc.want.ID())
		}
	}

	bad := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"both flags", nil, []string{"--token", a.String(), "--token-file", fileB}, "both --token and --token-file are set; give the token one way"},
		{"both variables", map[string]string{envToken: c.String(), envTokenFile: fileD}, nil, "both $RAFTCTL_TOKEN and $RAFTCTL_TOKEN_FILE are set"},
		{"missing file", nil, []string{"--token-file", missing}, "--token-file: open " + missing + ": no such file or directory"},
		{"missing file from the environment", map[string]string{envTokenFile: missing}, nil, "$RAFTCTL_TOKEN_FILE: open " + missing},
		{"empty file", nil, []string{"--token-file", empty}, "--token-file " + empty + ": empty: it holds no token"},
		{"empty --token-file", nil, []string{"--token-file", ""}, "--token-file is empty; give the path of a file holding a token"},
		{"empty --token", nil, []string{"--token", " "}, "--token is empty"},
		{"malformed token in a file", nil, []string{"--token-file", garbage}, "--token-file " + garbage + ": malformed token"},
		{"malformed token", nil, []string{"--token", "capraft1.AAAA"}, "--token: malformed token"},
	}
	for _, tc := range bad {
		_, errLine, code := inspectedID(t, tc.env, tc.args...)
		if code != 1 || !strings.HasPrefix(errLine, "raftctl: ") || strings.Count(errLine, "\n") != 1 || !strings.Contains(errLine, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and one line saying %q", tc.name, code, errLine, tc.want)
		}
		if strings.Contains(errLine, "hunter2") {
			t.Errorf("%s: the error shows the token: %q", tc.name, errLine)
		}
	}
}

// countingEndpoint is a loopback address that counts the connections made
// to it (and closes them).
func countingEndpoint(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), &n
}

// token attenuate derives, offline, a token that verifies with the
// cluster's key and grants exactly the narrower restriction; token
// inspect reads it back; widening is refused.
func TestAttenuateAndInspectOffline(t *testing.T) {
	ep, dials := countingEndpoint(t)
	parent := mint(t, token.Operator, token.Restriction{})
	before := time.Now()
	out, errOut, code := runCtl(t, "", nil, "--endpoints", ep, "token", "attenuate", parent.String(),
		"--prefix", "app/\x1b[31m", "--read-only", "--ttl", "1h")
	after := time.Now()
	if code != 0 || errOut != "" || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("attenuate: exit %d, stdout %q, stderr %q; want the token alone on a line", code, out, errOut)
	}
	derived, err := token.Parse(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := derived.Verify(testKey, after)
	if err != nil {
		t.Fatalf("the derived token does not verify: %v", err)
	}
	r := g.Restriction
	if g.ID != parent.ID() || g.Role != token.Client || !r.RestrictPrefix || string(r.Prefix) != "app/\x1b[31m" || !r.ReadOnly ||
		r.NotAfter.Before(before.Add(time.Hour).Truncate(time.Millisecond)) || r.NotAfter.After(after.Add(time.Hour)) {
		t.Fatalf("derived grant %+v, want the parent's id, a client's, app/ read-only for an hour", g)
	}

	// From stdin, narrower still; then inspect it, from stdin too.
	out, errOut, code = runCtl(t, derived.String()+"\n", nil, "--endpoints", ep, "token", "attenuate", "-", "--prefix", "app/\x1b[31mx")
	if code != 0 {
		t.Fatalf("attenuate -: exit %d, %q", code, errOut)
	}
	narrower := strings.TrimSpace(out)
	out, errOut, code = runCtl(t, narrower, nil, "--endpoints", ep, "-o", "json", "token", "inspect", "-")
	if code != 0 {
		t.Fatalf("inspect -: exit %d, %q", code, errOut)
	}
	var obj map[string]any
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("inspect -o json printed %q: %v", out, err)
	}
	want := map[string]any{
		"id": parent.ID().String(), "role": "client", "minted_role": "operator", "key_id": 1.0, "restrict_prefix": true,
		"prefix": "app/\x1b[31mx", "read_only": true, "expires": r.NotAfter.UTC().Format(time.RFC3339Nano),
		"expired": false, "verified": false,
	}
	if fmt.Sprint(obj) != fmt.Sprint(want) {
		t.Fatalf("inspect -o json = %v\nwant                %v", obj, want)
	}
	out, _, code = runCtl(t, "", nil, "token", "inspect", narrower)
	for _, line := range []string{
		"role      client (minted for an operator; its restrictions make it a client's)",
		`keys      keys starting with "app/\x1b[31mx", read-only`,
		"verified  no: read offline",
	} {
		if code != 0 || !strings.Contains(out, line+"\n") && !strings.Contains(out, line) {
			t.Errorf("inspect table (exit %d) lacks %q:\n%s", code, line, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("inspect wrote a raw escape to the table: %q", out)
	}

	// Widening is refused, and so is attenuating by nothing.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "attenuate", derived.String(), "--prefix", "other/"}, "a token can only be narrowed"},
		{[]string{"token", "attenuate", derived.String()}, "raftctl token attenuate needs --prefix, --read-only or --ttl"},
		{[]string{"token", "attenuate", derived.String(), "--ttl", "-1s"}, "--ttl must be positive"},
		{[]string{"token", "attenuate", "hunter2", "--read-only"}, "TOKEN: malformed token"},
		{[]string{"token", "attenuate", "-", "--read-only"}, "TOKEN from stdin: empty"},
		{[]string{"token", "inspect"}, "raftctl token inspect takes TOKEN (or - for stdin)"},
	} {
		out, errOut, code := runCtl(t, "", nil, append([]string{"--endpoints", ep}, tc.args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "hunter2") {
			t.Errorf("raftctl %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("the offline commands connected to the endpoint %d times", n)
	}
}

// authFake is a node that refuses what a connection does not hold, as a
// secured node does, and serves logins, identity and token minting.
type authFake struct {
	mu      sync.Mutex
	grants  map[string]schemaGrant // by token
	revoked []string               // "id expires"
}

// schemaGrant is what a fake token grants.
type schemaGrant struct {
	operator       bool
	restrictPrefix bool
	prefix         string
	readOnly       bool
	id             string
	expires        int64
}

// serveAuthFake serves an authFake on loopback with tlsCfg (nil: plain).
func serveAuthFake(t *testing.T, tlsCfg *tls.Config) (*authFake, string) {
	f := &authFake{grants: make(map[string]schemaGrant)}
	_, addr := rpctest.Serve(t, rpc.Config{TLSConfig: tlsCfg, Bootstrap: func(*rpc.ConnInfo) capnp.Client {
		return capnp.Client(schema.Node_ServerToClient(&authNode{f: f}))
	}})
	return f, addr
}

func (f *authFake) add(tok *token.Token) {
	r := tok.Restriction()
	g := schemaGrant{operator: tok.Role() == token.Operator && !r.RestrictPrefix && !r.ReadOnly,
		restrictPrefix: r.RestrictPrefix, prefix: string(r.Prefix), readOnly: r.ReadOnly, id: tok.ID().String()}
	if !r.NotAfter.IsZero() {
		g.expires = r.NotAfter.UnixMilli()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants[tok.String()] = g
}

// authNode is a connection's Node: anonymous (grant nil) or logged in.
type authNode struct {
	f     *authFake
	grant *schemaGrant
}

var errFake = errors.New("not served by the fake")

func (n *authNode) deny(what string, operator bool) error {
	switch {
	case n.grant == nil:
		return fmt.Errorf("permissionDenied: %s needs a client credential (a token: raftctl --token-file, client.WithToken; or a client certificate from the cluster CA)", what)
	case operator && !n.grant.operator:
		return fmt.Errorf("permissionDenied: %s needs an operator credential", what)
	}
	return nil
}

func (n *authNode) Echo(context.Context, schema.Node_echo) error { return n.denyOr("echo") }
func (n *authNode) Raft(context.Context, schema.Node_raft) error {
	return errors.New("permissionDenied: raft needs a peer credential")
}
func (n *authNode) Kv(context.Context, schema.Node_kv) error         { return n.denyOr("kv") }
func (n *authNode) Status(context.Context, schema.Node_status) error { return n.denyOr("status") }
func (n *authNode) Challenge(context.Context, schema.Node_challenge) error {
	return errors.New("permissionDenied: this node has no cluster secret")
}

// denyOr refuses what the connection does not hold, and else says the
// fake does not serve it.
func (n *authNode) denyOr(what string) error {
	if err := n.deny(what, false); err != nil {
		return err
	}
	return errFake
}

func (n *authNode) Info(context.Context, schema.Node_info) error { return errFake }

func (n *authNode) Admin(_ context.Context, call schema.Node_admin) error {
	if err := n.deny("admin", true); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAdmin(schema.Admin_ServerToClient(&authAdmin{f: n.f}))
}

func (n *authNode) Login(_ context.Context, call schema.Node_login) error {
	cred, err := call.Args().Credential()
	if err != nil {
		return err
	}
	tok, err := cred.Token()
	if err != nil {
		return err
	}
	n.f.mu.Lock()
	g, ok := n.f.grants[tok]
	n.f.mu.Unlock()
	if !ok {
		return errors.New("permissionDenied: the token was refused: token signature does not verify (fake)")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetNode(schema.Node_ServerToClient(&authNode{f: n.f, grant: &g}))
}

func (n *authNode) Identity(_ context.Context, call schema.Node_identity) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	id, err := res.NewIdentity()
	if err != nil || n.grant == nil {
		return err
	}
	g := n.grant
	id.SetClient(true)
	id.SetOperator(g.operator)
	id.SetRestricted(g.restrictPrefix)
	id.SetReadOnly(g.readOnly)
	id.SetExpires(g.expires)
	if err := id.SetPrefix([]byte(g.prefix)); err != nil {
		return err
	}
	return id.SetTokenId(g.id)
}

type authAdmin struct{ f *authFake }

func (a *authAdmin) Members(context.Context, schema.Admin_members) error     { return errFake }
func (a *authAdmin) AddMember(context.Context, schema.Admin_addMember) error { return errFake }
func (a *authAdmin) PromoteMember(context.Context, schema.Admin_promoteMember) error {
	return errFake
}
func (a *authAdmin) RemoveMember(context.Context, schema.Admin_removeMember) error { return errFake }
func (a *authAdmin) TransferLeadership(context.Context, schema.Admin_transferLeadership) error {
	return errFake
}
func (a *authAdmin) Snapshot(context.Context, schema.Admin_snapshot) error { return errFake }

func (a *authAdmin) CreateToken(_ context.Context, call schema.Admin_createToken) error {
	spec, err := call.Args().Spec()
	if err != nil {
		return err
	}
	prefix, err := spec.Prefix()
	if err != nil {
		return err
	}
	role := token.Client
	if spec.Operator() {
		role = token.Operator
	}
	r := token.Restriction{RestrictPrefix: spec.RestrictPrefix(), Prefix: prefix, ReadOnly: spec.ReadOnly()}
	if ms := spec.TtlMillis(); ms != 0 {
		r.NotAfter = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	tok, err := token.Mint(testKey, 1, token.NewID(), role, r)
	if err != nil {
		return err
	}
	a.f.add(tok)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if err := res.SetToken(tok.String()); err != nil {
		return err
	}
	return res.SetId(tok.ID().String())
}

func (a *authAdmin) RevokeToken(_ context.Context, call schema.Admin_revokeToken) error {
	id, err := call.Args().Id()
	if err != nil {
		return err
	}
	a.f.mu.Lock()
	a.f.revoked = append(a.f.revoked, fmt.Sprintf("%s %d", id, call.Args().Expires()))
	a.f.mu.Unlock()
	_, err = call.AllocResults()
	return err
}

// A refusal of the credential exits 77 with the node's message and what
// to pass; with -o json its kind is permission_denied.
func TestPermissionDeniedExitsWithItsOwnStatus(t *testing.T) {
	f, ep := serveAuthFake(t, nil)
	user := mint(t, token.Client, token.Restriction{})
	f.add(user)
	userFile := writeFile(t, "user.token", user.String()+"\n")
	stranger := mint(t, token.Client, token.Restriction{})
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"get", "k"}, nil, []string{
			`permission denied: kv needs a client credential`, "(from " + ep + ")",
			"(pass a token with --token-file F or --token T (or $RAFTCTL_TOKEN_FILE, $RAFTCTL_TOKEN), or a client certificate with --cert and --key)"}},
		{[]string{"put", "k", "v"}, nil, []string{"permission denied: kv needs a client credential"}},
		{[]string{"status"}, nil, []string{"1 of 1 endpoints did not answer; status: permission denied: status needs a client credential"}},
		{[]string{"--token-file", userFile, "members"}, nil, []string{
			"permission denied: admin needs an operator credential",
			"(the token from --token-file " + userFile + " was refused or does not grant this: raftctl token inspect shows what it says"}},
		{[]string{"token", "create"}, map[string]string{envTokenFile: userFile}, []string{
			"permission denied: admin needs an operator credential", "the token from $RAFTCTL_TOKEN_FILE " + userFile}},
		{[]string{"--token", stranger.String(), "get", "k"}, nil, []string{"permission denied: the token was refused: token signature does not verify"}},
	} {
		args := append([]string{"--endpoints", ep, "--timeout", "10s"}, tc.args...)
		out, errOut, code := runCtl(t, "", tc.env, args...)
		if code != exitPermissionDenied || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("raftctl %q: exit %d, stderr %q; want %d and one line", tc.args, code, errOut, exitPermissionDenied)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("raftctl %q: stderr %q lacks %q", tc.args, errOut, w)
			}
		}
		if tc.args[0] != "status" && out != "" {
			t.Errorf("raftctl %q: stdout %q", tc.args, out)
		}
	}
	out, _, code := runCtl(t, "", nil, "--endpoints", ep, "-o", "json", "get", "k")
	var obj struct{ Kind, Error string }
	if err := json.Unmarshal([]byte(out), &obj); err != nil || code != exitPermissionDenied || obj.Kind != "permission_denied" ||
		!strings.Contains(obj.Error, "kv needs a client credential") {
		t.Fatalf("-o json: exit %d, stdout %q (%v)", code, out, err)
	}
}

// token create prints the token alone on stdout and its id on stderr;
// the token logs in, whoami describes it, and revoke takes its id or the
// token itself, passing no expiry.
func TestCreateWhoamiAndRevoke(t *testing.T) {
	f, ep := serveAuthFake(t, nil)
	op := mint(t, token.Operator, token.Restriction{})
	f.add(op)
	opEnv := map[string]string{envToken: op.String()}
	before := time.Now()
	out, errOut, code := runCtl(t, "", opEnv, "--endpoints", ep, "token", "create", "--prefix", "app/", "--read-only", "--ttl", "2h")
	if code != 0 || strings.Count(out, "\n") != 1 {
		t.Fatalf("token create: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	created, err := token.Parse(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatalf("token create printed %q: %v", out, err)
	}
	id := created.ID().String()
	if want := "token id " + id + " (revoke it with: raftctl token revoke " + id + ")\n"; errOut != want {
		t.Fatalf("token create stderr %q, want %q", errOut, want)
	}
	r := created.Restriction()
	if created.Role() != token.Client || string(r.Prefix) != "app/" || !r.ReadOnly || r.NotAfter.Before(before.Add(2*time.Hour-time.Second)) {
		t.Fatalf("created token says %v %+v", created.Role(), r)
	}

	out, _, code = runCtl(t, "", map[string]string{envToken: created.String()}, "--endpoints", ep, "whoami")
	for _, line := range []string{"roles     client\n", `keys      keys starting with "app/", read-only` + "\n", "token id  " + id + "\n", "expires   "} {
		if code != 0 || !strings.Contains(out, line) {
			t.Errorf("whoami (exit %d) lacks %q:\n%s", code, line, out)
		}
	}
	out, _, code = runCtl(t, "", nil, "--endpoints", ep, "-o", "json", "whoami")
	if code != 0 || !strings.Contains(out, `"client":false`) || !strings.Contains(out, `"operator":false`) {
		t.Errorf("anonymous whoami -o json: exit %d, %s", code, out)
	}

	for _, arg := range []string{id, strings.ToUpper(id), created.String(), "-"} {
		out, errOut, code := runCtl(t, created.String(), opEnv, "--endpoints", ep, "-o", "json", "token", "revoke", arg)
		if code != 0 || out != `{"id":"`+id+`","ok":true}`+"\n" {
			t.Errorf("token revoke %s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
	}
	f.mu.Lock()
	revoked := f.revoked
	f.mu.Unlock()
	if want := strings.Repeat(id+" 0,", 4); strings.Join(revoked, ",")+"," != want {
		t.Fatalf("revocations %q, want %q (by id, no expiry)", revoked, want)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "create", "--operator", "--prefix", "a/"}, "--operator cannot go with --prefix or --read-only"},
		{[]string{"token", "create", "--ttl", "0s"}, "--ttl must be positive"},
		{[]string{"token", "create", "--prefix", strings.Repeat("p", maxKeySize+1)}, "--prefix"},
		{[]string{"token", "revoke", "hunter2"}, "TOKEN: malformed token: it does not start with \"capraft1.\" (or give the token's id: 32 hex digits)"},
		{[]string{"token", "revoke"}, "raftctl token revoke takes 1 argument(s)"},
		{[]string{"token"}, "raftctl token needs a subcommand"},
	} {
		out, errOut, code := runCtl(t, "", opEnv, append([]string{"--endpoints", ep}, tc.args...)...)
		if code != 1 || out != "" || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "hunter2") {
			t.Errorf("raftctl %q: exit %d, stdout %q, stderr %q; want 1 and %q", tc.args, code, out, errOut, tc.want)
		}
	}
}

// testCA is a certificate authority for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{}
	ca.cert, ca.key = ca.issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "raftctl test CA"}, KeyUsage: x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: true,
	})
	return ca
}

// issue signs tmpl with the CA (itself, for the CA) and returns the
// certificate and its new key.
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	parent, signer := tmpl, key
	if ca.cert != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// pemFiles writes cert and key as PEM files and returns their paths.
func pemFiles(t *testing.T, name string, cert *x509.Certificate, key *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, name+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	keyFile = writeFile(t, name+".key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})))
	return certFile, keyFile
}

// --cert and --key present a client certificate: a node that requires
// one from its CA serves raftctl with them and not without.
func TestClientCertificateFlags(t *testing.T) {
	ca := newTestCA(t)
	serverCert, serverKey := ca.issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "node"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	clientCert, clientKey := ca.issue(t, &x509.Certificate{
		Subject:  pkix.Name{CommonName: "raftctl test", OrganizationalUnit: []string{"client"}},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	_, ep := serveAuthFake(t, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
		ClientCAs:    pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
	caFile := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})))
	certFile, keyFile := pemFiles(t, "client", clientCert, clientKey)

	base := []string{"--endpoints", ep, "--timeout", "5s", "--tls-ca", caFile}
	if out, errOut, code := runCtl(t, "", nil, append(base, "--cert", certFile, "--key", keyFile, "whoami")...); code != 0 || !strings.HasPrefix(out, "roles") {
		t.Fatalf("whoami with a client certificate: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, _, code := runCtl(t, "", nil, append(base, "whoami")...); code == 0 {
		t.Fatal("whoami without a client certificate succeeded against a node that requires one")
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cert", certFile}, "--cert and --key go together"},
		{[]string{"--key", keyFile}, "--cert and --key go together"},
		{[]string{"--cert", keyFile, "--key", certFile}, "--cert " + keyFile + ", --key " + certFile + ": tls:"},
		{[]string{"--cert", filepath.Join(t.TempDir(), "none.pem"), "--key", keyFile}, "no such file or directory"},
	} {
		_, errOut, code := runCtl(t, "", nil, append(append(base, tc.args...), "whoami")...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("raftctl %q whoami: exit %d, stderr %q; want 1 and %q", tc.args, code, errOut, tc.want)
		}
	}
}
