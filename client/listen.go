package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// Message is one message delivered to a listener: Seq is its position in
// the node's receive order.
type Message struct {
	Seq uint64
	Msg string
}

// ErrSubscriptionEnded is wrapped by the error Listen returns when the node
// ended the subscription; the message says why.
var ErrSubscriptionEnded = errors.New("subscription ended by the node")

// Listen subscribes to the messages pinged to the connected node and calls
// fn for each, in order, from one goroutine, until ctx ends (it then
// returns ctx.Err()), the node ends the subscription (for example because
// fn was too slow and the node's queue for it overflowed) or the connection
// is lost. While fn runs, further messages queue on the node.
func (c *Client) Listen(ctx context.Context, fn func(Message)) error {
	s, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.release(s)
	l := &listener{fn: fn, closed: make(chan string, 1)}
	ex := rpc.NewExporter(c.opts.log)
	lcap := schema.EchoListener(ex.Export(schema.EchoListener_Methods(nil, l), l, nil))
	defer lcap.Release()

	f, release := s.echo.Subscribe(ctx, func(p schema.Echo_subscribe_Params) error {
		return p.SetListener(lcap.AddRef())
	})
	defer release()
	res, err := f.Struct()
	if err != nil {
		return c.check(s, "subscribe", err)
	}
	sub := res.Subscription()

	select {
	case <-ctx.Done():
		// Tell the node explicitly (a release alone would also end it, but
		// only once every reference is gone).
		cctx, cancel := context.WithTimeout(context.Background(), c.opts.dialTimeout())
		cf, crel := sub.Cancel(cctx, nil)
		_, _ = cf.Struct()
		crel()
		cancel()
		return ctx.Err()
	case reason := <-l.closed:
		return fmt.Errorf("%w: %s", ErrSubscriptionEnded, reason)
	case <-c.ctx.Done():
		return ErrClosed
	case <-s.cc.Done():
		c.retire(s, true)
		return &UnavailableError{causes: []error{fmt.Errorf("connection to %s lost while listening", s.cc.Addr())}}
	}
}

func (o options) dialTimeout() time.Duration {
	if o.dial.Timeout > 0 {
		return o.dial.Timeout
	}
	return rpc.DefaultDialTimeout
}

// listener is the EchoListener capability Listen exports to the node.
type listener struct {
	fn       func(Message)
	closed   chan string
	closeOne sync.Once
}

// Messages delivers a batch to fn in order.
func (l *listener) Messages(_ context.Context, call schema.EchoListener_messages) error {
	list, err := call.Args().Messages()
	if err != nil {
		return err
	}
	for i := 0; i < list.Len(); i++ {
		m := list.At(i)
		text, err := m.Msg()
		if err != nil {
			return err
		}
		l.fn(Message{Seq: m.Seq(), Msg: text})
	}
	return nil
}

// Closed records why the node ended the subscription.
func (l *listener) Closed(_ context.Context, call schema.EchoListener_closed) error {
	reason, err := call.Args().Reason()
	if err != nil {
		reason = "no reason given"
	}
	l.closeOne.Do(func() { l.closed <- reason })
	return nil
}
