package raftnode_test

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/schema"
)

func (k *kvClient) keepAlive(ctx context.Context) error {
	f, rel := k.kv.KeepAlive(ctx, func(p schema.KV_keepAlive_Params) error { p.SetSession(k.session); return nil })
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return err
	}
	if res.HasError() {
		e, _ := res.Error()
		msg, _ := e.Message_()
		return &codeError{e.Code(), msg}
	}
	return nil
}

// A session idle for longer than kv.Config.SessionTTL is gone: a write
// with it, through the leader or through a follower, answers
// sessionExpired, and so does a keepalive; a session kept alive survives.
func TestSessionExpiryEndToEnd(t *testing.T) {
	// Long enough that a loaded machine under -race does not stall a
	// kept-alive session past it between two keepalives.
	const ttl = time.Second
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.KV.SessionTTL = ttl })
	lead := c.leader()
	ctx := ctxT(t)
	for _, id := range []uint64{lead, lead%3 + 1} {
		idle, kept := c.client(id), c.client(id)
		idle.openRetry(t, ctx)
		kept.openRetry(t, ctx)
		if _, err := idle.putCode(ctx, 1, "a", "1"); err != nil {
			t.Fatal(err)
		}
		if _, err := kept.putCode(ctx, 1, "b", "1"); err != nil {
			t.Fatal(err)
		}
		// Session expiry is a matter of elapsed time: let 3 TTLs pass,
		// keeping one session alive.
		end := time.Now().Add(3 * ttl)
		for time.Now().Before(end) {
			if err := kept.keepAlive(ctx); err != nil {
				t.Fatalf("node %d: keepalive: %v", id, err)
			}
			time.Sleep(ttl / 5)
		}
		// The kept session writes right after its last keepalive, before
		// the idle one's calls move the log's clock on.
		if _, err := kept.putCode(ctx, 2, "b", "2"); err != nil {
			t.Errorf("node %d: write with a kept-alive session: %v", id, err)
		}
		if _, err := idle.putCode(ctx, 2, "a", "2"); !isCode(err, schema.ErrorCode_sessionExpired) {
			t.Errorf("node %d (leader %d): write with an expired session: %v, want sessionExpired", id, lead, err)
		}
		if err := idle.keepAlive(ctx); !isCode(err, schema.ErrorCode_sessionExpired) {
			t.Errorf("node %d (leader %d): keepalive of an expired session: %v, want sessionExpired", id, lead, err)
		}
	}
}
