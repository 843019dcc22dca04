package client_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
	"github.com/capraft/capraft/token"
)

// securedCluster starts n fake nodes that hold nothing for anonymous
// connections, and registers a client token and an operator token.
func securedCluster(t *testing.T, n int) (*fakeStore, []*fakeNode) {
	t.Helper()
	store, nodes := fakeCluster(t, n)
	store.auth.required.Store(true)
	store.auth.addToken(clientToken, fakeGrant{id: "c1"})
	store.auth.addToken(operatorToken, fakeGrant{id: "o1", operator: true})
	return store, nodes
}

var (
	clientToken   = mintFake(token.Client, "client")
	operatorToken = mintFake(token.Operator, "operator")
)

// The login is pipelined: the first operation is on the wire before the
// login is answered (the fake holds the login until the node has read the
// Get's key), so a token costs the first call no round trip. Each
// connection logs in exactly once.
func TestTokenLoginIsPipelinedWithTheFirstCall(t *testing.T) {
	store, nodes := securedCluster(t, 1)
	const key = "a-key-only-the-pipelined-get-carries"
	store.auth.holdLoginsUntil([]byte(key))
	c := newKVClient(t, addrs(nodes...), client.WithToken(clientToken))
	ctx := ctx(t)
	if _, err := c.Get(ctx, key); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("first Get with a token: %v, want not found", err)
	}
	if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if n := store.auth.logins.Load(); n != 1 {
		t.Fatalf("%d logins on one connection, want 1", n)
	}
	if n := store.batches.Load(); n != 2 {
		t.Fatalf("%d batch calls for a Get and a Put, want 2", n)
	}
}

// A connection that replaces a lost one logs in again: the node holds
// nothing for anonymous connections, so the retried Get succeeds only
// through a new login.
func TestTokenLogsInAgainAfterReconnecting(t *testing.T) {
	store, nodes := securedCluster(t, 1)
	store.setFaults(func(call int64) fault {
		if call == 2 {
			return fault{kind: faultDropBefore}
		}
		return fault{}
	})
	c := newKVClient(t, addrs(nodes...), client.WithToken(clientToken))
	ctx := ctx(t)
	for i := range 2 {
		if _, err := c.Get(ctx, "k"); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	if n := store.batches.Load(); n != 3 {
		t.Fatalf("%d batch calls, want 3 (the second Get's first attempt was dropped)", n)
	}
	if n := store.auth.logins.Load(); n != 2 {
		t.Fatalf("%d logins, want 2 (one per connection)", n)
	}
}

// A node that cannot check the token yet (it has not caught up) is not a
// verdict: the client logs in on another node and the call succeeds.
func TestLoginANodeCannotCheckYetMovesToAnotherNode(t *testing.T) {
	store, nodes := securedCluster(t, 2)
	store.auth.notReady.Store(1)
	c := newKVClient(t, addrs(nodes...), client.WithToken(clientToken))
	if _, err := c.Get(ctx(t), "k"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Get: %v, want it served by the node that could check the token", err)
	}
	if n := store.auth.logins.Load(); n != 2 {
		t.Fatalf("%d logins, want 2 (the refused one, then one on the next node)", n)
	}
}

// An operation outside the connection's grant fails at once with a typed
// error carrying the node's message; it is not tried on another node,
// and the client stays on the node that answered.
func TestPermissionDeniedIsTypedAndNotRetried(t *testing.T) {
	store, nodes := securedCluster(t, 3)
	ctx := ctx(t)

	anon := newKVClient(t, addrs(nodes...))
	_, err := anon.Get(ctx, "k")
	var se *client.ServerError
	if !errors.Is(err, client.ErrPermissionDenied) || !errors.As(err, &se) || se.Code != client.CodePermissionDenied {
		t.Fatalf("Get without a credential: %v, want permission denied", err)
	}
	if se.Addr != nodes[0].addr || !strings.Contains(se.Message, "kv needs a client credential") ||
		strings.HasPrefix(se.Message, "permissionDenied") {
		t.Fatalf("error %+v: want node 1's message without the code prefix", se)
	}
	want := `get "k": permission denied: kv needs a client credential`
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start %q", err, want)
	}
	if _, err := anon.Put(ctx, "k", []byte("v")); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("Put without a credential: %v", err)
	}
	if _, err := anon.Ping(ctx, "x"); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("Ping without a credential: %v", err)
	}
	if _, err := anon.Status(ctx, nodes[1].addr); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("Status without a credential: %v", err)
	}
	if n := store.auth.denied("kv"); n != 1 {
		t.Fatalf("kv refused %d times, want once: a refusal must not be retried", n)
	}
	info, err := anon.Info(ctx)
	if err != nil || info.ID != 1 {
		t.Fatalf("Info after the refusals = %+v, %v; want node 1 still (a refusal does not mark a node down)", info, err)
	}

	// A client's token does not reach admin.
	user := newKVClient(t, addrs(nodes...), client.WithToken(clientToken))
	if _, _, err := user.Members(ctx); !errors.Is(err, client.ErrPermissionDenied) ||
		!strings.Contains(err.Error(), "admin needs an operator credential") {
		t.Fatalf("Members with a client token: %v", err)
	}
	if n := store.auth.denied("admin"); n != 1 {
		t.Fatalf("admin refused %d times, want once", n)
	}

	// A refused token: refused at login, once.
	bad := newKVClient(t, addrs(nodes...), client.WithToken(mintFake(token.Client, "unknown")))
	before := store.auth.logins.Load()
	if _, err := bad.Get(ctx, "k"); !errors.Is(err, client.ErrPermissionDenied) || !strings.Contains(err.Error(), "the token was refused") {
		t.Fatalf("Get with an unknown token: %v", err)
	}
	if n := store.auth.logins.Load() - before; n != 1 {
		t.Fatalf("%d logins for a refused token, want 1", n)
	}
}

// A permissionDenied answer to one operation of a batch (a restricted
// capability's refusal) is the same typed error, and is not retried.
func TestPermissionDeniedResultIsNotRetried(t *testing.T) {
	store, nodes := fakeCluster(t, 3)
	store.setFaults(func(int64) fault { return fault{kind: faultCode, code: schema.ErrorCode_permissionDenied} })
	c := newKVClient(t, addrs(nodes...))
	_, err := c.Put(ctx(t), "k", []byte("v"))
	var se *client.ServerError
	if !errors.Is(err, client.ErrPermissionDenied) || !errors.As(err, &se) || se.Message != "fake fault permissionDenied" {
		t.Fatalf("Put answered permissionDenied: %v", err)
	}
	if n := store.batches.Load(); n != 1 {
		t.Fatalf("%d batch calls, want 1", n)
	}
	if errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("a refused write reports an unknown outcome: %v", err)
	}
}

// Identity reports what the token grants, as the node says.
func TestIdentityDescribesTheLogin(t *testing.T) {
	store, nodes := securedCluster(t, 1)
	prefix := "app/"
	expires := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	narrow := mintFake(token.Client, "narrow")
	store.auth.addToken(narrow, fakeGrant{id: "n1", prefix: &prefix, readOnly: true, expires: expires.UnixMilli()})
	c := newKVClient(t, addrs(nodes...), client.WithToken(narrow))
	id, err := c.Identity(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := client.Identity{Client: true, Restricted: true, Prefix: "app/", ReadOnly: true, TokenID: "n1", Expires: expires}
	if !id.Expires.Equal(want.Expires) {
		t.Fatalf("expires %v, want %v", id.Expires, want.Expires)
	}
	id.Expires = want.Expires
	if id != want {
		t.Fatalf("identity %+v\nwant     %+v", id, want)
	}
	anon, err := newKVClient(t, addrs(nodes...)).Identity(ctx(t))
	if err != nil || anon != (client.Identity{}) {
		t.Fatalf("anonymous identity %+v, %v; want nothing held", anon, err)
	}
}

// An operator mints a token, which then logs in; revoking it passes its
// expiry and ends it.
func TestCreateAndRevokeToken(t *testing.T) {
	store, nodes := securedCluster(t, 2)
	ctx := ctx(t)
	op := newKVClient(t, addrs(nodes...), client.WithToken(operatorToken))
	spec := client.TokenSpec{RestrictPrefix: true, Prefix: "app/", ReadOnly: true, TTL: time.Hour + 1500*time.Microsecond}
	tok, id, err := op.CreateToken(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.TTL = time.Hour + 2*time.Millisecond // sent in whole milliseconds, rounded up
	if store.auth.specs[0] != spec {
		t.Fatalf("createToken got %+v, want %+v", store.auth.specs[0], spec)
	}
	user := newKVClient(t, []string{nodes[1].addr}, client.WithToken(tok))
	who, err := user.Identity(ctx)
	if err != nil || who.TokenID != id || who.Prefix != "app/" || !who.ReadOnly || who.Operator {
		t.Fatalf("identity of the new token: %+v, %v", who, err)
	}
	if err := op.RevokeToken(ctx, id, who.Expires); err != nil {
		t.Fatal(err)
	}
	if got := store.auth.revoked; len(got) != 1 || got[0] != (fakeRevocation{id: id, expires: who.Expires.UnixMilli()}) {
		t.Fatalf("revocations %+v", got)
	}
	if _, err := newKVClient(t, addrs(nodes...), client.WithToken(tok)).Get(ctx, "app/k"); !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("Get with a revoked token: %v", err)
	}
	if _, _, err := op.CreateToken(ctx, client.TokenSpec{TTL: -time.Second}); err == nil {
		t.Fatal("CreateToken with a negative TTL succeeded")
	}
}

// New refuses a token that is not well formed, without echoing it.
func TestMalformedTokenIsRefusedByNew(t *testing.T) {
	for _, tok := range []string{"secret-but-not-a-token", clientToken + "x", " " + clientToken} {
		_, err := client.New([]string{"127.0.0.1:1"}, client.WithToken(tok))
		if !errors.Is(err, token.ErrMalformed) || strings.Contains(err.Error(), tok) {
			t.Errorf("New with token %q: %v, want a malformed token error that does not show it", tok, err)
		}
	}
}

// Status of another endpoint, on a connection of its own, and the move to
// the leader's endpoint (which asks the node's status) log in too.
func TestTokenReachesStatusAndTheLeader(t *testing.T) {
	store, nodes := securedCluster(t, 3)
	store.mu.Lock()
	store.leader = 3
	store.mu.Unlock()
	c := newKVClient(t, addrs(nodes...), client.WithToken(clientToken))
	ctx := ctx(t)
	st, err := c.Status(ctx, nodes[1].addr)
	if err != nil || st.ID != 2 {
		t.Fatalf("Status of node 2 = %+v, %v", st, err)
	}
	rpctest.Eventually(t, 10*time.Second, "the client talks to node 3, the leader", func() bool {
		if _, err := c.Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		return err == nil && info.ID == 3
	})
	if n := store.auth.denied(""); n != 0 {
		t.Fatalf("%d refusals with a client token", n)
	}
}
