package raftnode_test

import (
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/rpc/rpctest"
)

// A follower whose term ran ahead of the leader's (here: set on its disk
// while it was down) answers the leader's heartbeats with a rejection
// carrying its term. That answer must reach the leader, which then steps
// down so that an election brings the follower back. In an idle cluster
// the leader sends only heartbeats, so if the driver drops that answer the
// follower stays without a leader forever (it cannot forward writes nor
// serve linearizable reads) while the other two keep going.
func TestFollowerWithHigherTermRejoinsIdleCluster(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	k.openRetry(t, ctx)
	if _, err := k.putCode(ctx, 1, "k", "v"); err != nil {
		t.Fatal(err)
	}
	x := lead%3 + 1
	rpctest.Eventually(t, 5*time.Second, "the follower catches up", func() bool {
		return c.nodes[x].Status(ctx).Applied >= c.nodes[lead].Status(ctx).Commit
	})
	term := c.nodes[lead].Status(ctx).Term
	c.stop(x)
	st, err := storage.Open(c.dirs[x], storage.Options{NodeID: x})
	if err != nil {
		t.Fatal(err)
	}
	hs, _, err := st.InitialState()
	if err != nil {
		t.Fatal(err)
	}
	hs.Term, hs.Vote = term+5, 0
	if err := st.Save(hs, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	c.start(x)
	// No writes from here on: the cluster is idle.
	rpctest.Eventually(t, 8*time.Second, "the follower with the higher term knows a leader again", func() bool {
		return c.nodes[x].Leader() != 0
	})
}
