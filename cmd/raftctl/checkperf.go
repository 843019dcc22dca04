package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

// perfLoad is one of check perf's loads: puts at a fixed rate from
// clients goroutines.
type perfLoad struct {
	name    string
	clients int
	rate    int // puts per second, in all
}

// The loads, as etcdctl check perf's: a small cluster on commodity disks
// should pass s; m and l need fast disks (NVMe) and a low-latency
// network; xl is near what the put path does on loopback with 2 cores
// (docs/BENCHMARKS.md).
var perfLoads = []perfLoad{
	{"s", 16, 200},
	{"m", 64, 1000},
	{"l", 256, 4000},
	{"xl", 512, 8000},
}

// The thresholds every load is checked against (docs/OPERATIONS.md).
const (
	perfMinRateFraction = 0.9         // of the target rate, sustained
	perfMaxSlowest      = time.Second // the slowest put
	perfValueSize       = 256         // bytes per value
	perfKeyPrefix       = "capraft-check-perf/"
)

type perfConfig struct {
	load     string
	duration time.Duration
	p99      time.Duration
	clients  int
	rate     int
}

func checkCommand(g *globals) *cobra.Command {
	check := &cobra.Command{
		Use:   "check",
		Short: "Check the cluster (perf)",
		Args:  exactArgs(0, "a subcommand: perf"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl check needs a subcommand: perf")
		},
	}
	var cfg perfConfig
	names := make([]string, len(perfLoads))
	for i, l := range perfLoads {
		names[i] = fmt.Sprintf("%s (%d clients, %d puts/s)", l.name, l.clients, l.rate)
	}
	perf := &cobra.Command{
		Use:   "perf",
		Short: "Say whether the cluster's disks and network sustain a load",
		Long: "check perf writes at a fixed rate for --duration (10s by default, at most 1m) from\n" +
			"many clients, with a progress line every second on stderr, and says PASS or\n" +
			"FAIL against these thresholds: the cluster sustained at least 90% of the\n" +
			"rate, the 99th percentile latency of a put is at most --p99 (100ms), the\n" +
			"slowest put took at most 1s, and no put failed. The loads (--load) are\n" +
			strings.Join(names, ", ") + ";\n" +
			"--clients and --rate set a load of your own. Values are 256 bytes, each\n" +
			"client overwrites its own key under " + perfKeyPrefix + ", and the keys are\n" +
			"deleted at the end. It exits 1 if a check failed.\n\n" +
			`JSON: {"pass": bool, "load": string, "clients": int, "rate": int, "seconds": float,` + "\n" +
			`  "ops": int, "errors": int, "errors_by_kind": {kind: int}, "puts_per_sec": float,` + "\n" +
			`  "latency_us": {"p50": int, "p90": int, "p99": int, "p999": int, "max": int, "mean": float},` + "\n" +
			`  "checks": [{"check": string, "pass": bool, "value": string, "limit": string}, ...]}`,
		Args: exactArgs(0, "none (the load is set with flags)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			load, err := cfg.resolve()
			if err != nil {
				return err
			}
			return runCheckPerf(cmd, g, cfg, load)
		},
	}
	fl := perf.Flags()
	fl.StringVar(&cfg.load, "load", "s", "the load: s, m, l or xl")
	fl.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to write, from 1s to 1m")
	fl.DurationVar(&cfg.p99, "p99", 100*time.Millisecond, "the 99th percentile put latency to stay within")
	fl.IntVar(&cfg.clients, "clients", 0, "concurrent clients (default: the load's)")
	fl.IntVar(&cfg.rate, "rate", 0, "puts per second to sustain, in all (default: the load's)")
	check.AddCommand(perf)
	return check
}

// resolve checks the flags and returns the load they ask for.
func (c *perfConfig) resolve() (perfLoad, error) {
	var load perfLoad
	for _, l := range perfLoads {
		if l.name == c.load {
			load = l
		}
	}
	switch {
	case load.name == "":
		return load, usagef("--load %q: give s, m, l or xl", c.load)
	case c.duration < time.Second || c.duration > time.Minute:
		return load, usagef("--duration must be between 1s and 1m")
	case c.p99 <= 0:
		return load, usagef("--p99 must be positive")
	case c.clients < 0 || c.clients > 10000:
		return load, usagef("--clients must be between 1 and 10000")
	case c.rate < 0 || c.rate > 1000000:
		return load, usagef("--rate must be between 1 and 1000000")
	}
	if c.clients > 0 {
		load.clients = c.clients
	}
	if c.rate > 0 {
		load.rate = c.rate
	}
	if c.clients > 0 || c.rate > 0 {
		load.name = "custom"
	}
	return load, nil
}

// perfCheck is one threshold's verdict.
type perfCheck struct {
	name, value, limit string
	pass               bool
}

func runCheckPerf(cmd *cobra.Command, g *globals, cfg perfConfig, load perfLoad) error {
	stderr := cmd.ErrOrStderr()
	// A connection per 64 clients (at most 8): each coalesces its
	// clients' puts into batches.
	conns := make([]*client.Client, min(8, (load.clients+63)/64))
	for i := range conns {
		c, err := g.connect(stderr, client.WithRequestTimeout(g.timeout))
		if err != nil {
			return err
		}
		defer c.Close()
		conns[i] = c
	}
	ctx := cmd.Context() // SIGINT ends the run
	value := []byte(strings.Repeat("x", perfValueSize))
	key := func(w int) string { return fmt.Sprintf("%s%d", perfKeyPrefix, w) }

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var done, failed atomic.Int64
	stats := make([]benchStats, load.clients)
	// Each client puts every interval, its schedule shifted by its
	// share of one: together they make the rate. A client behind its
	// schedule puts at once, so a cluster that cannot keep up shows as
	// a lower rate rather than as idle clients.
	interval := time.Duration(float64(time.Second) * float64(load.clients) / float64(load.rate))
	var wg sync.WaitGroup
	start := time.Now()
	for w := range load.clients {
		stats[w] = benchStats{hist: newHist(), errors: map[string]int64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := conns[w%len(conns)]
			st := &stats[w]
			next := start.Add(interval * time.Duration(w) / time.Duration(load.clients))
			timer := time.NewTimer(0)
			defer timer.Stop()
			for {
				if wait := time.Until(next); wait > 0 {
					timer.Reset(wait)
					select {
					case <-timer.C:
					case <-runCtx.Done():
						return
					}
				}
				if runCtx.Err() != nil {
					return
				}
				next = next.Add(interval)
				octx, ocancel := context.WithTimeout(runCtx, g.timeout)
				t0 := time.Now()
				_, err := c.Put(octx, key(w), value)
				lat := time.Since(t0)
				ocancel()
				if err != nil {
					if runCtx.Err() != nil {
						return // the run ended while the put was waiting
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
	progress(finished, stderr, "check perf", start, &done, &failed)
	elapsed := min(time.Since(start), cfg.duration)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check perf interrupted: %w", err)
	}
	cleanupPerfKeys(ctx, g, conns[0], load.clients, key, stderr)

	hist := newHist()
	byKind := map[string]int64{}
	for _, st := range stats {
		hist.Merge(st.hist)
		for k, n := range st.errors {
			byKind[k] += n
		}
	}
	ops, errs := done.Load(), failed.Load()
	rate := float64(ops) / elapsed.Seconds()
	p99 := time.Duration(hist.ValueAtQuantile(99)) * time.Microsecond
	slowest := time.Duration(hist.Max()) * time.Microsecond
	minRate := perfMinRateFraction * float64(load.rate)
	checks := []perfCheck{
		{"throughput", fmt.Sprintf("%.0f puts/s", rate), fmt.Sprintf("at least %.0f puts/s (90%% of %d)", minRate, load.rate), rate >= minRate},
		{"p99 latency", p99.String(), "at most " + cfg.p99.String(), ops > 0 && p99 <= cfg.p99},
		{"slowest put", slowest.String(), "at most " + perfMaxSlowest.String(), ops > 0 && slowest <= perfMaxSlowest},
		{"errors", fmt.Sprint(errs) + formatKinds(byKind), "none", errs == 0},
	}
	pass := true
	list := make([]map[string]any, len(checks))
	var failedChecks []string
	for i, c := range checks {
		pass = pass && c.pass
		list[i] = map[string]any{"check": c.name, "pass": c.pass, "value": c.value, "limit": c.limit}
		if !c.pass {
			failedChecks = append(failedChecks, c.name)
		}
	}
	obj := map[string]any{
		"pass": pass, "load": load.name, "clients": load.clients, "rate": load.rate, "seconds": elapsed.Seconds(),
		"ops": ops, "errors": errs, "errors_by_kind": byKind, "puts_per_sec": rate, "latency_us": latencyJSON(hist),
		"checks": list,
	}
	err := g.emit(cmd, obj, func(w io.Writer) {
		fmt.Fprintf(w, "load %s: %d clients, %d puts/s of %d bytes for %s\n", load.name, load.clients, load.rate, perfValueSize, cfg.duration)
		fmt.Fprintf(w, "latency: %s\n", latencyText(hist))
		for _, c := range checks {
			verdict := "PASS"
			if !c.pass {
				verdict = "FAIL"
			}
			fmt.Fprintf(w, "%s: %s %s (%s)\n", verdict, c.name, c.value, c.limit)
		}
		if pass {
			fmt.Fprintln(w, "PASS")
		} else {
			fmt.Fprintln(w, "FAIL")
		}
	})
	if err != nil {
		return err
	}
	if !pass {
		return &reportedError{fmt.Errorf("check perf failed: %s (see docs/OPERATIONS.md)", strings.Join(failedChecks, ", "))}
	}
	return nil
}

// cleanupPerfKeys deletes the keys check perf wrote; a failure is
// reported on stderr and does not change the verdict.
func cleanupPerfKeys(ctx context.Context, g *globals, c *client.Client, n int, key func(int) string, stderr io.Writer) {
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 32)
	for w := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, g.timeout)
			defer cancel()
			if _, _, err := c.Delete(dctx, key(w)); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		fmt.Fprintf(stderr, "check perf: %d of the keys under %s could not be deleted; delete them with raftctl del\n", n, perfKeyPrefix)
	}
}
