package raftnode_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// logRecorder keeps every line a node logs, so a test can wait for what
// the node tells its operator.
type logRecorder struct{ rpctest.LogBuffer }

func (r *logRecorder) has(s string) bool { return r.hasSince(0, s) }

// mark returns a position to look for later lines from (hasSince).
func (r *logRecorder) mark() int { return len(r.String()) }

// hasSince reports whether a line logged after mark contains s.
func (r *logRecorder) hasSince(mark int, s string) bool {
	return strings.Contains(r.String()[mark:], s)
}

// recordLogs makes every node of c log (at info and above) into its own
// recorder as well as the test's log.
// On failure the test's log shows them.
func recordLogs(t *testing.T) (map[uint64]*logRecorder, func(*raftnode.Config)) {
	recs := map[uint64]*logRecorder{}
	var mu sync.Mutex
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for id, rec := range recs {
			t.Logf("node %d logged:\n%s", id, rec.String())
		}
	})
	return recs, func(cfg *raftnode.Config) {
		mu.Lock()
		rec := recs[cfg.ID]
		if rec == nil {
			rec = &logRecorder{}
			recs[cfg.ID] = rec
		}
		mu.Unlock()
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Info, Output: rec}).With("node", cfg.ID)
	}
}

// wipe stops node id and gives it a new, empty data directory, as an
// operator who lost (or deleted) its disk and restarts it with the same
// --id and --peers would.
func (c *testCluster) wipe(id uint64) {
	c.stop(id)
	c.dirs[id] = c.t.TempDir()
}

// TestWipedFollowerIsRestoredWithoutLosingWrites: a follower restarted
// with an empty data directory and its usual flags neither bootstraps a
// cluster of its own nor counts as the voter it was; the leader catches
// it up and makes it a voter again, counted with its new storage, with no
// operator step, and every acknowledged write is on it.
func TestWipedFollowerIsRestoredWithoutLosingWrites(t *testing.T) {
	ctx := context.Background()
	recs, logTo := recordLogs(t)
	c := newTestCluster(t, 3, logTo)
	lead := c.leader()
	k := c.client(lead)
	k.openRetry(t, ctx)
	for i := range 20 {
		if _, err := k.put(ctx, fmt.Sprintf("k%02d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	f := lead%3 + 1
	oldInc := c.nodes[f].Status(ctx).Incarnation
	wipedAt := recs[f].mark()
	c.wipe(f)
	c.start(f)
	newInc := c.nodes[f].Status(ctx).Incarnation
	if newInc == oldInc || newInc == 0 {
		t.Fatalf("wiped node kept incarnation %x (new %x)", oldInc, newInc)
	}
	rpctest.Eventually(t, 10*time.Second, "the leader counts the wiped node's new storage as a voter", func() bool {
		st := c.nodes[c.leader()].Status(ctx)
		inc, ok := st.Config.IncarnationOf(f)
		return ok && inc == newInc && slices.Contains(st.Config.Voters, f)
	})
	leaderSaid := false
	for id, rec := range recs {
		leaderSaid = leaderSaid || (id != f && rec.has("a voter lost its storage"))
	}
	if !leaderSaid || !recs[f].hasSince(wipedAt, "this node lost its data") {
		t.Errorf("the leader and the wiped node must say what happened")
	}
	if recs[f].hasSince(wipedAt, "bootstrapped a new cluster") {
		t.Fatalf("the wiped node bootstrapped a cluster of its own")
	}
	c.awaitApplied(ctx) // a serializable read sees what the node applied
	kf := c.client(f)
	for i := range 20 {
		v, found, err := kf.get(ctx, fmt.Sprintf("k%02d", i), true)
		if err != nil || !found || v != "v" {
			t.Fatalf("k%02d on the restored node: %q %v %v", i, v, found, err)
		}
	}
}

// TestWipedNodeDoesNotHelpElectAStaleLeader is the data-loss scenario of
// issue 12 in process: with one follower stopped, writes are acknowledged
// by the leader and the other follower; that follower then loses its disk
// and the leader dies. The stopped follower, which lacks the writes, and
// the wiped one must not elect a leader (the wiped node's vote does not
// count), so the writes survive until the old leader is back; then all
// three are voters again and every write is there.
func TestWipedNodeDoesNotHelpElectAStaleLeader(t *testing.T) {
	ctx := context.Background()
	recs, logTo := recordLogs(t)
	c := newTestCluster(t, 3, logTo)
	lead := c.leader()
	behind, wiped := lead%3+1, (lead+1)%3+1
	k := c.client(lead)
	k.openRetry(t, ctx)
	c.awaitApplied(ctx) // everyone holds the configuration and the session
	c.stop(behind)
	for i := range 60 {
		if _, err := k.put(ctx, fmt.Sprintf("w%02d", i), "acked"); err != nil {
			t.Fatal(err)
		}
	}
	c.wipe(wiped)
	c.start(wiped)
	c.stop(lead)
	c.start(behind)
	// The stopped-behind node cannot win: the only other running node
	// lost its data, and says so; the behind node says why no leader
	// comes (it counts the wiped node's refusal as what it is).
	rpctest.Eventually(t, 20*time.Second, "the surviving nodes explain why no leader can be elected", func() bool {
		return recs[behind].has("voters that lost their data are not counted") && recs[wiped].has("this node lost its data")
	})
	for _, id := range []uint64{behind, wiped} {
		if st := c.nodes[id].Status(ctx); st.Role == schema.Role_leader {
			t.Fatalf("node %d was elected in term %d without the old leader's data", id, st.Term)
		}
	}
	c.start(lead)
	newLead := c.leader()
	rpctest.Eventually(t, 20*time.Second, "three voters again, each counted with the storage it has", func() bool {
		st := c.nodes[newLead].Status(ctx)
		if len(st.Config.Voters) != 3 || len(st.Config.AutoPromote) != 0 {
			return false
		}
		for _, id := range st.Config.Voters {
			n := c.nodes[id]
			if inc, ok := st.Config.IncarnationOf(id); n == nil || !ok || inc != n.Status(ctx).Incarnation {
				return false
			}
		}
		return true
	})
	kl := c.client(newLead)
	for i := range 60 {
		v, found, err := kl.get(ctx, fmt.Sprintf("w%02d", i), false)
		if err != nil || !found || v != "acked" {
			t.Fatalf("acknowledged write w%02d: %q %v %v", i, v, found, err)
		}
	}
}

// TestNewClusterWaitsForEveryInitialMember: a cluster is created only when
// every member listed in --peers answers with empty storage; until then
// the nodes say whom they wait for, and nothing is elected.
func TestNewClusterWaitsForEveryInitialMember(t *testing.T) {
	recs, logTo := recordLogs(t)
	c := &testCluster{t: t, addrs: map[uint64]string{}, dirs: map[uint64]string{}, lns: map[uint64]net.Listener{},
		nodes: map[uint64]*raftnode.Node{}, srvs: map[uint64]*rpc.Server{}, opts: logTo}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.lns[id], c.addrs[id], c.dirs[id] = ln, ln.Addr().String(), t.TempDir()
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	c.lns[3].Close() // node 3 is not up yet: its address refuses connections
	delete(c.lns, 3)
	c.start(1)
	c.start(2)
	rpctest.Eventually(t, 20*time.Second, "the first two nodes say they wait for node 3", func() bool {
		return recs[1].has("waiting for every initial member") && recs[2].has("waiting for every initial member")
	})
	if c.nodes[1].Leader() != 0 || c.nodes[2].Leader() != 0 || recs[1].has("bootstrapped") {
		t.Fatal("a cluster was created without node 3")
	}
	c.start(3)
	k := c.client(c.leader())
	k.openRetry(t, context.Background())
	if _, err := k.put(context.Background(), "k", "v"); err != nil {
		t.Fatal(err)
	}
}

// awaitApplied waits until every running node has applied what the
// leader has committed.
func (c *testCluster) awaitApplied(ctx context.Context) {
	lead := c.leader()
	commit := c.nodes[lead].Status(ctx).Commit
	rpctest.Eventually(c.t, 10*time.Second, "every node applies what the leader committed", func() bool {
		for _, n := range c.nodes {
			if n.Status(ctx).Applied < commit {
				return false
			}
		}
		return true
	})
}

// TestForcedNewClusterRecoversFromAWipedMajority: when two of three nodes
// lost their data, the survivor refuses to elect; the operator's way out
// is to restart it with ForceNewCluster (--force-new-cluster): it becomes
// the only voter, keeping every write, and the wiped nodes, added back
// with member add, are caught up and become voters.
func TestForcedNewClusterRecoversFromAWipedMajority(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	k := c.client(lead)
	k.openRetry(t, ctx)
	for i := range 10 {
		if _, err := k.put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	c.awaitApplied(ctx)
	survivor := lead
	var wiped []uint64
	for id := range c.nodes {
		if id != survivor {
			wiped = append(wiped, id)
		}
	}
	for _, id := range wiped {
		c.wipe(id)
		c.start(id)
	}
	c.stop(survivor)
	c.opts = func(cfg *raftnode.Config) { cfg.ForceNewCluster = cfg.ID == survivor }
	c.start(survivor)
	c.opts = nil
	rpctest.Eventually(t, 10*time.Second, "the forced node leads alone", func() bool {
		return c.nodes[survivor].Leader() == survivor
	})
	ks := c.client(survivor)
	ks.openRetry(t, ctx)
	for i := range 10 {
		if v, found, err := ks.get(ctx, fmt.Sprintf("k%d", i), false); err != nil || !found || v != "v" {
			t.Fatalf("k%d after forcing a new cluster: %q %v %v", i, v, found, err)
		}
	}
	for _, id := range wiped {
		if err := adminCall(ctx, c, survivor, func(a schema.Admin) error {
			f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error { p.SetId(id); return p.SetAddress(c.addrs[id]) })
			defer rel()
			return resultErr(f.Struct())
		}); err != nil {
			t.Fatalf("add node %d back: %v", id, err)
		}
		rpctest.Eventually(t, 10*time.Second, "the added node becomes a voter", func() bool {
			return slices.Contains(c.nodes[survivor].Status(ctx).Config.Voters, id)
		})
	}
	if _, err := ks.put(ctx, "after", "three voters"); err != nil {
		t.Fatal(err)
	}
}
