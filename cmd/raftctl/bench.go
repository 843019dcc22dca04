package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

type benchConfig struct {
	clients      int
	conns        int
	duration     time.Duration
	total        int64
	valueSize    int
	keys         int
	serializable bool
	seed         uint64
	inflight     int
}

// Latencies are recorded in microseconds, from 1µs to 1 minute, with 3
// significant digits.
const (
	histMin = 1
	histMax = int64(time.Minute / time.Microsecond)
)

func benchCommand(g *globals) *cobra.Command {
	var cfg benchConfig
	bench := &cobra.Command{
		Use:   "bench put|get",
		Short: "Measure throughput and latency of puts or gets",
		Long: "bench runs --clients goroutines that issue operations back to back, sharing\n" +
			"--conns client connections (each client.Client coalesces its goroutines'\n" +
			"operations into batches), until --duration passes, --total operations are\n" +
			"done, or Ctrl-C. Keys are drawn at random from --keys keys. It prints a\n" +
			"progress line every second on stderr, then the throughput, the latency\n" +
			"percentiles and the errors by kind. bench get first writes every key.\n\n" +
			`JSON: {"op": "put"|"get", "ops": int, "errors": int, "errors_by_kind": {kind: int},` + "\n" +
			`  "seconds": float, "ops_per_sec": float, "clients": int, "conns": int,` + "\n" +
			`  "value_size": int, "keys": int, "seed": int, "inflight": int, "latency_us": {"p50": int, "p90": int,` + "\n" +
			`  "p99": int, "p999": int, "max": int, "mean": float}}` + "\n" +
			"It exits 1 only if no operation succeeded.",
		Args: exactArgs(0, "a subcommand: put or get"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl bench needs a subcommand: put or get")
		},
	}
	pf := bench.PersistentFlags()
	pf.IntVar(&cfg.clients, "clients", 16, "concurrent goroutines issuing operations")
	pf.IntVar(&cfg.conns, "conns", 1, "client connections the goroutines share")
	pf.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run")
	pf.Int64Var(&cfg.total, "total", 0, "stop after this many operations (0: no cap; --duration still applies)")
	pf.IntVar(&cfg.valueSize, "value-size", 256, "bytes per value")
	pf.IntVar(&cfg.keys, "keys", 10000, "distinct keys (bench/0 ... bench/K-1)")
	pf.Uint64Var(&cfg.seed, "seed", 0, "seed for key choice (0: from the clock)")
	pf.IntVar(&cfg.inflight, "inflight", client.DefaultMaxInFlight, "batch calls in flight per connection")
	for _, op := range []string{"put", "get"} {
		sub := &cobra.Command{
			Use:   op,
			Short: "Benchmark " + op + "s",
			Long:  bench.Long,
			Args:  exactArgs(0, "none (the load is set with flags)"),
			RunE: func(cmd *cobra.Command, _ []string) error {
				if err := cfg.validate(); err != nil {
					return err
				}
				return runBench(cmd, g, op, cfg)
			},
		}
		if op == "get" {
			sub.Flags().BoolVar(&cfg.serializable, "serializable", false, "serializable reads (possibly stale; served by any node)")
		}
		bench.AddCommand(sub)
	}
	return bench
}

func (c *benchConfig) validate() error {
	switch {
	case c.clients < 1 || c.clients > 100000:
		return usagef("--clients must be between 1 and 100000")
	case c.conns < 1 || c.conns > c.clients:
		return usagef("--conns must be between 1 and --clients (%d)", c.clients)
	case c.duration <= 0:
		return usagef("--duration must be positive")
	case c.total < 0:
		return usagef("--total must be 0 (no cap) or positive")
	case c.valueSize < 0 || c.valueSize > maxValueSize:
		return usagef("--value-size must be between 0 and %d (the node's 1 MiB value limit)", maxValueSize)
	case c.keys < 1:
		return usagef("--keys must be positive")
	case c.inflight < 1 || c.inflight > 1024:
		return usagef("--inflight must be between 1 and 1024")
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return nil
}

func benchKey(i int) string { return fmt.Sprintf("bench/%d", i) }

// benchStats accumulates one worker's results.
type benchStats struct {
	hist   *hdrhistogram.Histogram
	errors map[string]int64
}

func runBench(cmd *cobra.Command, g *globals, op string, cfg benchConfig) error {
	if os.Getenv("GOGC") == "" {
		// The load generator allocates per operation; collecting less
		// often keeps it from competing with the nodes for the CPU.
		debug.SetGCPercent(400)
	}
	stderr := cmd.ErrOrStderr()
	clients := make([]*client.Client, cfg.conns)
	for i := range clients {
		c, err := g.connect(stderr, client.WithRequestTimeout(g.timeout), client.WithMaxInFlight(cfg.inflight))
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	ctx := cmd.Context() // SIGINT ends the run
	value := make([]byte, cfg.valueSize)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	if op == "get" {
		if err := preload(ctx, g, cfg, clients, value, stderr); err != nil {
			return err
		}
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var claimed, done, failed atomic.Int64
	stats := make([]benchStats, cfg.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.clients {
		stats[w] = benchStats{hist: hdrhistogram.New(histMin, histMax, 3), errors: map[string]int64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			rng := rand.New(rand.NewPCG(cfg.seed, uint64(w)))
			st := &stats[w]
			for runCtx.Err() == nil {
				if cfg.total > 0 && claimed.Add(1) > cfg.total {
					return
				}
				key := benchKey(rng.IntN(cfg.keys))
				octx, ocancel := context.WithTimeout(runCtx, g.timeout)
				t0 := time.Now()
				var err error
				if op == "put" {
					_, err = c.Put(octx, key, value)
				} else {
					var opts []client.ReadOption
					if cfg.serializable {
						opts = append(opts, client.Serializable())
					}
					_, err = c.Get(octx, key, opts...)
				}
				lat := time.Since(t0)
				ocancel()
				if err != nil {
					if runCtx.Err() != nil {
						return // the run ended while the operation was waiting
					}
					st.errors[errorKind(err)]++
					failed.Add(1)
					continue
				}
				_ = st.hist.RecordValue(max(lat.Microseconds(), histMin))
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	progress(finished, stderr, "bench "+op, start, &done, &failed)
	elapsed := time.Since(start)

	hist := hdrhistogram.New(histMin, histMax, 3)
	byKind := map[string]int64{}
	for _, st := range stats {
		hist.Merge(st.hist)
		for k, n := range st.errors {
			byKind[k] += n
		}
	}
	ops, errs := done.Load(), failed.Load()
	rate := float64(ops) / elapsed.Seconds()
	lat := map[string]any{
		"p50": hist.ValueAtQuantile(50), "p90": hist.ValueAtQuantile(90), "p99": hist.ValueAtQuantile(99),
		"p999": hist.ValueAtQuantile(99.9), "max": hist.Max(), "mean": hist.Mean(),
	}
	obj := map[string]any{
		"op": op, "ops": ops, "errors": errs, "errors_by_kind": byKind, "seconds": elapsed.Seconds(),
		"ops_per_sec": rate, "clients": cfg.clients, "conns": cfg.conns, "value_size": cfg.valueSize,
		"keys": cfg.keys, "seed": cfg.seed, "inflight": cfg.inflight, "latency_us": lat,
	}
	err := g.emit(cmd, obj, func(w io.Writer) {
		fmt.Fprintf(w, "%s: %d ops in %.2fs = %.0f ops/s (%d clients on %d connections, %d-byte values, %d keys)\n",
			op, ops, elapsed.Seconds(), rate, cfg.clients, cfg.conns, cfg.valueSize, cfg.keys)
		us := func(v int64) string { return (time.Duration(v) * time.Microsecond).String() }
		fmt.Fprintf(w, "latency: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
			us(hist.ValueAtQuantile(50)), us(hist.ValueAtQuantile(90)), us(hist.ValueAtQuantile(99)),
			us(hist.ValueAtQuantile(99.9)), us(hist.Max()))
		fmt.Fprintf(w, "errors: %d%s\n", errs, formatKinds(byKind))
		fmt.Fprintf(w, "seed: %d (--seed to repeat the key sequence)\n", cfg.seed)
	})
	if err != nil {
		return err
	}
	if ops == 0 && ctx.Err() == nil {
		return &reportedError{fmt.Errorf("no %s succeeded (%d errors%s)", op, errs, formatKinds(byKind))}
	}
	return nil
}

// formatKinds lists error counts by kind: " (unavailable=3, timeout=1)".
func formatKinds(m map[string]int64) string {
	if len(m) == 0 {
		return ""
	}
	kinds := make([]string, 0, len(m))
	for k := range m {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// progress prints a line every second on w until finished is closed.
func progress(finished <-chan struct{}, w io.Writer, what string, start time.Time, done, failed *atomic.Int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-finished:
			return
		case now := <-t.C:
			n := done.Load()
			fmt.Fprintf(w, "%s: %5.1fs  %d ops  %.0f ops/s  %d errors\n",
				what, now.Sub(start).Seconds(), n, float64(n-last)/now.Sub(lastAt).Seconds(), failed.Load())
			last, lastAt = n, now
		}
	}
}

// preload writes every key once, with progress, for bench get.
func preload(ctx context.Context, g *globals, cfg benchConfig, clients []*client.Client, value []byte, stderr io.Writer) error {
	var next, done, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(cfg.keys) {
					return
				}
				octx, cancel := context.WithTimeout(ctx, g.timeout)
				_, err := c.Put(octx, benchKey(int(i)), value)
				cancel()
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return // one failure stops this worker; the rest finish or fail alike
				}
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	progress(finished, stderr, "preload", start, &done, &failed)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("preload interrupted: %w", err)
	}
	if firstErr != nil {
		return fmt.Errorf("preload: wrote %d of %d keys: %w", done.Load(), cfg.keys, firstErr)
	}
	fmt.Fprintf(stderr, "preload: wrote %d keys in %.1fs\n", done.Load(), time.Since(start).Seconds())
	return nil
}
