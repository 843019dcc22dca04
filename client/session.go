package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/schema"
)

// sessions is the client's write session with the cluster: its id, the
// next sequence number, and which writes' results the client has seen
// (ackedBelow). There is at most one session at a time; a new one is
// opened on the first write and after the cluster expired the last.
type sessions struct {
	mu      sync.Mutex
	id      uint64 // 0: none
	ttl     time.Duration
	next    uint64              // the next write's seq
	low     uint64              // lowest seq whose caller has not returned: the batch's ackedBelow
	done    map[uint64]struct{} // seqs above low whose callers returned
	opening chan struct{}       // closed when the open in progress ends
	openErr error               // the outcome of the last open

	lastWrite     atomic.Int64 // unix nanos of the last batch carrying writes
	keepAliveOnce sync.Once
}

func (s *sessions) init() { s.done = make(map[uint64]struct{}) }

// wrote records that a batch with writes of session id is being sent,
// which refreshes the session on the cluster.
func (s *sessions) wrote(id uint64) { s.lastWrite.Store(time.Now().UnixNano()) }

// ackedBelow returns the batch's ackedBelow for session id.
func (s *sessions) ackedBelow(id uint64) uint64 {
	if id == 0 {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != s.id {
		return 0
	}
	return s.low
}

// complete records that the caller of write (id, seq) returned: the
// cluster may forget its result once every lower seq is complete too.
func (s *sessions) complete(id, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != s.id || seq < s.low {
		return
	}
	if seq > s.low {
		s.done[seq] = struct{}{}
		return
	}
	s.low++
	for {
		if _, ok := s.done[s.low]; !ok {
			return
		}
		delete(s.done, s.low)
		s.low++
	}
}

// expire forgets session id after the cluster said it expired.
func (s *sessions) expire(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == id {
		s.id = 0
	}
}

// assign returns the session and sequence number for a new write, opening
// a session first if there is none. Concurrent writers share one open.
func (c *Client) assign(ctx context.Context) (id, seq uint64, err error) {
	s := &c.sess
	for {
		s.mu.Lock()
		if s.id != 0 {
			id, seq = s.id, s.next
			s.next++
			s.mu.Unlock()
			return id, seq, nil
		}
		ch := s.opening
		if ch == nil {
			ch = make(chan struct{})
			s.opening = ch
			c.mu.Lock()
			closed := c.closed
			if !closed {
				c.wg.Add(1)
			}
			c.mu.Unlock()
			if closed {
				s.opening = nil
				s.mu.Unlock()
				return 0, 0, ErrClosed
			}
			go c.openSession(ch)
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		s.mu.Lock()
		err := s.openErr
		s.mu.Unlock()
		if err != nil {
			return 0, 0, err
		}
	}
}

// openSession opens a session and closes ch.
func (c *Client) openSession(ch chan struct{}) {
	defer c.wg.Done()
	id, ttl, err := c.callOpenSession()
	s := &c.sess
	s.mu.Lock()
	s.openErr = err
	if err == nil {
		s.id, s.ttl, s.next, s.low = id, ttl, 1, 1
		s.done = make(map[uint64]struct{})
		s.lastWrite.Store(time.Now().UnixNano())
	}
	s.opening = nil
	s.mu.Unlock()
	close(ch)
	if err == nil {
		c.opts.log.Debug("session opened", "session", id, "ttl", ttl)
		s.keepAliveOnce.Do(func() {
			c.mu.Lock()
			closed := c.closed
			if !closed {
				c.wg.Add(1)
			}
			c.mu.Unlock()
			if !closed {
				go c.keepAlive()
			}
		})
	}
}

func (c *Client) callOpenSession() (uint64, time.Duration, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.requestTimeout)
	defer cancel()
	cn, err := c.acquire(ctx)
	if err != nil {
		if c.ctx.Err() != nil {
			return 0, 0, ErrClosed
		}
		return 0, 0, err
	}
	defer c.release(cn)
	f, release := cn.kv.OpenSession(ctx, nil)
	defer release()
	unwatch := c.watchStall(cn, f.Done())
	res, err := f.Struct()
	unwatch()
	if err != nil {
		return 0, 0, c.batchError(cn, ctx, err)
	}
	if res.HasError() {
		e, err := res.Error()
		if err == nil {
			return 0, 0, serverError(e, cn.addr())
		}
	}
	if res.Session() == 0 {
		return 0, 0, &ServerError{Code: CodeInternal, Addr: cn.addr(), Message: "openSession returned session 0 (a bug in the node)"}
	}
	return res.Session(), time.Duration(res.TtlMillis()) * time.Millisecond, nil
}

// minKeepAlive bounds how often keepAlive runs, whatever the session's ttl.
const minKeepAlive = 10 * time.Millisecond

// keepAlive refreshes the session whenever it was idle for a third of its
// ttl, until the client closes.
func (c *Client) keepAlive() {
	defer c.wg.Done()
	s := &c.sess
	for {
		s.mu.Lock()
		id, ttl := s.id, s.ttl
		s.mu.Unlock()
		interval := ttl / 3
		if id == 0 || interval <= 0 {
			interval = time.Second // no session now: look again later
		}
		interval = max(interval, minKeepAlive)
		idle := time.Duration(time.Now().UnixNano() - s.lastWrite.Load())
		wait := interval - idle
		if id == 0 || wait > 0 {
			if wait <= 0 {
				wait = interval
			}
			t := time.NewTimer(wait)
			select {
			case <-c.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		s.wrote(id)
		if err := c.callKeepAlive(id); err != nil {
			c.opts.log.Debug("session keepalive failed", "session", id, "error", err)
		}
	}
}

func (c *Client) callKeepAlive(id uint64) error {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.requestTimeout)
	defer cancel()
	cn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.release(cn)
	f, release := cn.kv.KeepAlive(ctx, func(p schema.KV_keepAlive_Params) error {
		p.SetSession(id)
		return nil
	})
	defer release()
	unwatch := c.watchStall(cn, f.Done())
	res, err := f.Struct()
	unwatch()
	if err != nil {
		return c.batchError(cn, ctx, err)
	}
	if res.HasError() {
		e, err := res.Error()
		if err != nil {
			return err
		}
		se := serverError(e, cn.addr())
		if se.Code == CodeSessionExpired {
			c.sess.expire(id)
		}
		return se
	}
	return nil
}

// closeSession tells the cluster, best effort and briefly, that the
// session is over.
func (c *Client) closeSession(cn *conn) {
	s := &c.sess
	s.mu.Lock()
	id := s.id
	s.id = 0
	s.mu.Unlock()
	if id == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeSessionTimeout)
	defer cancel()
	select {
	case <-cn.ready:
	case <-ctx.Done():
		return
	}
	if cn.err != nil || cn.dead() {
		return
	}
	f, release := cn.kv.CloseSession(ctx, func(p schema.KV_closeSession_Params) error {
		p.SetSession(id)
		return nil
	})
	_, _ = f.Struct()
	release()
}
