package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
)

// exampleNode starts a single-node cluster on a free loopback port, as
// `raftnode` with no flags would, with its data in a temporary directory,
// and returns its address and a function that stops it and removes the
// data.
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

// exampleCluster starts a real single-node cluster for the examples and
// returns its endpoints and a function that stops it.
func exampleCluster() (endpoints []string, stop func()) {
	addr, stop := exampleNode()
	return []string{addr}, stop
}

func ExampleClient_Put() {
	endpoints, stop := exampleCluster()
	defer stop()
	c, err := client.New(endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	rev, err := c.Put(ctx, "greeting", []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("written at revision", rev)
	// Output: written at revision 1
}

func ExampleClient_Get() {
	endpoints, stop := exampleCluster()
	defer stop()
	c, err := client.New(endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := c.Put(ctx, "greeting", []byte("hello")); err != nil {
		log.Fatal(err)
	}
	kv, err := c.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s = %s (version %d)\n", kv.Key, kv.Value, kv.Version)

	_, err = c.Get(ctx, "nothing-here", client.Serializable())
	fmt.Println(errors.Is(err, client.ErrNotFound))
	// Output:
	// greeting = hello (version 1)
	// true
}

func ExampleClient_CompareAndSwap() {
	endpoints, stop := exampleCluster()
	defer stop()
	c, err := client.New(endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Create the counter only if nobody did.
	if _, err := c.CompareAndSwap(ctx, "counter", client.IfAbsent(), []byte("1")); err != nil {
		log.Fatal(err)
	}
	// Increment it from the value we read; a concurrent writer would make
	// the compare fail, and we would read again and retry.
	kv, err := c.Get(ctx, "counter")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.CompareAndSwap(ctx, "counter", client.IfModRevision(kv.ModRevision), []byte("2")); err != nil {
		log.Fatal(err)
	}
	// A stale compare fails and says what the key holds now.
	_, err = c.CompareAndSwap(ctx, "counter", client.IfValue([]byte("1")), []byte("3"))
	var cf *client.CompareFailedError
	if errors.As(err, &cf) {
		fmt.Printf("compare failed; counter is %s\n", cf.Current.Value)
	}
	// Output: compare failed; counter is 2
}

func ExampleClient_Range() {
	endpoints, stop := exampleCluster()
	defer stop()
	c, err := client.New(endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, k := range []string{"fruit/apple", "fruit/banana", "fruit/cherry", "veg/leek"} {
		if _, err := c.Put(ctx, k, []byte("1")); err != nil {
			log.Fatal(err)
		}
	}
	// Two keys per page, each page starting after the last key seen.
	var opts []client.ReadOption
	for {
		page, err := c.Range(ctx, "fruit/", 2, opts...)
		if err != nil {
			log.Fatal(err)
		}
		for _, kv := range page.KVs {
			fmt.Println(kv.Key)
		}
		if !page.More {
			break
		}
		opts = []client.ReadOption{client.After(page.KVs[len(page.KVs)-1].Key)}
	}
	// Output:
	// fruit/apple
	// fruit/banana
	// fruit/cherry
}

func ExampleClient_Status() {
	endpoints, stop := exampleCluster()
	defer stop()
	c, err := client.New(endpoints)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Status asks each endpoint for its own view.
	for _, e := range endpoints {
		st, err := c.Status(ctx, e)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("node %d: %s, leader %d\n", st.ID, st.Role, st.Leader)
	}
	// Output: node 1: leader, leader 1
}

func ExampleClient_Ping() {
	addr, stop := exampleNode()
	defer stop()

	c, err := client.New([]string{addr})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	reply, err := c.Ping(context.Background(), "hello")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply)
	// Output: echo:hello
}

func ExampleClient_Listen() {
	addr, stop := exampleNode()
	defer stop()
	listener, _ := client.New([]string{addr})
	defer listener.Close()
	pinger, _ := client.New([]string{addr})
	defer pinger.Close()

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan client.Message, 64)
	done := make(chan error, 1)
	go func() {
		done <- listener.Listen(ctx, func(m client.Message) {
			select {
			case got <- m:
			default: // the example only needs the first few
			}
		})
	}()

	// Ping until the listener, which subscribes concurrently, sees a message.
	var first client.Message
	for received := false; !received; {
		if _, err := pinger.Ping(ctx, "hello"); err != nil {
			log.Fatal(err)
		}
		select {
		case first = <-got:
			received = true
		default:
		}
	}
	cancel()
	<-done // Listen returns ctx.Err() once it has cancelled the subscription
	fmt.Println(first.Msg)
	// Output: hello
}
