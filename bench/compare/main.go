// Command compare drives capraft and etcd with the same workload and
// compares them. It lives in a module of its own so that capraft itself
// never depends on etcd's client.
//
//	compare run --system capraft|etcd --endpoints H:P,... --op put|get|mixed [flags]
//	    one run; prints its Result as one JSON line on stdout
//	compare wait --system capraft|etcd --endpoints H:P,... [--timeout 30s]
//	    returns once a put succeeds (the cluster has a leader and serves)
//	compare floor --dir DIR [--samples N]
//	    the machine's floor for a put and a get (fdatasync and loopback
//	    round trip p50), as one JSON line on stdout
//	compare table [results.jsonl]
//	    the markdown table of ratios capraft/etcd from run's (and
//	    floor's) JSON lines
//
// run.sh beside this file starts fresh clusters of both systems, runs
// them back to back and prints the table; see README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/capraft/capraft/internal/procstat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: "+err.Error())
		os.Exit(1)
	}
}

const usage = `usage:
  compare run --system capraft|etcd --endpoints H:P,... --op put|get|mixed [flags]
  compare wait --system capraft|etcd --endpoints H:P,... [--timeout 30s]
  compare floor --dir DIR [--samples N]
  compare table [results.jsonl]
run "compare run -h" for run's flags`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "run":
		return runCmd(ctx, args[1:], stdout, stderr)
	case "wait":
		return waitCmd(ctx, args[1:], stderr)
	case "table":
		return tableCmd(args[1:], stdin, stdout)
	case "floor":
		return floorCmd(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

// target is the flags that name a cluster.
type target struct {
	system    string
	endpoints string
	tokenFile string
	spread    string
}

func (t *target) register(fs *flag.FlagSet) {
	fs.StringVar(&t.system, "system", "", "capraft or etcd")
	fs.StringVar(&t.endpoints, "endpoints", "", "the cluster's client endpoints, host:port,...")
	fs.StringVar(&t.tokenFile, "token-file", "", "capraft: a file holding the token every connection logs in with (default: none)")
	fs.StringVar(&t.spread, "read-spreading", "", "capraft: on or off, the client's read spreading over the endpoints (default: the client's default)")
}

func (t *target) dial(n int) ([]Store, error) {
	if t.system != "capraft" && t.system != "etcd" {
		return nil, fmt.Errorf("--system %q: want capraft or etcd", t.system)
	}
	var eps []string
	for _, e := range strings.Split(t.endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return nil, errors.New("--endpoints: give the cluster's client endpoints, host:port,...")
	}
	var token string
	if t.tokenFile != "" {
		if t.system != "capraft" {
			return nil, errors.New("--token-file is for capraft only")
		}
		b, err := os.ReadFile(t.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if t.spread != "" && t.system != "capraft" {
		return nil, errors.New("--read-spreading is for capraft only")
	}
	return dialStores(t.system, eps, n, token, t.spread)
}

func closeStores(stores []Store) {
	for _, s := range stores {
		s.Close()
	}
}

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t target
	t.register(fs)
	w := Workload{}
	var pids string
	var rep int
	var quiet bool
	var label string
	fs.StringVar(&label, "label", "", "the system's name in the result (default --system): e.g. base, for a capraft built from another commit (run.sh --baseline)")
	fs.StringVar(&w.Op, "op", "put", "put, get or mixed")
	fs.Float64Var(&w.ReadFrac, "read-frac", 0.9, "mixed: the fraction of operations that are gets")
	fs.BoolVar(&w.Serializable, "serializable", false, "gets are serializable (possibly stale, served by any node) instead of linearizable")
	fs.IntVar(&w.Clients, "clients", 16, "goroutines issuing operations back to back")
	fs.IntVar(&w.Conns, "conns", 1, "independent client connections the goroutines share (each one client.New or clientv3.New)")
	fs.IntVar(&w.ValueSize, "value-size", 256, "bytes per value")
	fs.IntVar(&w.Keys, "keys", 10000, "distinct keys (bench/0 ... bench/K-1); get and mixed write each once first")
	fs.DurationVar(&w.Warmup, "warmup", time.Second, "run this long before measuring")
	fs.DurationVar(&w.Duration, "duration", 5*time.Second, "how long to measure")
	fs.DurationVar(&w.OpTimeout, "op-timeout", 10*time.Second, "bound on one operation")
	fs.Uint64Var(&w.Seed, "seed", 1, "seed for the key and operation sequence")
	fs.StringVar(&pids, "pids", "", "the server processes' pids, comma-separated: their CPU over the window and their memory at its end are reported")
	fs.IntVar(&rep, "rep", 1, "repetition number, recorded for the table (a row's capraft and etcd runs of one rep pair up)")
	fs.BoolVar(&quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("run takes no arguments, got %q", fs.Args())
	}
	if err := w.Validate(); err != nil {
		return err
	}
	var pidList []int
	if pids != "" {
		var err error
		if pidList, err = procstat.ParsePids(pids); err != nil {
			return fmt.Errorf("--pids: %w", err)
		}
	}
	if os.Getenv("GOGC") == "" {
		// The generator allocates per operation and shares the cores with
		// the servers; collecting less often takes less from them (the
		// same setting as raftctl bench, for both systems alike).
		debug.SetGCPercent(400)
	}
	stores, err := t.dial(w.Conns)
	if err != nil {
		return err
	}
	defer closeStores(stores)
	progress := stderr
	if quiet {
		progress = nil
	}
	res, err := Run(ctx, w, stores, pidList, progress)
	if err != nil {
		return err
	}
	res.System, res.Rep = t.system, rep
	if label != "" {
		res.System = label
	}
	fmt.Fprintf(stderr, "%s %s %d/%d: %.0f ops/s, p50 %.2f ms, p99 %.2f ms, %d errors, server CPU %.2fs, server RSS %.0f MiB\n",
		res.System, res.Workload, res.Clients, res.Conns, res.OpsPerSec,
		float64(res.Latency.P50)/1000, float64(res.Latency.P99)/1000, res.Errors, res.ServerCPU, float64(res.ServerRSS)/(1<<20))
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	if res.Ops == 0 {
		return fmt.Errorf("no operation succeeded (%d errors; first: %s)", res.Errors, res.FirstError)
	}
	return nil
}

func waitCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t target
	t.register(fs)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	stores, err := t.dial(1)
	if err != nil {
		return err
	}
	defer closeStores(stores)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
		last = stores[0].Put(octx, "compare/ready", []byte("1"))
		ocancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s at %s did not take a put within %v: %w", t.system, t.endpoints, *timeout, last)
}

func tableCmd(args []string, stdin io.Reader, stdout io.Writer) error {
	in := stdin
	switch len(args) {
	case 0:
	case 1:
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	default:
		return errors.New("table takes at most one file (default: standard input)")
	}
	results, floors, err := ReadResults(in)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		return errors.New("no results to tabulate")
	}
	WriteTable(stdout, results, floors)
	return nil
}

func floorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", os.TempDir(), "a directory on the disk the nodes' data is on (the durable writes are timed there)")
	samples := fs.Int("samples", 1000, "writes and round trips to time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	f, err := MeasureFloor(ctx, *dir, *samples)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "floor: fdatasync p50 %.0f µs, loopback round trip p50 %.0f µs: put %.2f ms, linearizable get %.2f ms\n",
		f.FsyncUS, f.RTTUS, f.PutUS/1000, f.GetUS/1000)
	if err := json.NewEncoder(stdout).Encode(f); err != nil {
		return fmt.Errorf("write floor: %w", err)
	}
	return nil
}
