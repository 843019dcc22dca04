package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// TestRestrictedTokenAttenuatedAndRevokedOnEveryNode follows a token's
// life end to end: an operator mints a read-only token for a prefix; a
// client uses it through a follower and is held to its grant; its holder
// attenuates it offline to a narrower prefix, which works on another
// follower and cannot be widened; then the operator revokes the original,
// and every node refuses both tokens, to new logins and to connections
// that logged in before.
func TestRestrictedTokenAttenuatedAndRevokedOnEveryNode(t *testing.T) {
	e := newEnv(t, envConfig{})
	ids := e.c.IDs()
	leader := e.waitLeader(ids, 20*time.Second)
	followers := e.others(leader)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	data := map[string]string{"app/config": "v1", "app/public/motd": "hello", "other/secret": "s3"}
	for k, v := range data {
		if _, err := e.admin.Put(ctx, k, []byte(v)); err != nil {
			t.Fatalf("put %s as the operator: %v", k, err)
		}
	}
	tok, tokID, err := e.admin.CreateToken(ctx, "app/", true)
	if err != nil {
		t.Fatalf("create a read-only token for app/: %v", err)
	}
	t.Logf("token %s: read-only, prefix app/", tokID)

	// Through a follower, with the client library.
	ro := e.tokenClient(tok, followers[0])
	e.wantValue(ro, "app/config", data["app/config"], "the read-only token through follower %d", followers[0])
	if _, err := ro.Put(ctx, "app/config", []byte("v2")); !isPermissionDenied(err) {
		t.Errorf("put app/config with the read-only token: %v, want permission denied", err)
	}
	if _, err := ro.Get(ctx, "other/secret", false); !isPermissionDenied(err) {
		t.Errorf("get other/secret with the app/ token: %v, want permission denied", err)
	}

	// Attenuated offline: no node is asked.
	parsed, err := token.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	narrowTok, err := parsed.Attenuate(token.Restriction{RestrictPrefix: true, Prefix: []byte("app/public/"), ReadOnly: true})
	if err != nil {
		t.Fatalf("attenuate to app/public/: %v", err)
	}
	if _, err := parsed.Attenuate(token.Restriction{RestrictPrefix: true, Prefix: []byte("other/")}); err == nil {
		t.Error("attenuating the app/ token to other/ succeeded: a token must only narrow")
	}
	narrow := narrowTok.String()
	nc := e.tokenClient(narrow, followers[1])
	e.wantValue(nc, "app/public/motd", data["app/public/motd"], "the attenuated token through follower %d", followers[1])
	if _, err := nc.Get(ctx, "app/config", false); !isPermissionDenied(err) {
		t.Errorf("get app/config with the token attenuated to app/public/: %v, want permission denied", err)
	}

	// Connections that log in before the revocation: both tokens, on
	// every node, each with its KV capability in hand.
	type held struct {
		desc, key string
		kv        schema.KV
	}
	var conns []held
	tokens := []struct{ name, tok, key string }{
		{"the original token", tok, "app/config"},
		{"the attenuated token", narrow, "app/public/motd"},
	}
	for _, id := range ids {
		for _, tk := range tokens {
			node, rel := loginToken(ctx, dialNode(t, e.c.Addr(id), nil).Node(), tk.tok)
			t.Cleanup(func() { node.Release(); rel() })
			kv := kvCap(t, ctx, node)
			if v, found, err := rawGet(ctx, kv, tk.key); err != nil || !found || v != data[tk.key] {
				t.Fatalf("get %s with %s on node %d: %q (found %v), %v", tk.key, tk.name, id, v, found, err)
			}
			conns = append(conns, held{fmt.Sprintf("%s, logged in on node %d before the revocation", tk.name, id), tk.key, kv})
		}
	}

	if err := e.admin.RevokeToken(ctx, tokID); err != nil {
		t.Fatalf("revoke token %s: %v", tokID, err)
	}
	// Each node applies the revocation when it learns of the commit:
	// wait for it, through the connections that logged in before.
	for _, h := range conns {
		e.waitFor(10*time.Second, h.desc+": refused once revoked", func() (bool, string) {
			gctx, gcancel := opCtx()
			defer gcancel()
			_, _, err := rawGet(gctx, h.kv, h.key)
			p := checkDenied(err, "was revoked")
			return p == "", p
		})
	}
	// Now every node refuses both tokens to new logins...
	for _, id := range ids {
		for _, tk := range tokens {
			cl := e.tokenClient(tk.tok, id)
			gctx, gcancel := opCtx()
			_, err := cl.Get(gctx, tk.key, false)
			gcancel()
			if !isPermissionDenied(err) || !strings.Contains(err.Error(), "revoked") {
				t.Errorf("a new login with %s on node %d after the revocation: %v, want permission denied (revoked)", tk.name, id, err)
			}
		}
	}
	// ... and the clients that used them before.
	for _, c := range []struct {
		name string
		cl   kvClient
		key  string
	}{{"the read-only client", ro, "app/config"}, {"the attenuated client", nc, "app/public/motd"}} {
		if _, err := c.cl.Get(ctx, c.key, false); !isPermissionDenied(err) {
			t.Errorf("%s after the revocation: %v, want permission denied", c.name, err)
		}
	}
	// Nothing else was revoked.
	e.wantValue(e.admin, "app/config", data["app/config"], "the operator after the revocation")
}

// tokenClient returns a client that logs in with tok and talks to node id
// only; it is closed when the test ends.
func (e *env) tokenClient(tok string, id uint64) kvClient {
	e.t.Helper()
	cl, err := newKVClient([]string{e.c.Addr(id)}, tok, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// wantValue reads key linearizably through cl and fails the test unless
// it holds want.
func (e *env) wantValue(cl kvClient, key, want, how string, args ...any) {
	e.t.Helper()
	ctx, cancel := opCtx()
	defer cancel()
	kv, err := cl.Get(ctx, key, false)
	if err != nil || string(kv.Value) != want {
		e.t.Fatalf("get %s with %s: %q, %v; want %q", key, fmt.Sprintf(how, args...), kv.Value, err, want)
	}
}
