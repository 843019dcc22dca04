package echo

import (
	"context"
	"sync"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// ReplyPrefix is what ping puts before the message in its reply.
const ReplyPrefix = "echo:"

// NewCapability returns an Echo capability backed by hub, exported through
// ex (one per connection, so each connection has its own call queue).
func NewCapability(hub *Hub, ex *rpc.Exporter) schema.Echo {
	impl := &echoServer{hub: hub, ex: ex}
	return schema.Echo(ex.Export(schema.Echo_Methods(nil, impl), impl, nil))
}

type echoServer struct {
	hub *Hub
	ex  *rpc.Exporter
}

// Ping publishes the message to the node's listeners and answers it; a
// message over the hub's MaxMessage is refused.
func (e *echoServer) Ping(_ context.Context, call schema.Echo_ping) error {
	raw, err := call.Args().MsgBytes()
	if err != nil {
		return err
	}
	if err := e.hub.checkLength(len(raw)); err != nil {
		return err // before copying it
	}
	msg := string(raw)
	if _, err := e.hub.Publish(msg); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetReply(ReplyPrefix + msg)
}

// Subscribe registers the caller's listener with the hub and returns the
// subscription capability that ends it.
func (e *echoServer) Subscribe(_ context.Context, call schema.Echo_subscribe) error {
	listener := call.Args().Listener()
	if !listener.IsValid() {
		return errNoListener
	}
	cancel, err := e.hub.Subscribe(listener.AddRef(), e.ex.Check)
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		cancel()
		return err
	}
	sub := &subscription{cancel: cancel}
	return res.SetSubscription(schema.Subscription(e.ex.Export(schema.Subscription_Methods(nil, sub), sub, sub)))
}

type subscription struct {
	once   sync.Once
	cancel func()
}

// Cancel ends the subscription: once it returns, no further batch is sent
// (a batch already in flight is cancelled, though it may have arrived).
func (s *subscription) Cancel(context.Context, schema.Subscription_cancel) error {
	s.once.Do(s.cancel)
	return nil
}

// Shutdown runs when the subscriber releases the capability or disconnects.
func (s *subscription) Shutdown() { s.once.Do(s.cancel) }
