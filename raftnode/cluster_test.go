package raftnode_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// testCluster is an in-process cluster: each node has its own data
// directory and serves on its own loopback listener.
type testCluster struct {
	t     testing.TB
	addrs map[uint64]string
	dirs  map[uint64]string
	lns   map[uint64]net.Listener
	nodes map[uint64]*raftnode.Node
	srvs  map[uint64]*rpc.Server
	opts  func(*raftnode.Config)
	// serverTLS, when set, makes every node serve TLS (peers then dial
	// with the Dial.TLSConfig that opts sets).
	serverTLS *tls.Config
	// server, when set, adjusts each node's rpc server configuration.
	server func(*rpc.Config)
}

func newTestCluster(t *testing.T, size int, opts func(*raftnode.Config)) *testCluster {
	return newTestClusterTB(t, size, opts)
}

func newTestClusterTB(t testing.TB, size int, opts func(*raftnode.Config)) *testCluster {
	return newCluster(t, size, opts, nil)
}

func newCluster(t testing.TB, size int, opts func(*raftnode.Config), serverTLS *tls.Config) *testCluster {
	c := &testCluster{t: t, addrs: map[uint64]string{}, dirs: map[uint64]string{}, lns: map[uint64]net.Listener{},
		nodes: map[uint64]*raftnode.Node{}, srvs: map[uint64]*rpc.Server{}, opts: opts, serverTLS: serverTLS}
	for id := uint64(1); id <= uint64(size); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.lns[id] = ln
		c.addrs[id] = ln.Addr().String()
		c.dirs[id] = t.TempDir()
	}
	for id := range c.addrs {
		c.start(id)
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

func (c *testCluster) start(id uint64) {
	t := c.t
	ln := c.lns[id]
	if ln == nil {
		var err error
		for range 50 { // the port was just released; retry briefly if the OS has not yet
			if ln, err = net.Listen("tcp", c.addrs[id]); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("relisten on %s: %v", c.addrs[id], err)
		}
	}
	delete(c.lns, id)
	cfg := raftnode.Config{
		ID: id, Version: "test", Advertise: c.addrs[id], DataDir: c.dirs[id], Peers: c.addrs,
		HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
		Logger: rpctest.Logger(t).With("node", id),
	}
	if lvl := os.Getenv("TEST_LOG"); lvl != "" {
		cfg.Logger.SetLevel(hclog.LevelFromString(lvl))
	}
	if c.opts != nil {
		c.opts(&cfg)
	}
	n, err := raftnode.New(cfg)
	if err != nil {
		t.Fatalf("start node %d: %v", id, err)
	}
	rcfg := rpc.Config{Bootstrap: n.Bootstrap, TLSConfig: c.serverTLS, Logger: cfg.Logger.Named("rpc")}
	if c.server != nil {
		c.server(&rcfg)
	}
	srv := rpc.NewServer(rcfg)
	go srv.Serve(ln)
	c.nodes[id], c.srvs[id] = n, srv
}

func (c *testCluster) stop(id uint64) {
	if c.srvs[id] == nil {
		return
	}
	c.srvs[id].Close()
	c.nodes[id].Close()
	delete(c.srvs, id)
	delete(c.nodes, id)
}

// leader waits until one node leads and every running node agrees.
func (c *testCluster) leader() uint64 {
	var lead uint64
	rpctest.Eventually(c.t, 10*time.Second, "a leader all running nodes agree on", func() bool {
		lead = 0
		for _, n := range c.nodes {
			l := n.Leader()
			if l == 0 || (lead != 0 && l != lead) {
				return false
			}
			lead = l
		}
		_, running := c.nodes[lead]
		return running
	})
	return lead
}

// kvClient is a minimal raw client for one node.
type kvClient struct {
	t       testing.TB
	kv      schema.KV
	session uint64
	seq     uint64
}

func (c *testCluster) client(id uint64) *kvClient {
	cc := rpctest.Dial(c.t, c.addrs[id], rpc.DialConfig{})
	f, rel := cc.Node().Kv(context.Background(), nil)
	c.t.Cleanup(rel)
	return &kvClient{t: c.t, kv: f.Kv()}
}

func (k *kvClient) open(ctx context.Context) error {
	if err := k.openCode(ctx); err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	return nil
}

// put writes key=value with the next sequence number.
func (k *kvClient) put(ctx context.Context, key, value string) (uint64, error) {
	k.seq++
	return k.putSeq(ctx, k.seq, key, value)
}

func (k *kvClient) putSeq(ctx context.Context, seq uint64, key, value string) (uint64, error) {
	return k.putCode(ctx, seq, key, value)
}

func (k *kvClient) get(ctx context.Context, key string, serializable bool) (string, bool, error) {
	v, _, _, found, err := k.getCode(ctx, key, serializable)
	return v, found, err
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Writes through any node (a follower hands them to the leader) are read
// back linearizably from every node.
func TestClusterServesThroughEveryNode(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	for id := uint64(1); id <= 3; id++ {
		k := c.client(id)
		if err := k.open(ctx); err != nil {
			t.Fatalf("node %d: %v", id, err)
		}
		for i := range 20 {
			if _, err := k.put(ctx, fmt.Sprintf("k%d-%d", id, i), fmt.Sprintf("v%d", i)); err != nil {
				t.Fatalf("put via node %d (leader %d): %v", id, lead, err)
			}
		}
	}
	for id := uint64(1); id <= 3; id++ {
		k := c.client(id)
		for w := uint64(1); w <= 3; w++ {
			v, found, err := k.get(ctx, fmt.Sprintf("k%d-%d", w, 19), false)
			if err != nil || !found || v != "v19" {
				t.Fatalf("get via node %d: %q %v %v", id, v, found, err)
			}
		}
	}
}

// A retried write (same session and sequence number) is applied once.
func TestRetriedWriteAppliesOnce(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.leader()
	ctx := ctxT(t)
	k := c.client(2)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	rev1, err := k.putSeq(ctx, 1, "a", "1")
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := k.putSeq(ctx, 1, "a", "1")
	if err != nil {
		t.Fatal(err)
	}
	if rev1 != rev2 {
		t.Fatalf("the retry was applied again: revisions %d then %d", rev1, rev2)
	}
}

// Killing the leader: a new one takes over and every acknowledged write
// survives; the restarted node catches up.
func TestLeaderFailover(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.SnapshotEntries, cfg.SnapshotCatchupEntries, cfg.WALSegmentSize = 50, 10, 16<<10
	})
	old := c.leader()
	ctx := ctxT(t)
	other := old%3 + 1
	k := c.client(other)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := k.put(ctx, fmt.Sprintf("a%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	c.stop(old)
	lead := c.leader()
	if lead == old {
		t.Fatalf("leader %d still leads after it stopped", lead)
	}
	for i := range 300 {
		if _, err := k.put(ctx, fmt.Sprintf("b%d", i), strings.Repeat("y", 200)); err != nil {
			t.Fatalf("put after failover: %v", err)
		}
	}
	c.start(old)
	rpctest.Eventually(t, 10*time.Second, "the restarted node catches up", func() bool {
		st := c.nodes[old].Status(ctx)
		return st.Applied >= c.nodes[lead].Status(ctx).Commit
	})
	if got := c.nodes[old].Status(ctx).SnapshotsInstalled; got == 0 {
		t.Errorf("the restarted node caught up without InstallSnapshot; the test meant to exercise it")
	}
	kr := c.client(old)
	for _, key := range []string{"a0", "a29", "b0", "b299"} {
		if _, found, err := kr.get(ctx, key, true); err != nil || !found {
			t.Fatalf("restarted node lacks %s: %v %v", key, found, err)
		}
	}
}

// A node whose data directory is lost is removed, wiped, and added back
// as a new member that starts empty with Join; it catches up and serves.
func TestRemoveAndReAddAfterDataLoss(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := k.put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	lost := lead%3 + 1
	c.stop(lost)
	os.RemoveAll(c.dirs[lost])
	c.dirs[lost] = t.TempDir()

	leader := c.nodes[lead]
	if err := adminCall(ctx, c, lead, func(a schema.Admin) error {
		f, rel := a.RemoveMember(ctx, func(p schema.Admin_removeMember_Params) error { p.SetId(lost); return nil })
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatalf("remove member %d: %v", lost, err)
	}
	_, members, err := leader.Members(ctx)
	if err != nil || len(members) != 2 {
		t.Fatalf("members after removal: %v %v", members, err)
	}
	// Writes still commit with two of two.
	if _, err := k.put(ctx, "after-removal", "v"); err != nil {
		t.Fatal(err)
	}
	if err := adminCall(ctx, c, lead, func(a schema.Admin) error {
		f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
			p.SetId(lost)
			return p.SetAddress(c.addrs[lost])
		})
		defer rel()
		return resultErr(f.Struct())
	}); err != nil {
		t.Fatalf("add member %d back: %v", lost, err)
	}
	joinOpts := c.opts
	c.opts = func(cfg *raftnode.Config) { cfg.Join = true }
	c.start(lost)
	c.opts = joinOpts
	rpctest.Eventually(t, 10*time.Second, "the re-added node catches up", func() bool {
		return c.nodes[lost].Status(ctx).Applied >= leader.Status(ctx).Commit
	})
	v, found, err := c.client(lost).get(ctx, "after-removal", false)
	if err != nil || !found || v != "v" {
		t.Fatalf("re-added node: %q %v %v", v, found, err)
	}
}

// adminCall runs fn on node id's Admin capability.
func adminCall(ctx context.Context, c *testCluster, id uint64, fn func(schema.Admin) error) error {
	cc := rpctest.Dial(c.t, c.addrs[id], rpc.DialConfig{})
	f, rel := cc.Node().Admin(ctx, nil)
	defer rel()
	return fn(f.Admin())
}

// resultErr returns a call's failure or its result's error field (pass it
// the call's Struct() before releasing the call).
func resultErr[R interface {
	Error() (schema.Error, error)
	HasError() bool
}](r R, err error) error {
	if err != nil {
		return err
	}
	e, _ := r.Error()
	return errorField(e, r.HasError())
}

// errorField turns a result's error field into a Go error; call it
// before the result is released.
func errorField(e schema.Error, has bool) error {
	if !has {
		return nil
	}
	msg, _ := e.Message_()
	return &codeError{e.Code(), msg}
}
