package raftnode_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode"
)

// A watch from a revision a node's history no longer holds fails with
// ErrCompacted naming the oldest kept; ListAndWatch then gives a list
// consistent at a revision and every change after it, so a cache built
// from both matches the store.
func TestListAndWatchRecoversFromACompactedWatch(t *testing.T) {
	c := newCluster(t, 1, func(cfg *raftnode.Config) { cfg.KV.HistoryRevisions = 5 }, nil)
	lead := c.leader()
	ctx := ctxT(t)
	cl, err := client.New([]string{c.addrs[lead]})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < 20; i++ {
		if _, err := cl.Put(ctx, fmt.Sprintf("k/%02d", i%12), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.Put(ctx, "other", []byte("x")); err != nil { // 21
		t.Fatal(err)
	}
	resp, ok := <-cl.Watch(ctx, "k/", client.WithRevision(1))
	var ce *client.CompactedError
	if !ok || !errors.As(resp.Err, &ce) || !errors.Is(resp.Err, client.ErrCompacted) || ce.Oldest != 17 {
		t.Fatalf("watch from 1: %+v (ok %v), want compacted with oldest 17", resp.Err, ok)
	}

	kvs, rev, ch, err := cl.ListAndWatch(ctx, "k/")
	if err != nil {
		t.Fatal(err)
	}
	if rev < 21 || len(kvs) != 12 {
		t.Fatalf("list at revision %d with %d keys", rev, len(kvs))
	}
	cache := map[string]string{}
	for _, kv := range kvs {
		cache[kv.Key] = string(kv.Value)
	}
	var last uint64
	for i := 0; i < 10; i++ {
		last, err = cl.Put(ctx, fmt.Sprintf("k/%02d", 20+i), []byte("new"))
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, last, err = cl.Delete(ctx, "k/00"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for up := rev; up < last; {
		select {
		case resp := <-ch:
			if resp.Err != nil {
				t.Fatal(resp.Err)
			}
			for _, e := range resp.Events {
				if e.Revision() <= rev {
					t.Fatalf("event at %d, at or before the list's revision %d", e.Revision(), rev)
				}
				if e.Type == client.EventPut {
					cache[e.KV.Key] = string(e.KV.Value)
				} else {
					delete(cache, e.KV.Key)
				}
			}
			up = resp.Revision
		case <-deadline:
			t.Fatalf("the watch did not reach revision %d", last)
		}
	}
	page, err := cl.Range(ctx, "k/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.KVs) != len(cache) {
		t.Fatalf("cache has %d keys, store %d", len(cache), len(page.KVs))
	}
	for _, kv := range page.KVs {
		if cache[kv.Key] != string(kv.Value) {
			t.Fatalf("key %s: cache %q, store %q", kv.Key, cache[kv.Key], kv.Value)
		}
	}
}

// A node whose history does not reach back far enough (here: a short
// history; after a restart: none before its snapshot) is not the last
// word: the client asks the next endpoint, whose history does, and the
// watch replays every change from the revision asked for.
func TestWatchAsksTheNextNodeWhenOneHistoryIsCompacted(t *testing.T) {
	c := newCluster(t, 3, func(cfg *raftnode.Config) {
		if cfg.ID == 1 {
			cfg.KV.HistoryRevisions = 2
		}
	}, nil)
	c.leader()
	ctx := ctxT(t)
	writer, err := client.New([]string{c.addrs[1], c.addrs[2], c.addrs[3]})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	var last uint64
	for i := 0; i < 10; i++ {
		if last, err = writer.Put(ctx, fmt.Sprintf("k/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	// Node 1 first: its history holds 2 revisions.
	cl, err := client.New([]string{c.addrs[1], c.addrs[2]})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var revs []uint64
	for resp := range cl.Watch(wctx, "k/", client.WithRevision(1)) {
		if resp.Err != nil {
			t.Fatalf("watch from 1: %v", resp.Err)
		}
		for _, e := range resp.Events {
			revs = append(revs, e.Revision())
		}
		if resp.Revision >= last {
			break
		}
	}
	if len(revs) != 10 || revs[0] != 1 || revs[9] != last {
		t.Fatalf("watch replayed revisions %v, want 1..%d", revs, last)
	}
}
