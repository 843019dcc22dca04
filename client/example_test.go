package client_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
)

// exampleNode starts a node on a free loopback port, as `raftnode` would,
// and returns its address and a function that stops it.
func exampleNode() (addr string, stop func()) {
	node, err := raftnode.New(raftnode.Config{ID: 1})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := rpc.NewServer(rpc.Config{Bootstrap: node.Bootstrap})
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close(); node.Close() }
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
