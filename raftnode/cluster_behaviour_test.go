package raftnode_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// A batch of reads whose answers would exceed a client's message limit
// is answered in part: the reads past the batch's budget are told to
// retry instead of the whole answer aborting the connection.
func TestBatchOfLargeGetsFitsInAMessage(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	k.openRetry(t, ctx)
	big := strings.Repeat("v", 1000<<10)
	for i := range 20 {
		if _, err := k.putCode(ctx, uint64(i+1), fmt.Sprintf("big%02d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	errs, kinds, err := k.batch(ctx, 0, 20, func(i int, op schema.Op) error {
		g, err := op.NewGet()
		if err != nil {
			return err
		}
		g.SetConsistency(schema.Consistency_serializable)
		return g.SetKey([]byte(fmt.Sprintf("big%02d", i)))
	})
	if err != nil {
		t.Fatalf("batch of 20 gets of 1000 KiB: %v", err)
	}
	served := 0
	for i := range errs {
		if kinds[i] == schema.Result_Which_get {
			served++
		} else if !strings.Contains(fmt.Sprint(errs[i]), "retry") {
			t.Fatalf("read %d: %v, want a retryable refusal", i, errs[i])
		}
	}
	if served == 0 || served == 20 {
		t.Fatalf("%d of 20 reads served; want some but not all", served)
	}
}

// A removed follower learns that its removal committed and stops by
// itself.
func TestRemovedFollowerStops(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	x := lead%3 + 1
	if err := adminCall(ctx, c, lead, func(a schema.Admin) error {
		f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(x); return nil })
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.nodes[x].Done():
		if err := c.nodes[x].Err(); err == nil || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("node %d stopped with %v", x, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("removed node %d still running after 10s", x)
	}
}

// A cluster whose nodes serve TLS replicates over TLS: peers dial each
// other with TLS and a TLS client reads its write back from every node.
func TestClusterOverTLS(t *testing.T) {
	serverTLS, clientTLS := rpctest.SelfSignedTLS(t)
	c := newCluster(t, 3, func(cfg *raftnode.Config) { cfg.Dial.TLSConfig = clientTLS }, serverTLS)
	lead := c.leader()
	ctx := ctxT(t)
	cl, err := client.New([]string{c.addrs[lead%3+1]}, client.WithTLS(clientTLS))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Put(ctx, "k", []byte("over tls")); err != nil {
		t.Fatalf("put through a follower over TLS: %v", err)
	}
	for id, addr := range c.addrs {
		rc, err := client.New([]string{addr}, client.WithTLS(clientTLS))
		if err != nil {
			t.Fatal(err)
		}
		kv, err := rc.Get(ctx, "k")
		rc.Close()
		if err != nil || string(kv.Value) != "over tls" {
			t.Fatalf("node %d: %+v, %v", id, kv, err)
		}
	}
}

// Followers learn a new commit index within about a millisecond even when
// no further write carries it (the leader announces it once quiet), not a
// heartbeat interval later. With 1 s heartbeats, a cluster that left it
// to heartbeats would pass a round only when a heartbeat happened to fall
// in its 200 ms window: all four rounds about once in 600 runs.
func TestFollowersApplyWithoutWaitingForAHeartbeat(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.HeartbeatInterval, cfg.ElectionTimeout = time.Second, 3*time.Second
	})
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k := c.client(lead)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 4 {
		if _, err := k.put(ctx, fmt.Sprintf("k%d", round), "v"); err != nil {
			t.Fatal(err)
		}
		want := c.nodes[lead].Status(ctx).Applied
		rpctest.Eventually(t, 200*time.Millisecond, fmt.Sprintf("round %d: every follower applies index %d", round, want), func() bool {
			for id, n := range c.nodes {
				if id != lead && n.Status(ctx).Applied < want {
					return false
				}
			}
			return true
		})
	}
}
