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
	"github.com/capraft/capraft/internal/procstat"
)

type benchConfig struct {
	clients      int
	conns        int
	duration     time.Duration
	total        int64
	valueSize    int
	keys         int
	serializable bool
	readFrac     float64 // mixed: the fraction of operations that are gets
	seed         uint64
	inflight     int
	spread       bool   // --read-spreading
	pidList      string // --pids: server processes whose CPU to report
	pids         []int
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
		Use:   "bench put|get|mixed",
		Short: "Measure throughput and latency of puts, gets or a mix",
		Long: "bench runs --clients goroutines that issue operations back to back, sharing\n" +
			"--conns independent client connections (each its own client.Client, which\n" +
			"coalesces its goroutines' operations into batches), until --duration passes,\n" +
			"--total operations are done, or Ctrl-C. Keys are drawn at random from --keys\n" +
			"keys. bench mixed makes a fraction --read-frac of its operations gets and the\n" +
			"rest puts. It prints a progress line every second on stderr, then the\n" +
			"throughput, the latency percentiles (for mixed also of reads and writes\n" +
			"apart) and the errors by kind. bench get and bench mixed first write every\n" +
			"key. With --pids (the nodes' process ids, on this machine) it also reports\n" +
			"the CPU those processes used while it ran (utime+stime from /proc) and\n" +
			"their resident memory at the end.\n\n" +
			`JSON: {"op": "put"|"get"|"mixed", "ops": int, "errors": int, "errors_by_kind": {kind: int},` + "\n" +
			`  "seconds": float, "ops_per_sec": float, "clients": int, "conns": int,` + "\n" +
			`  "value_size": int, "keys": int, "seed": int, "inflight": int, "read_spreading": bool,` + "\n" +
			`  "latency_us": {"p50": int, "p90": int,` + "\n" +
			`  "p99": int, "p999": int, "max": int, "mean": float}` + "\n" +
			`  mixed: "read_frac": float, "read_latency_us": {...}, "write_latency_us": {...}` + "\n" +
			`  --pids: "server": {"cpu_seconds": float, "cpu_us_per_op": float, "rss_bytes": int,` + "\n" +
			`    "by_pid": [{"pid": int, "cpu_seconds": float, "rss_bytes": int}]}}` + "\n" +
			"It exits 1 only if no operation succeeded.",
		Args: exactArgs(0, "a subcommand: put, get or mixed"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl bench needs a subcommand: put, get or mixed")
		},
	}
	pf := bench.PersistentFlags()
	pf.IntVar(&cfg.clients, "clients", 16, "concurrent goroutines issuing operations")
	pf.IntVar(&cfg.conns, "conns", 1, "independent client connections the goroutines share (goroutine i uses connection i mod conns)")
	pf.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to run")
	pf.Int64Var(&cfg.total, "total", 0, "stop after this many operations (0: no cap; --duration still applies)")
	pf.IntVar(&cfg.valueSize, "value-size", 256, "bytes per value")
	pf.IntVar(&cfg.keys, "keys", 10000, "distinct keys (bench/0 ... bench/K-1)")
	pf.Uint64Var(&cfg.seed, "seed", 0, "seed for key choice (0: from the clock)")
	pf.IntVar(&cfg.inflight, "inflight", client.DefaultMaxInFlight, "batch calls in flight per connection")
	pf.BoolVar(&cfg.spread, "read-spreading", client.DefaultReadSpreading, "spread the reads over every endpoint (client.WithReadSpreading); writes go to the leader either way")
	pf.StringVar(&cfg.pidList, "pids", "", "the nodes' process ids on this machine, comma-separated: report their CPU while bench ran and their memory")
	for _, op := range []string{"put", "get", "mixed"} {
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
		if op == "mixed" {
			sub.Short = "Benchmark a mix of gets and puts"
			sub.Flags().Float64Var(&cfg.readFrac, "read-frac", 0.9, "the fraction of operations that are gets (0 to 1)")
		}
		if op != "put" {
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
	case c.readFrac < 0 || c.readFrac > 1:
		return usagef("--read-frac must be between 0 and 1 (the fraction of operations that are gets)")
	}
	if c.pidList != "" {
		pids, err := procstat.ParsePids(c.pidList)
		if err != nil {
			return usagef("--pids: %v", err)
		}
		for _, pid := range pids {
			if _, err := procstat.CPU(pid); err != nil {
				return usagef("--pids: %v (give the nodes' process ids on this machine)", err)
			}
		}
		c.pids = pids
	}
	if c.seed == 0 {
		c.seed = uint64(time.Now().UnixNano())
	}
	return nil
}

func benchKey(i int) string { return fmt.Sprintf("bench/%d", i) }

// benchStats accumulates one worker's results. reads and writes are
// kept apart only for bench mixed (nil otherwise).
type benchStats struct {
	hist          *hdrhistogram.Histogram
	reads, writes *hdrhistogram.Histogram
	errors        map[string]int64
}

// isRead says whether bench op's next operation, drawn as u (uniform in
// [0,1)), is a get.
func (c *benchConfig) isRead(op string, u float64) bool {
	switch op {
	case "get":
		return true
	case "mixed":
		return u < c.readFrac
	}
	return false
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
		c, err := g.connect(stderr, client.WithRequestTimeout(g.timeout), client.WithMaxInFlight(cfg.inflight),
			client.WithReadSpreading(cfg.spread))
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
	if op != "put" {
		if err := preload(ctx, g, cfg, clients, value, stderr); err != nil {
			return err
		}
	}
	var cpuBefore []time.Duration
	if len(cfg.pids) > 0 {
		var err error
		if cpuBefore, _, err = procstat.CPUTotal(cfg.pids); err != nil {
			return fmt.Errorf("--pids: %w", err)
		}
	}

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var claimed, done, failed atomic.Int64
	stats := make([]benchStats, cfg.clients)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range cfg.clients {
		stats[w] = benchStats{hist: newHist(), errors: map[string]int64{}}
		if op == "mixed" {
			stats[w].reads, stats[w].writes = newHist(), newHist()
		}
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
				read := cfg.isRead(op, rng.Float64())
				octx, ocancel := context.WithTimeout(runCtx, g.timeout)
				t0 := time.Now()
				var err error
				if !read {
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
				us := max(lat.Microseconds(), histMin)
				_ = st.hist.RecordValue(us)
				switch {
				case st.reads == nil: // not bench mixed
				case read:
					_ = st.reads.RecordValue(us)
				default:
					_ = st.writes.RecordValue(us)
				}
				done.Add(1)
			}
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	progress(finished, stderr, "bench "+op, start, &done, &failed)
	elapsed := time.Since(start)
	ops, errs := done.Load(), failed.Load()
	server := serverCost(cfg.pids, cpuBefore, ops, stderr)

	hist, reads, writes := newHist(), newHist(), newHist()
	byKind := map[string]int64{}
	for _, st := range stats {
		hist.Merge(st.hist)
		if op == "mixed" {
			reads.Merge(st.reads)
			writes.Merge(st.writes)
		}
		for k, n := range st.errors {
			byKind[k] += n
		}
	}
	rate := float64(ops) / elapsed.Seconds()
	obj := map[string]any{
		"op": op, "ops": ops, "errors": errs, "errors_by_kind": byKind, "seconds": elapsed.Seconds(),
		"ops_per_sec": rate, "clients": cfg.clients, "conns": cfg.conns, "value_size": cfg.valueSize,
		"keys": cfg.keys, "seed": cfg.seed, "inflight": cfg.inflight, "read_spreading": cfg.spread, "latency_us": latencyJSON(hist),
	}
	if op == "mixed" {
		obj["read_frac"] = cfg.readFrac
		obj["read_latency_us"], obj["write_latency_us"] = latencyJSON(reads), latencyJSON(writes)
	}
	if server != nil {
		obj["server"] = server.json()
	}
	err := g.emit(cmd, obj, func(w io.Writer) {
		what := fmt.Sprintf("%d clients on %d connections, %d-byte values, %d keys", cfg.clients, cfg.conns, cfg.valueSize, cfg.keys)
		if op == "mixed" {
			what = fmt.Sprintf("%g reads, ", cfg.readFrac) + what
		}
		fmt.Fprintf(w, "%s: %d ops in %.2fs = %.0f ops/s (%s)\n", op, ops, elapsed.Seconds(), rate, what)
		fmt.Fprintf(w, "latency: %s\n", latencyText(hist))
		if op == "mixed" {
			fmt.Fprintf(w, "reads: %d, %s\n", reads.TotalCount(), latencyText(reads))
			fmt.Fprintf(w, "writes: %d, %s\n", writes.TotalCount(), latencyText(writes))
		}
		fmt.Fprintf(w, "errors: %d%s\n", errs, formatKinds(byKind))
		if server != nil {
			server.text(w)
		}
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

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

func latencyJSON(h *hdrhistogram.Histogram) map[string]any {
	return map[string]any{
		"p50": h.ValueAtQuantile(50), "p90": h.ValueAtQuantile(90), "p99": h.ValueAtQuantile(99),
		"p999": h.ValueAtQuantile(99.9), "max": h.Max(), "mean": h.Mean(),
	}
}

func latencyText(h *hdrhistogram.Histogram) string {
	us := func(v int64) string { return (time.Duration(v) * time.Microsecond).String() }
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s",
		us(h.ValueAtQuantile(50)), us(h.ValueAtQuantile(90)), us(h.ValueAtQuantile(99)),
		us(h.ValueAtQuantile(99.9)), us(h.Max()))
}

// serverStats is what the --pids processes cost while bench ran.
type serverStats struct {
	pids  []int
	cpu   []time.Duration // each process's CPU over the run
	mem   []procstat.Memory
	total time.Duration
	ops   int64
}

// serverCost reads the --pids processes' CPU and memory after the run.
// A process that cannot be read any more (it exited) is reported on
// stderr, and the run's other results stand without the server's.
func serverCost(pids []int, before []time.Duration, ops int64, stderr io.Writer) *serverStats {
	if len(pids) == 0 {
		return nil
	}
	after, _, err := procstat.CPUTotal(pids)
	if err != nil {
		fmt.Fprintf(stderr, "bench: no server CPU to report: %v\n", err)
		return nil
	}
	s := &serverStats{pids: pids, ops: ops}
	for i, pid := range pids {
		m, err := procstat.ReadMemory(pid)
		if err != nil {
			fmt.Fprintf(stderr, "bench: no server CPU to report: %v\n", err)
			return nil
		}
		d := after[i] - before[i]
		s.cpu, s.mem, s.total = append(s.cpu, d), append(s.mem, m), s.total+d
	}
	return s
}

func (s *serverStats) rss() int64 {
	var n int64
	for _, m := range s.mem {
		n += m.RSS
	}
	return n
}

// usPerOp is the servers' CPU per successful operation, in microseconds.
func (s *serverStats) usPerOp() float64 {
	if s.ops == 0 {
		return 0
	}
	return float64(s.total.Microseconds()) / float64(s.ops)
}

func (s *serverStats) json() map[string]any {
	byPid := make([]map[string]any, len(s.pids))
	for i, pid := range s.pids {
		byPid[i] = map[string]any{"pid": pid, "cpu_seconds": s.cpu[i].Seconds(), "rss_bytes": s.mem[i].RSS}
	}
	return map[string]any{"cpu_seconds": s.total.Seconds(), "cpu_us_per_op": s.usPerOp(), "rss_bytes": s.rss(), "by_pid": byPid}
}

func (s *serverStats) text(w io.Writer) {
	parts := make([]string, len(s.pids))
	for i, pid := range s.pids {
		parts[i] = fmt.Sprintf("pid %d %.2fs %d MiB", pid, s.cpu[i].Seconds(), s.mem[i].RSS>>20)
	}
	fmt.Fprintf(w, "server: CPU %.2fs (%.0f µs/op), RSS %d MiB (%s)\n",
		s.total.Seconds(), s.usPerOp(), s.rss()>>20, strings.Join(parts, ", "))
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

// preload writes every key once, with progress, for bench get and mixed.
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
