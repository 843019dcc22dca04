package e2e

// Raw connections to a node: rpc.Dial and the bootstrap Node, with nothing
// but schema/ on top, as an attacker or a test that needs one exact
// connection (not the client library's) uses them.

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// dialNode opens a connection to addr (TLS with tlsCfg if not nil) and
// returns it; it is closed when the test ends.
func dialNode(t testing.TB, addr string, tlsCfg *tls.Config) *rpc.ClientConn {
	t.Helper()
	ctx, cancel := opCtx()
	defer cancel()
	cc, err := rpc.Dial(ctx, addr, rpc.DialConfig{TLSConfig: tlsCfg, Timeout: time.Second, KeepAlive: -1})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// nodeInfo calls info, which every connection holds, and returns the
// node's id.
func nodeInfo(ctx context.Context, node schema.Node) (uint64, error) {
	f, rel := node.Info(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return 0, err
	}
	info, err := res.Info()
	if err != nil {
		return 0, err
	}
	return info.Id(), nil
}

// loginToken logs in on node with tok and returns the Node it granted,
// pipelined (a refused login shows in the first call made through it),
// and its release.
func loginToken(ctx context.Context, node schema.Node, tok string) (schema.Node, func()) {
	f, rel := node.Login(ctx, func(p schema.Node_login_Params) error {
		cred, err := p.NewCredential()
		if err != nil {
			return err
		}
		return cred.SetToken(tok)
	})
	return f.Node().AddRef(), rel
}

// kvOf returns node's KV capability, pipelined, and its release.
func kvOf(ctx context.Context, node schema.Node) (schema.KV, func()) {
	f, rel := node.Kv(ctx, nil)
	return f.Kv().AddRef(), rel
}

// rawGet reads key through kv, linearizably. A result that carries an
// error is returned as one ("code: message").
func rawGet(ctx context.Context, kv schema.KV, key string) (value string, found bool, err error) {
	f, rel := kv.Get(ctx, func(p schema.KV_get_Params) error {
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		op.SetConsistency(schema.Consistency_linearizable)
		return op.SetKey([]byte(key))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return "", false, err
	}
	r, err := res.Result()
	if err != nil {
		return "", false, err
	}
	if err := resultError(r); err != nil {
		return "", false, err
	}
	g, err := r.Get()
	if err != nil {
		return "", false, err
	}
	if !g.Found() {
		return "", false, nil
	}
	kvp, err := g.Kv()
	if err != nil {
		return "", false, err
	}
	v, err := kvp.Value()
	return string(v), true, err
}

// resultError returns the error a KV result carries, if any.
func resultError(r schema.Result) error {
	if r.Which() != schema.Result_Which_error {
		return nil
	}
	e, err := r.Error()
	if err != nil {
		return err
	}
	msg, _ := e.Message_()
	return fmt.Errorf("%s: %s", e.Code(), msg)
}

// deniedPrefix starts the message of every refusal for lack of
// authority.
const deniedPrefix = "permissionDenied: "

// checkDenied returns "" if err is a refusal for lack of authority whose
// message contains want, and otherwise what is wrong with it.
func checkDenied(err error, want string) string {
	switch {
	case err == nil:
		return "succeeded, want permissionDenied"
	case !strings.Contains(err.Error(), deniedPrefix):
		return fmt.Sprintf("failed with %q, want permissionDenied", err)
	case !strings.Contains(err.Error(), want):
		return fmt.Sprintf("refused with %q, which does not say %q", err, want)
	}
	return ""
}
