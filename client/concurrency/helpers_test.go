package concurrency_test

import (
	"context"
	"flag"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
)

var seedFlag = flag.Uint64("seed", 0, "seed for the tests' random choices (0: from the clock)")

// seeded returns a random source whose seed is printed if the test fails.
func seeded(t *testing.T) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d; rerun: go test ./client/concurrency -run '^%s$' -seed %d", seed, t.Name(), seed)
		}
	})
	return rand.New(rand.NewPCG(seed, seed))
}

// cluster is an in-process cluster of real nodes on loopback.
type cluster struct {
	t     testing.TB
	addrs map[uint64]string
	dirs  map[uint64]string
	nodes map[uint64]*raftnode.Node
	srvs  map[uint64]*rpc.Server
}

// newCluster starts size nodes and stops them when the test ends.
func newCluster(t testing.TB, size int) *cluster {
	c := &cluster{t: t, addrs: map[uint64]string{}, dirs: map[uint64]string{},
		nodes: map[uint64]*raftnode.Node{}, srvs: map[uint64]*rpc.Server{}}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(size); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id], c.addrs[id], c.dirs[id] = ln, ln.Addr().String(), t.TempDir()
	}
	for id, ln := range lns {
		cfg := raftnode.Config{
			ID: id, Version: "test", Advertise: c.addrs[id], DataDir: c.dirs[id], Peers: c.addrs,
			HeartbeatInterval: 20 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			Logger: rpctest.Logger(t).With("node", id),
		}
		n, err := raftnode.New(cfg)
		if err != nil {
			t.Fatalf("start node %d: %v", id, err)
		}
		srv := rpc.NewServer(rpc.Config{Bootstrap: n.Bootstrap, Logger: cfg.Logger.Named("rpc")})
		go srv.Serve(ln)
		c.nodes[id], c.srvs[id] = n, srv
	}
	t.Cleanup(func() {
		for id := range c.nodes {
			c.stop(id)
		}
	})
	return c
}

// stop stops node id.
func (c *cluster) stop(id uint64) {
	c.srvs[id].Close()
	c.nodes[id].Close()
	delete(c.srvs, id)
	delete(c.nodes, id)
}

// leader waits until the running nodes agree on a running leader.
func (c *cluster) leader() uint64 {
	var lead uint64
	rpctest.Eventually(c.t, 20*time.Second, "a leader all running nodes agree on", func() bool {
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

// client returns a client of every node, closed when the test ends.
func (c *cluster) client() *client.Client {
	var eps []string
	for _, a := range c.addrs {
		eps = append(eps, a)
	}
	cl, err := client.New(eps, client.WithDialTimeout(time.Second), client.WithRequestTimeout(2*time.Second))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// session opens a session of ttl on cl, closed when the test ends.
func session(t *testing.T, cl *client.Client, ttl time.Duration) *concurrency.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := concurrency.NewSession(ctx, cl, concurrency.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s
}

// testCtx is a context for a test's calls, ended when it ends.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// queueLen returns how many keys are queued under prefix.
func queueLen(t *testing.T, cl *client.Client, prefix string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := cl.Range(ctx, prefix, 0)
	if err != nil {
		t.Fatalf("range %q: %v", prefix, err)
	}
	return len(p.KVs)
}

// awaitQueue waits until n keys are queued under prefix.
func awaitQueue(t *testing.T, cl *client.Client, prefix string, n int) {
	t.Helper()
	rpctest.Eventually(t, 20*time.Second, "keys queued under "+prefix, func() bool { return queueLen(t, cl, prefix) == n })
}
