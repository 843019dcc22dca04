package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/capraft/capraft/internal/procstat"
)

// Store is one client connection to a key-value cluster: the operations
// the workloads issue, with the same meaning on every system.
type Store interface {
	// Put writes value at key and returns once the write is committed.
	Put(ctx context.Context, key string, value []byte) error
	// Get reads key: linearizable unless serializable (possibly stale,
	// served by whichever node gets it).
	Get(ctx context.Context, key string, serializable bool) error
	// Close closes the connection.
	Close() error
}

// Workload is what a run issues.
type Workload struct {
	Op           string  // "put", "get" or "mixed"
	ReadFrac     float64 // mixed: the fraction of operations that are gets
	Serializable bool    // gets are serializable instead of linearizable
	Clients      int     // goroutines issuing operations back to back
	Conns        int     // independent client connections the goroutines share
	ValueSize    int     // bytes per value
	Keys         int     // distinct keys, drawn uniformly
	Warmup       time.Duration
	Duration     time.Duration // the measured window, after Warmup
	OpTimeout    time.Duration // bound on one operation
	Seed         uint64
}

// Validate checks w and says what to change.
func (w *Workload) Validate() error {
	switch {
	case w.Op != "put" && w.Op != "get" && w.Op != "mixed":
		return fmt.Errorf("op %q: want put, get or mixed", w.Op)
	case w.Op == "mixed" && (w.ReadFrac < 0 || w.ReadFrac > 1):
		return fmt.Errorf("read fraction %v: want 0 to 1", w.ReadFrac)
	case w.Clients < 1 || w.Clients > 100000:
		return fmt.Errorf("clients %d: want 1 to 100000", w.Clients)
	case w.Conns < 1 || w.Conns > w.Clients:
		return fmt.Errorf("conns %d: want 1 to clients (%d)", w.Conns, w.Clients)
	case w.ValueSize < 0 || w.ValueSize > 1<<20:
		return fmt.Errorf("value size %d: want 0 to 1 MiB", w.ValueSize)
	case w.Keys < 1:
		return fmt.Errorf("keys %d: want at least 1", w.Keys)
	case w.Duration <= 0 || w.Warmup < 0 || w.OpTimeout <= 0:
		return fmt.Errorf("duration %v, warmup %v, op timeout %v: want positive, non-negative, positive", w.Duration, w.Warmup, w.OpTimeout)
	}
	return nil
}

// Name is the workload's label in tables: "put", "get linearizable",
// "mixed 0.9 linearizable".
func (w *Workload) Name() string {
	read := "linearizable"
	if w.Serializable {
		read = "serializable"
	}
	switch w.Op {
	case "get":
		return "get " + read
	case "mixed":
		return fmt.Sprintf("mixed %g %s", w.ReadFrac, read)
	}
	return w.Op
}

// isRead says whether an operation drawn as u (uniform in [0,1)) is a get.
func (w *Workload) isRead(u float64) bool {
	switch w.Op {
	case "get":
		return true
	case "mixed":
		return u < w.ReadFrac
	}
	return false
}

// Latency is a latency distribution's summary, in microseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   int64   `json:"p50"`
	P90   int64   `json:"p90"`
	P99   int64   `json:"p99"`
	P999  int64   `json:"p999"`
	Max   int64   `json:"max"`
	Mean  float64 `json:"mean"`
}

// Latencies are recorded in microseconds, from 1µs to 1 minute, with 3
// significant digits.
const (
	histMin = 1
	histMax = int64(time.Minute / time.Microsecond)
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

func summarize(h *hdrhistogram.Histogram) Latency {
	return Latency{
		Count: h.TotalCount(), P50: h.ValueAtQuantile(50), P90: h.ValueAtQuantile(90),
		P99: h.ValueAtQuantile(99), P999: h.ValueAtQuantile(99.9), Max: h.Max(), Mean: h.Mean(),
	}
}

// Result is one run's measurements: one JSON line of `compare run`.
type Result struct {
	System       string   `json:"system"`
	Rep          int      `json:"rep"` // repetition: a row's capraft and etcd runs of one rep pair up
	Workload     string   `json:"workload"`
	ReadFrac     float64  `json:"read_frac,omitempty"`
	Clients      int      `json:"clients"`
	Conns        int      `json:"conns"`
	ValueSize    int      `json:"value_size"`
	Keys         int      `json:"keys"`
	Seed         uint64   `json:"seed"`
	Seconds      float64  `json:"seconds"`
	Ops          int64    `json:"ops"`
	Errors       int64    `json:"errors"`
	FirstError   string   `json:"first_error,omitempty"`
	OpsPerSec    float64  `json:"ops_per_sec"`
	Latency      Latency  `json:"latency_us"`
	ReadLatency  *Latency `json:"read_latency_us,omitempty"`
	WriteLatency *Latency `json:"write_latency_us,omitempty"`
	// Server* are the sums over the server processes (--pids), measured
	// over the window: CPU used, and resident memory at its end.
	ServerPids    []int   `json:"server_pids,omitempty"`
	ServerCPU     float64 `json:"server_cpu_seconds"`
	ServerRSS     int64   `json:"server_rss_bytes"`
	ServerPeakRSS int64   `json:"server_peak_rss_bytes"`
	// ClientCPU is this load generator's own CPU over the window.
	ClientCPU float64 `json:"client_cpu_seconds"`
}

// workerStats is one goroutine's measurements.
type workerStats struct {
	reads, writes *hdrhistogram.Histogram
	errors        int64
	firstErr      error
}

// Run preloads the keys (for workloads that read), then drives the stores
// with w: w.Clients goroutines, goroutine i on stores[i%len(stores)],
// each issuing one operation after another. Operations that start in the
// warmup are not counted. The server pids' CPU and memory are read at the
// window's start and end. progress, if not nil, gets a line per second.
func Run(ctx context.Context, w Workload, stores []Store, pids []int, progress io.Writer) (Result, error) {
	if err := w.Validate(); err != nil {
		return Result{}, err
	}
	if len(stores) == 0 {
		return Result{}, errors.New("no store to run against")
	}
	value := make([]byte, w.ValueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	if w.Op != "put" {
		if err := Preload(ctx, w, stores, value, progress); err != nil {
			return Result{}, err
		}
	}

	start := time.Now()
	measureFrom := start.Add(w.Warmup)
	runCtx, cancel := context.WithDeadline(ctx, measureFrom.Add(w.Duration))
	defer cancel()

	stats := make([]workerStats, w.Clients)
	var done atomic.Int64
	var wg sync.WaitGroup
	for i := range w.Clients {
		stats[i] = workerStats{reads: newHist(), writes: newHist()}
		wg.Add(1)
		go func() {
			defer wg.Done()
			work(runCtx, &w, stores[i%len(stores)], rand.New(rand.NewPCG(w.Seed, uint64(i))), value, measureFrom, &stats[i], &done)
		}()
	}

	// The window: sample the servers and ourselves at its start and end.
	var before, after sample
	var sampleErr error
	window := func() error {
		select {
		case <-time.After(time.Until(measureFrom)):
		case <-runCtx.Done():
			return fmt.Errorf("run ended in its warmup: %w", context.Cause(runCtx))
		}
		var err error
		if before, err = takeSample(pids); err != nil {
			return err
		}
		<-runCtx.Done()
		if ctx.Err() != nil {
			return fmt.Errorf("run interrupted: %w", ctx.Err())
		}
		after, err = takeSample(pids)
		return err
	}
	finished := make(chan struct{})
	go func() { sampleErr = window(); wg.Wait(); close(finished) }()
	report(finished, progress, "run "+w.Name(), start, &done)
	<-finished
	if sampleErr != nil {
		return Result{}, sampleErr
	}

	reads, writes := newHist(), newHist()
	res := Result{
		Workload: w.Name(), Clients: w.Clients, Conns: w.Conns, ValueSize: w.ValueSize, Keys: w.Keys, Seed: w.Seed,
		Seconds: after.at.Sub(before.at).Seconds(), ServerPids: pids,
		ServerCPU: (after.serverCPU - before.serverCPU).Seconds(), ServerRSS: after.serverMem.RSS, ServerPeakRSS: after.serverMem.Peak,
		ClientCPU: (after.selfCPU - before.selfCPU).Seconds(),
	}
	if w.Op == "mixed" {
		res.ReadFrac = w.ReadFrac
	}
	for _, st := range stats {
		reads.Merge(st.reads)
		writes.Merge(st.writes)
		res.Errors += st.errors
		if st.firstErr != nil && res.FirstError == "" {
			res.FirstError = st.firstErr.Error()
		}
	}
	all := newHist()
	all.Merge(reads)
	all.Merge(writes)
	res.Ops = all.TotalCount()
	res.OpsPerSec = float64(res.Ops) / res.Seconds
	res.Latency = summarize(all)
	if w.Op == "mixed" {
		r, wr := summarize(reads), summarize(writes)
		res.ReadLatency, res.WriteLatency = &r, &wr
	}
	return res, nil
}

// work is one goroutine of Run: operations back to back until ctx ends.
func work(ctx context.Context, w *Workload, s Store, rng *rand.Rand, value []byte, measureFrom time.Time, st *workerStats, done *atomic.Int64) {
	for ctx.Err() == nil {
		key := benchKey(rng.IntN(w.Keys))
		read := w.isRead(rng.Float64())
		octx, cancel := context.WithTimeout(ctx, w.OpTimeout)
		t0 := time.Now()
		var err error
		if read {
			err = s.Get(octx, key, w.Serializable)
		} else {
			err = s.Put(octx, key, value)
		}
		lat := time.Since(t0)
		cancel()
		if t0.Before(measureFrom) {
			continue // warmup
		}
		if err != nil {
			if ctx.Err() != nil {
				return // the window closed while the operation waited
			}
			st.errors++
			if st.firstErr == nil {
				st.firstErr = err
			}
			continue
		}
		h := st.writes
		if read {
			h = st.reads
		}
		_ = h.RecordValue(max(lat.Microseconds(), histMin))
		done.Add(1)
	}
}

func benchKey(i int) string { return fmt.Sprintf("bench/%d", i) }

// Preload writes every key once, so that reads find a value.
func Preload(ctx context.Context, w Workload, stores []Store, value []byte, progress io.Writer) error {
	var next, done atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for i := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%len(stores)]
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= int64(w.Keys) {
					return
				}
				octx, cancel := context.WithTimeout(ctx, w.OpTimeout)
				err := s.Put(octx, benchKey(int(k)), value)
				cancel()
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	report(finished, progress, "preload", start, &done)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("preload interrupted: %w", err)
	}
	if firstErr != nil {
		return fmt.Errorf("preload: wrote %d of %d keys: %w", done.Load(), w.Keys, firstErr)
	}
	return nil
}

// report prints a line a second on w (if not nil) until finished closes.
func report(finished <-chan struct{}, w io.Writer, what string, start time.Time, done *atomic.Int64) {
	if w == nil {
		<-finished
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-finished:
			return
		case now := <-t.C:
			n := done.Load()
			fmt.Fprintf(w, "%s: %5.1fs  %d ops  %.0f ops/s\n", what, now.Sub(start).Seconds(), n, float64(n-last)/now.Sub(lastAt).Seconds())
			last, lastAt = n, now
		}
	}
}

// sample is the CPU and memory of the servers and of this process at one
// moment.
type sample struct {
	at        time.Time
	serverCPU time.Duration
	serverMem procstat.Memory
	selfCPU   time.Duration
}

func takeSample(pids []int) (sample, error) {
	s := sample{at: time.Now()}
	for _, pid := range pids {
		cpu, err := procstat.CPU(pid)
		if err != nil {
			return sample{}, fmt.Errorf("server: %w", err)
		}
		mem, err := procstat.ReadMemory(pid)
		if err != nil {
			return sample{}, fmt.Errorf("server: %w", err)
		}
		s.serverCPU += cpu
		s.serverMem.RSS += mem.RSS
		s.serverMem.Peak += mem.Peak
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return sample{}, fmt.Errorf("own cpu time: %w", err)
	}
	s.selfCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return s, nil
}
