package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestMixedWorkloadReadsAtItsReadFraction(t *testing.T) {
	const seed = 7
	for _, frac := range []float64{0, 0.1, 0.5, 0.9, 1} {
		w := Workload{Op: "mixed", ReadFrac: frac}
		rng := rand.New(rand.NewPCG(seed, 0))
		const n = 100000
		reads := 0
		for range n {
			if w.isRead(rng.Float64()) {
				reads++
			}
		}
		// 100k draws: the standard deviation of the fraction is at most
		// 0.0016; 0.01 is over six of them.
		if got := float64(reads) / n; got < frac-0.01 || got > frac+0.01 {
			t.Errorf("read fraction %v (seed %d): %v of operations were reads", frac, seed, got)
		}
	}
	put, get := Workload{Op: "put"}, Workload{Op: "get"}
	for _, u := range []float64{0, 0.5, 0.999} {
		if put.isRead(u) || !get.isRead(u) {
			t.Fatalf("u=%v: put reads %v, get reads %v", u, put.isRead(u), get.isRead(u))
		}
	}
}

func TestWorkloadNames(t *testing.T) {
	for _, c := range []struct {
		w    Workload
		want string
	}{
		{Workload{Op: "put"}, "put"},
		{Workload{Op: "get"}, "get linearizable"},
		{Workload{Op: "get", Serializable: true}, "get serializable"},
		{Workload{Op: "mixed", ReadFrac: 0.9}, "mixed 0.9 linearizable"},
	} {
		if got := c.w.Name(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.w, got, c.want)
		}
	}
}

func TestValidateRefusesBadWorkloads(t *testing.T) {
	ok := Workload{Op: "put", Clients: 4, Conns: 2, ValueSize: 8, Keys: 10, Duration: time.Second, OpTimeout: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Workload){
		"op":        func(w *Workload) { w.Op = "scan" },
		"read-frac": func(w *Workload) { w.Op, w.ReadFrac = "mixed", 1.5 },
		"conns":     func(w *Workload) { w.Conns = 5 },
		"keys":      func(w *Workload) { w.Keys = 0 },
		"duration":  func(w *Workload) { w.Duration = 0 },
	} {
		w := ok
		mod(&w)
		if err := w.Validate(); err == nil {
			t.Errorf("%s: %+v accepted", name, w)
		}
	}
}

// fakeStore is an in-memory Store that counts its calls and fails every
// failEvery-th put (0: never).
type fakeStore struct {
	mu        sync.Mutex
	data      map[string][]byte
	puts      atomic.Int64
	gets      atomic.Int64
	missing   atomic.Int64 // gets of a key that was never written
	failEvery int64
}

var errFake = errors.New("fake failure")

func newFakeStore(failEvery int64) *fakeStore {
	return &fakeStore{data: map[string][]byte{}, failEvery: failEvery}
}

func (s *fakeStore) Put(ctx context.Context, key string, value []byte) error {
	n := s.puts.Add(1)
	if s.failEvery > 0 && n%s.failEvery == 0 {
		return errFake
	}
	s.mu.Lock()
	s.data[key] = value
	s.mu.Unlock()
	return ctx.Err()
}

func (s *fakeStore) Get(ctx context.Context, key string, _ bool) error {
	s.gets.Add(1)
	s.mu.Lock()
	_, ok := s.data[key]
	s.mu.Unlock()
	if !ok {
		s.missing.Add(1)
	}
	return ctx.Err()
}

func (s *fakeStore) Close() error { return nil }

func TestRunMixedPreloadsSplitsLatenciesAndUsesEveryConnection(t *testing.T) {
	cluster := newFakeStore(0) // every connection reaches the same data
	conns := []Store{cluster, cluster, cluster}
	w := Workload{Op: "mixed", ReadFrac: 0.5, Clients: 6, Conns: 3, ValueSize: 16, Keys: 50,
		Warmup: 20 * time.Millisecond, Duration: 200 * time.Millisecond, OpTimeout: time.Second, Seed: 3}
	res, err := Run(context.Background(), w, conns, []int{os.Getpid()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops == 0 || res.Errors != 0 || res.OpsPerSec <= 0 {
		t.Fatalf("result %+v: want operations and no errors", res)
	}
	if cluster.missing.Load() != 0 {
		t.Fatalf("%d gets found no key: the preload did not write every key", cluster.missing.Load())
	}
	if res.ReadLatency == nil || res.WriteLatency == nil || res.ReadLatency.Count == 0 || res.WriteLatency.Count == 0 ||
		res.ReadLatency.Count+res.WriteLatency.Count != res.Ops || res.Latency.Count != res.Ops {
		t.Fatalf("latencies: all %+v, reads %+v, writes %+v; ops %d", res.Latency, res.ReadLatency, res.WriteLatency, res.Ops)
	}
	if res.Workload != "mixed 0.5 linearizable" || res.ReadFrac != 0.5 {
		t.Fatalf("workload %q, read fraction %v", res.Workload, res.ReadFrac)
	}
	if res.ServerRSS <= 0 || res.ServerPeakRSS < res.ServerRSS || res.Seconds <= 0 {
		t.Fatalf("server memory %d (peak %d) over %vs: want a positive RSS read from /proc", res.ServerRSS, res.ServerPeakRSS, res.Seconds)
	}
}

func TestRunSpreadsClientsOverConnections(t *testing.T) {
	stores := []*fakeStore{newFakeStore(0), newFakeStore(0), newFakeStore(0)}
	w := Workload{Op: "put", Clients: 6, Conns: 3, ValueSize: 1, Keys: 10,
		Duration: 100 * time.Millisecond, OpTimeout: time.Second, Seed: 1}
	if _, err := Run(context.Background(), w, []Store{stores[0], stores[1], stores[2]}, nil, nil); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if s.puts.Load() == 0 || s.gets.Load() != 0 {
			t.Errorf("connection %d: %d puts, %d gets; want puts only, some on every connection", i, s.puts.Load(), s.gets.Load())
		}
	}
}

func TestRunCountsErrorsApart(t *testing.T) {
	s := newFakeStore(4) // every 4th put fails
	w := Workload{Op: "put", Clients: 2, Conns: 1, ValueSize: 1, Keys: 10,
		Duration: 100 * time.Millisecond, OpTimeout: time.Second, Seed: 1}
	res, err := Run(context.Background(), w, []Store{s}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || res.Ops == 0 || res.FirstError != errFake.Error() || res.Latency.Count != res.Ops {
		t.Fatalf("result %+v: want both successes and errors, counted apart", res)
	}
}

func TestRunStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w := Workload{Op: "get", Clients: 2, Conns: 1, ValueSize: 1, Keys: 10,
		Duration: time.Hour, OpTimeout: time.Second, Seed: 1}
	if _, err := Run(ctx, w, []Store{newFakeStore(0)}, nil, nil); err == nil {
		t.Fatal("a cancelled run reported a result")
	}
}
