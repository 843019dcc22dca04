package raftnode_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/faultproxy"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// newMeshCluster starts a cluster whose nodes reach each other only
// through a fault-proxy mesh (clients still dial the nodes directly), so
// a test can silence a node towards its peers without closing any
// connection: to them it looks paused (SIGSTOP). The request timeout is a
// minute, far beyond the tests' contexts: a call held until it expires
// fails the test instead of answering late.
func newMeshCluster(t *testing.T, size int) (*testCluster, *faultproxy.Mesh) {
	var mesh *faultproxy.Mesh
	c := newTestCluster(t, size, func(cfg *raftnode.Config) {
		cfg.RequestTimeout = time.Minute
		if mesh == nil {
			var err error
			if mesh, err = faultproxy.NewMesh(cfg.Peers, 1); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mesh.Close() })
		}
		peers := make(map[uint64]string, len(cfg.Peers))
		for id, addr := range cfg.Peers {
			peers[id] = addr
			if id != cfg.ID {
				peers[id] = mesh.Addr(cfg.ID, id)
			}
		}
		cfg.Peers = peers
	})
	return c, mesh
}

// meshFollower is a mesh cluster, its leader (old) and a client with a
// session on one of its followers (via).
type meshFollower struct {
	c        *testCluster
	mesh     *faultproxy.Mesh
	old, via uint64
	k        *kvClient
}

func newMeshFollower(t *testing.T) meshFollower {
	c, mesh := newMeshCluster(t, 3)
	old := c.leader()
	m := meshFollower{c: c, mesh: mesh, old: old, via: old%3 + 1}
	m.k = c.client(m.via)
	m.k.openRetry(t, ctxT(t))
	return m
}

// leaderOtherThan waits until the running nodes other than old agree on a
// leader that is not old, and returns it.
func (c *testCluster) leaderOtherThan(old uint64) uint64 {
	var lead uint64
	rpctest.Eventually(c.t, 10*time.Second, fmt.Sprintf("a leader other than %d", old), func() bool {
		lead = 0
		for id, n := range c.nodes {
			if id == old {
				continue
			}
			l := n.Leader()
			if l == 0 || l == old || (lead != 0 && l != lead) {
				return false
			}
			lead = l
		}
		return lead != 0
	})
	return lead
}

// Writes a follower handed to a leader that then froze are not held for
// the request timeout: they complete through the new leader, each applied
// exactly once, whether or not the frozen leader had received them.
func TestFrozenLeaderDoesNotHoldForwardedWrites(t *testing.T) {
	c, mesh := newMeshCluster(t, 3)
	old := c.leader()
	via := old%3 + 1
	ctx := ctxT(t)

	const writers, perWriter = 4, 25
	clients := make([]*kvClient, writers)
	for w := range clients {
		clients[w] = c.client(via)
		clients[w].openRetry(t, ctx)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	started := make(chan struct{}, writers)
	for w, k := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if i == 2 {
					started <- struct{}{}
				}
				if _, err := k.put(ctx, fmt.Sprintf("w%d-%d", w, i), "v"); err != nil {
					errs <- fmt.Errorf("writer %d, write %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	// Freeze the leader while writes are in flight through the follower.
	mesh.Isolate(old)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	lead := c.leaderOtherThan(old)
	t.Logf("leader %d froze; node %d leads now", old, lead)
	k := c.client(via)
	for w := range writers {
		for i := range perWriter {
			key := fmt.Sprintf("w%d-%d", w, i)
			_, version, _, found, err := k.getCode(ctx, key, false)
			if err != nil || !found || version != 1 {
				t.Errorf("%s: found=%v version=%d err=%v, want it written exactly once (version 1)", key, found, version, err)
			}
		}
	}
}

// A linearizable read a follower asked of a leader that then froze is
// asked again of the new leader instead of failing.
func TestFrozenLeaderDoesNotFailFollowerReads(t *testing.T) {
	m := newMeshFollower(t)
	mesh, old, via, k := m.mesh, m.old, m.via, m.k
	ctx := ctxT(t)
	if _, err := k.put(ctx, "r", "before"); err != nil {
		t.Fatal(err)
	}
	// The follower still believes in the old leader for an election
	// timeout, so the read below asks it, and then it freezes.
	mesh.Isolate(old)
	v, found, err := k.get(ctx, "r", false)
	if err != nil || !found || v != "before" {
		t.Fatalf("linearizable read through node %d while leader %d froze: %q %v %v", via, old, v, found, err)
	}
}

// Session and membership calls a follower handed to a leader that then
// froze are answered within about an election timeout, not held for the
// request timeout: they cannot always be sent again safely, so they may
// say unavailable or outcomeUnknown, and the client retries.
func TestFrozenLeaderDoesNotHoldSessionAndAdminCalls(t *testing.T) {
	m := newMeshFollower(t)
	c, mesh, old, via, k := m.c, m.mesh, m.old, m.via, m.k
	ctx := ctxT(t)
	opener := c.client(via)
	mesh.Isolate(old)

	// Held, they would end only when something else gives up on the
	// frozen leader (the transport drops a connection whose calls go
	// unanswered for seconds: "connection closed"); answered, they say
	// the leader moved.
	answered := func(what string, err error) {
		t.Helper()
		if err != nil && (!isCode(err, schema.ErrorCode_unavailable, schema.ErrorCode_outcomeUnknown) || !strings.Contains(err.Error(), "leads now")) {
			t.Errorf("%s through node %d while leader %d froze: %v, want ok or %s saying which node leads now",
				what, via, old, err, codeNames(schema.ErrorCode_unavailable, schema.ErrorCode_outcomeUnknown))
		}
	}
	calls := map[string]func() error{
		"openSession": func() error { return opener.openCode(ctx) },
		"keepAlive":   func() error { return k.keepAlive(ctx) },
		"addMember": func() error {
			return adminCall(ctx, c, via, func(a schema.Admin) error {
				f, rel := a.AddMember(ctx, func(p schema.Admin_addMember_Params) error {
					p.SetId(9)
					p.SetLearner(true)
					return p.SetAddress("127.0.0.1:1")
				})
				defer rel()
				return resultErr(f.Struct())
			})
		},
	}
	var wg sync.WaitGroup
	for what, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answered(what, call())
		}()
	}
	wg.Wait()
	// And the retry goes through the new leader.
	c.leaderOtherThan(old)
	k2 := c.client(via)
	k2.openRetry(t, ctx)
	if _, err := k2.put(ctx, "after", "v"); err != nil {
		t.Fatalf("write after the freeze: %v", err)
	}
}
