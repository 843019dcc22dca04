package concurrency_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/client/concurrency"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
)

// exampleNode starts a single-node cluster on a free loopback port, with
// its data in a temporary directory, and returns its address and a
// function that stops it.
func exampleNode() (addr string, stop func()) {
	dir, err := os.MkdirTemp("", "capraft-example-")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr = ln.Addr().String()
	node, err := raftnode.New(raftnode.Config{ID: 1, DataDir: dir, Advertise: addr})
	if err != nil {
		log.Fatal(err)
	}
	srv := rpc.NewServer(rpc.Config{Bootstrap: node.Bootstrap})
	go srv.Serve(ln)
	return addr, func() { srv.Close(); node.Close(); os.RemoveAll(dir) }
}

func ExampleMutex() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New([]string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	m := concurrency.NewMutex(s, "locks/report")
	if err := m.Lock(ctx); err != nil {
		log.Fatal(err)
	}
	// Writes guarded by the lock: they happen only while it is held.
	resp, err := c.Txn(ctx).If(m.IsOwner()).
		Then(client.OpPut("report/owner", fmt.Appendf(nil, "token %d", m.Revision()))).Commit()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("wrote under the lock:", resp.Succeeded)
	if err := m.Unlock(ctx); err != nil {
		log.Fatal(err)
	}
	// Output: wrote under the lock: true
}

func ExampleElection() {
	addr, stop := exampleNode()
	defer stop()
	c, err := client.New([]string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := concurrency.NewSession(ctx, c, concurrency.WithTTL(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close(ctx)
	e := concurrency.NewElection(s, "service/leader")
	leaders := e.Observe(ctx)
	if err := e.Campaign(ctx, []byte("node-a")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("leader:", string((<-leaders).Value))
	if err := e.Proclaim(ctx, []byte("node-a, v2")); err != nil {
		log.Fatal(err)
	}
	fmt.Println("leader:", string((<-leaders).Value))
	if err := e.Resign(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// leader: node-a
	// leader: node-a, v2
}
