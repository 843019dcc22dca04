package raftnode_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/rpc/rpctest"
)

// BenchmarkWatchResumeAfterNodeKill: a client watches a prefix through
// one node of a three-node in-process cluster while another client puts
// a key under it every 2 ms through another node; the watched node is
// killed as its clients see it (the proxy in front of it drops every
// connection without a word, then the node stops), and the benchmark
// measures the time from the kill to the first event the watch delivers
// after it (the client resumes on another endpoint from the revision
// after the last it delivered). follower: the killed node follows;
// leader: it leads, so the time includes an election (election timeout
// 200 ms here). Reports the median and the worst of b.N kills, and
// checks that the watch missed and repeated nothing.
func BenchmarkWatchResumeAfterNodeKill(b *testing.B) {
	for _, role := range []string{"follower", "leader"} {
		b.Run(role, func(b *testing.B) {
			c := newCluster(b, 3, nil, nil)
			var took []time.Duration
			for i := 0; i < b.N; i++ {
				took = append(took, resumeAfterKill(b, c, role == "leader"))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1e3, "ms-to-first-event-p50")
			b.ReportMetric(float64(took[len(took)-1].Microseconds())/1e3, "ms-to-first-event-max")
		})
	}
}

// resumeAfterKill runs one kill (see BenchmarkWatchResumeAfterNodeKill)
// and restarts the killed node.
func resumeAfterKill(b *testing.B, c *testCluster, leader bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lead := c.leader()
	victim, other := lead, lead%3+1
	if !leader {
		victim, other = lead%3+1, lead
	}
	proxy := rpctest.NewProxy(b, c.addrs[victim], 0)
	eps := []string{proxy.Addr()}
	for id := uint64(1); id <= 3; id++ {
		if id != victim {
			eps = append(eps, c.addrs[id])
		}
	}
	wc, err := client.New(eps)
	if err != nil {
		b.Fatal(err)
	}
	defer wc.Close()
	pc, err := client.New([]string{c.addrs[other], c.addrs[6-victim-other]})
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	prefix := fmt.Sprintf("resume/%d/", time.Now().UnixNano())
	watch := wc.Watch(ctx, prefix, client.WithLinearizableStart())

	// The writer puts prefix/n for n = 1, 2, ... until stopped.
	stop := make(chan struct{})
	var written atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		t := time.NewTicker(2 * time.Millisecond) // the write load's pace, not synchronisation
		defer t.Stop()
		for n := int64(1); ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if _, err := pc.Put(ctx, fmt.Sprintf("%s%09d", prefix, n), []byte("v")); err != nil {
				if ctx.Err() != nil {
					return
				}
				n-- // retried: the same key again
				continue
			}
			written.Store(n)
		}
	}()
	stopWriter := sync.OnceFunc(func() {
		close(stop)
		<-writerDone
	})
	defer stopWriter()

	seen := int64(0)
	next := func() client.WatchResponse {
		select {
		case r, ok := <-watch:
			if !ok || r.Err != nil {
				b.Fatalf("watch ended: %v", r.Err)
			}
			for _, e := range r.Events {
				var n int64
				_, err := fmt.Sscanf(e.KV.Key[len(prefix):], "%d", &n)
				if seen == 0 && err == nil {
					seen = n - 1 // the watch started after the writer (its start is asynchronous)
				}
				if err != nil || n != seen+1 {
					b.Fatalf("event %q after key %d: a gap or a repeat", e.KV.Key, seen)
				}
				seen = n
			}
			return r
		case <-ctx.Done():
			b.Fatal("no event within a minute")
		}
		panic("unreachable")
	}
	for seen < 20 {
		next()
	}
	killed := time.Now()
	before := seen
	proxy.Close()
	c.stop(victim)
	for seen == before {
		next()
	}
	took := time.Since(killed)
	stopWriter()
	for seen < written.Load() {
		next()
	}
	c.start(victim)
	c.leader()
	return took
}
