package client

import (
	"context"
	"sync"

	"github.com/capraft/capraft/rpc"
)

// Any node serves any call, but a follower hands writes to the leader,
// which costs the write one more hop (about half a millisecond on
// loopback). So after connecting to a follower, the client looks among its
// own endpoints for the leader and moves there: later operations go
// straight to the leader, and operations in flight finish on the old
// connection. Only the caller's endpoints are ever dialled, never an
// address learned from the cluster.

// endpointIDs caches which node id answered at each endpoint.
type endpointIDs struct {
	mu  sync.Mutex
	ids map[string]uint64
}

func (e *endpointIDs) get(addr string) (uint64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id, ok := e.ids[addr]
	return id, ok
}

func (e *endpointIDs) set(addr string, id uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ids == nil {
		e.ids = make(map[string]uint64)
	}
	e.ids[addr] = id
}

// steer moves the client to the leader's endpoint if cn reached a
// follower. It runs in the background after a dial; nothing waits for it,
// and any failure just leaves the client where it is. It holds a use of
// cn (taken by dial), which it gives back when done.
func (c *Client) steer(cn *conn) {
	defer c.wg.Done()
	defer c.release(cn)
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.dialTimeout())
	defer cancel()
	f, release := cn.node.Status(ctx, nil)
	res, err := f.Struct()
	var self, lead uint64
	if err == nil {
		if st, err := res.Status(); err == nil {
			self, lead = st.Id(), st.Leader()
		}
	}
	release()
	c.ids.set(c.endpoints[cn.idx], self)
	if lead == 0 || lead == self {
		return
	}
	for i, addr := range c.endpoints {
		if i == cn.idx || c.endpointID(ctx, addr) != lead {
			continue
		}
		c.mu.Lock()
		if c.cur == cn && !c.closed {
			c.opts.log.Debug("moving to the leader's endpoint", "from", c.endpoints[cn.idx], "to", addr, "leader", lead)
			// steer's own use keeps cn open: its release closes it.
			c.retireLocked(cn, false)
			c.next = i
		}
		c.mu.Unlock()
		return
	}
}

// endpointID returns the id of the node at addr (0 if unreachable),
// asking it once.
func (c *Client) endpointID(ctx context.Context, addr string) uint64 {
	if id, ok := c.ids.get(addr); ok {
		return id
	}
	cfg := c.opts.dial
	cfg.KeepAlive = -1
	cc, err := rpc.Dial(ctx, addr, cfg)
	if err != nil {
		return 0
	}
	defer cc.Close()
	f, release := cc.Node().Info(ctx, nil)
	defer release()
	res, err := f.Struct()
	if err != nil {
		return 0
	}
	info, err := res.Info()
	if err != nil {
		return 0
	}
	c.ids.set(addr, info.Id())
	return info.Id()
}
