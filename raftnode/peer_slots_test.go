package raftnode_test

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

// TestRestartedPeerRejoinsWhileClientsFillEverySlot: client connections
// that fill every slot a node has for clients do not keep a restarted
// peer out: the peer's connection takes a slot reserved for peers, and
// the peer catches up.
func TestRestartedPeerRejoinsWhileClientsFillEverySlot(t *testing.T) {
	const maxConns, peerConns = 16, 4
	ctx := context.Background()
	c := newTestCluster(t, 3, nil)
	c.server = func(cfg *rpc.Config) { cfg.MaxConns, cfg.PeerConns, cfg.EvictIdle = maxConns, peerConns, -1 }
	lead := c.leader()
	f := lead%3 + 1
	c.stop(f)
	// Restart the others with the small connection table, then fill
	// every client slot of both.
	for id := range c.nodes {
		c.stop(id)
		c.start(id)
	}
	for id := range c.nodes {
		// All client slots but one, which the test's own client takes.
		for range maxConns - peerConns - 1 {
			cc := rpctest.Dial(t, c.addrs[id], rpc.DialConfig{})
			f, rel := cc.Node().Info(ctx, nil)
			_, err := f.Struct()
			rel()
			if err != nil {
				t.Fatalf("client connection to node %d: %v", id, err)
			}
		}
	}
	k := c.client(c.leader())
	k.openRetry(t, ctx)
	if _, err := k.put(ctx, "while-full", "v"); err != nil {
		t.Fatal(err)
	}
	c.start(f)
	rpctest.Eventually(t, 10*time.Second, "the restarted peer catches up", func() bool {
		return c.nodes[f].Status(ctx).Applied >= c.nodes[c.leader()].Status(ctx).Commit
	})
	// It keeps the reserved slots as a peer (not on probation, which
	// would close it after the handshake timeout).
	rpctest.Eventually(t, 10*time.Second, "the restarted node's connections held as a peer's", func() bool {
		for id, srv := range c.srvs {
			if st := srv.Stats(); id != f && (st.Peers < 2 || st.OnProbation > 0) {
				return false
			}
		}
		return true
	})
}
