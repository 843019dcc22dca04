package concurrency

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/capraft/capraft/client"
)

// A queue is the keys under a prefix, ordered by create revision: the
// first is the lock's holder, or the election's leader (see the package
// comment).

// queueKey returns a session's key in the queue under prefix.
func queueKey(prefix string, lease uint64) string { return fmt.Sprintf("%s%016x", prefix, lease) }

// entry is a key of a queue and the revision of the read that saw it.
type entry struct {
	kv client.KeyValue
	at uint64
}

// maxEnqueueTries bounds the transactions enqueue sends when its key
// vanishes between them (a replayed answer, then the lease ended).
const maxEnqueueTries = 3

// enqueue creates key with value under the session's lease unless it
// exists, in one transaction that also reads the queue. It returns the
// key's state (its create revision is its place in the queue) and the
// queue as that transaction saw it, or nil when the answer did not hold
// all of it (a replayed answer, or more than a page of keys).
func enqueue(ctx context.Context, s *Session, prefix, key string, value []byte) (client.KeyValue, []entry, error) {
	for range maxEnqueueTries {
		var resp *client.TxnResponse
		// Idempotent: a second application finds the key (Else).
		err := idempotent(ctx, func() (err error) {
			resp, err = s.c.Txn(ctx).
				If(client.CreateRevision(key).Equal(0)).
				Then(client.OpPut(key, value, client.WithLease(s.id)), client.OpRange(prefix, 0)).
				Else(client.OpGet(key), client.OpRange(prefix, 0)).
				Commit()
			return err
		})
		if errors.Is(err, client.ErrLeaseNotFound) {
			return client.KeyValue{}, nil, fmt.Errorf("join the queue %q: lease %d: %w: %w", prefix, s.id, ErrSessionExpired, err)
		}
		if err != nil {
			return client.KeyValue{}, nil, fmt.Errorf("join the queue %q: %w", prefix, err)
		}
		var kv client.KeyValue
		switch {
		case resp.Replayed || len(resp.Results) != 2:
			// An earlier attempt was applied and its reads are lost: read
			// the key again.
			if resp.Succeeded {
				kv = client.KeyValue{Key: key, Value: value, CreateRevision: resp.Revision, ModRevision: resp.Revision, Version: 1, Lease: s.id}
				return kv, nil, nil
			}
			kv, err = s.c.Get(ctx, key)
			if errors.Is(err, client.ErrNotFound) {
				continue // gone since (its lease ended?): try again
			}
			if err != nil {
				return client.KeyValue{}, nil, fmt.Errorf("join the queue %q: read %q: %w", prefix, key, err)
			}
			return kv, nil, nil
		case resp.Succeeded:
			kv = client.KeyValue{Key: key, Value: value, CreateRevision: resp.Revision, ModRevision: resp.Revision, Version: 1, Lease: s.id}
		default:
			if !resp.Results[0].Found {
				continue // deleted between the compare and the get: cannot be, but try again
			}
			kv = resp.Results[0].KV
		}
		r := resp.Results[1]
		if r.Err != nil || r.Page.More {
			return kv, nil, nil
		}
		q := make([]entry, 0, len(r.Page.KVs))
		for _, e := range r.Page.KVs {
			q = append(q, entry{kv: e, at: r.Page.Revision})
		}
		return kv, q, nil
	}
	return client.KeyValue{}, nil, fmt.Errorf("join the queue %q: key %q vanished %d times: %w", prefix, key, maxEnqueueTries, ErrSessionExpired)
}

// maxListPages bounds the pages list reads (a page is up to the node's
// maximum, 1000 keys by default).
const maxListPages = 10_000

// list reads the queue under prefix, page by page (each page is
// linearizable, at its own revision).
//
// Pages at different revisions are safe to combine for what the queue
// needs: keys created before a given revision can only leave the queue
// (a key created again has a new, larger create revision), so a key
// older than ours that a page did not see is gone for good.
func list(ctx context.Context, c *client.Client, prefix string) ([]entry, error) {
	var q []entry
	after := ""
	for range maxListPages {
		var opts []client.ReadOption
		if after != "" {
			opts = append(opts, client.After(after))
		}
		p, err := c.Range(ctx, prefix, 0, opts...)
		if err != nil {
			return nil, fmt.Errorf("read the queue %q: %w", prefix, err)
		}
		for _, kv := range p.KVs {
			if strings.HasPrefix(kv.Key, prefix) {
				q = append(q, entry{kv: kv, at: p.Revision})
			}
		}
		if !p.More || len(p.KVs) == 0 {
			return q, nil
		}
		after = p.KVs[len(p.KVs)-1].Key
	}
	return nil, fmt.Errorf("read the queue %q: more than %d pages of keys", prefix, maxListPages)
}

// first returns the queue's first entry (lowest create revision).
func first(q []entry) (entry, bool) {
	var head entry
	for _, e := range q {
		if head.kv.CreateRevision == 0 || e.kv.CreateRevision < head.kv.CreateRevision {
			head = e
		}
	}
	return head, head.kv.CreateRevision != 0
}

// position finds me in q and the entry just before it (found: some
// key is ahead of me). present says whether me's key, as created at its
// revision, is in q.
func position(q []entry, me client.KeyValue) (before entry, found, present bool) {
	for _, e := range q {
		switch {
		case e.kv.Key == me.Key && e.kv.CreateRevision == me.CreateRevision:
			present = true
		case e.kv.CreateRevision < me.CreateRevision && e.kv.CreateRevision > before.kv.CreateRevision:
			before, found = e, true
		}
	}
	return before, found, present
}

// waitTurn waits until me is first in the queue under prefix, starting
// from q (read again when nil). It fails when ctx or the session ends,
// or me's key is no longer in the queue.
//
// Each round waits for the key just before me to be deleted, then reads
// the queue again. The loop ends: a round needs a key ahead of me to go,
// and no key can join ahead of me.
func waitTurn(ctx context.Context, s *Session, prefix string, me client.KeyValue, q []entry) error {
	for {
		if q == nil {
			var err error
			if q, err = list(ctx, s.c, prefix); err != nil {
				return err
			}
		}
		before, found, present := position(q, me)
		if !present {
			return fmt.Errorf("key %q (created at revision %d) is gone from the queue: %w", me.Key, me.CreateRevision, ErrSessionExpired)
		}
		if !found {
			return nil
		}
		if err := waitDelete(ctx, s, before); err != nil {
			return err
		}
		q = nil
	}
}

// waitDelete waits for e's key to be deleted after the revision it was
// seen at. A watch whose revision the nodes' history no longer holds
// returns at once: the caller reads the queue again.
func waitDelete(ctx context.Context, s *Session, e entry) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := s.c.Watch(wctx, e.kv.Key, client.WithExactKey(), client.WithRevision(e.at+1), client.WithProgressInterval(0))
	for {
		select {
		case resp, ok := <-ch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return fmt.Errorf("watch %q: %w", e.kv.Key, client.ErrClosed)
			}
			if errors.Is(resp.Err, client.ErrCompacted) {
				return nil
			}
			if resp.Err != nil {
				return fmt.Errorf("watch %q: %w", e.kv.Key, resp.Err)
			}
			for _, ev := range resp.Events {
				if ev.Type == client.EventDelete || ev.KV.CreateRevision != e.kv.CreateRevision {
					return nil
				}
			}
		case <-s.done:
			return fmt.Errorf("lease %d: %w", s.id, ErrSessionExpired)
		}
	}
}
