package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ReadResults reads the JSON lines `compare run` and `compare floor`
// printed (blank lines and lines that are not JSON objects, such as a
// shell's notes, are skipped).
func ReadResults(r io.Reader) ([]Result, []Floor, error) {
	var out []Result
	var floors []Floor
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, nil, fmt.Errorf("line %d: %w", n, err)
		}
		if res.System == "floor" {
			var f Floor
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				return nil, nil, fmt.Errorf("line %d: %w", n, err)
			}
			floors = append(floors, f)
			continue
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read results: %w", err)
	}
	return out, floors, nil
}

// rowKey identifies a table row: runs with the same key and rep are a
// capraft/etcd pair.
type rowKey struct {
	workload        string
	clients, conns  int
	valueSize, keys int
}

// pair is one capraft run and the etcd run of the same row and rep.
type pair struct{ capraft, etcd Result }

// row is every pair of one row, in rep order.
type row struct {
	key      rowKey
	pairs    []pair
	unpaired []Result
}

// groupRows pairs results by row and rep; rows keep the order in which
// they first appear.
func groupRows(results []Result) []*row {
	var rows []*row
	byKey := map[rowKey]*row{}
	type half struct {
		c, e *Result
	}
	halves := map[rowKey]map[int]*half{}
	for i := range results {
		r := &results[i]
		k := rowKey{r.Workload, r.Clients, r.Conns, r.ValueSize, r.Keys}
		if byKey[k] == nil {
			byKey[k] = &row{key: k}
			rows = append(rows, byKey[k])
			halves[k] = map[int]*half{}
		}
		h := halves[k][r.Rep]
		if h == nil {
			h = &half{}
			halves[k][r.Rep] = h
		}
		switch {
		case r.System == "capraft" && h.c == nil:
			h.c = r
		case r.System != "capraft" && h.e == nil:
			h.e = r
		default:
			byKey[k].unpaired = append(byKey[k].unpaired, *r)
		}
	}
	for _, rw := range rows {
		reps := make([]int, 0, len(halves[rw.key]))
		for rep := range halves[rw.key] {
			reps = append(reps, rep)
		}
		sort.Ints(reps)
		for _, rep := range reps {
			h := halves[rw.key][rep]
			switch {
			case h.c != nil && h.e != nil:
				rw.pairs = append(rw.pairs, pair{*h.c, *h.e})
			case h.c != nil:
				rw.unpaired = append(rw.unpaired, *h.c)
			case h.e != nil:
				rw.unpaired = append(rw.unpaired, *h.e)
			}
		}
	}
	return rows
}

// median returns the median of xs (the mean of the middle two for an even
// count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio summarizes per-pair ratios capraft/etcd of f: the median, and
// the range when there is more than one pair.
func ratio(pairs []pair, f func(Result) float64) string {
	rs := make([]float64, 0, len(pairs))
	for _, p := range pairs {
		if e := f(p.etcd); e > 0 {
			rs = append(rs, f(p.capraft)/e)
		}
	}
	if len(rs) == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%.2f", median(rs))
	if len(rs) > 1 {
		lo, hi := rs[0], rs[0]
		for _, r := range rs {
			lo, hi = min(lo, r), max(hi, r)
		}
		s += fmt.Sprintf(" (%.2f–%.2f)", lo, hi)
	}
	return s
}

// both is the median of f over each system's runs: "capraft vs etcd".
func both(pairs []pair, f func(Result) float64, format string) string {
	var c, e []float64
	for _, p := range pairs {
		c, e = append(c, f(p.capraft)), append(e, f(p.etcd))
	}
	return fmt.Sprintf(format+" vs "+format, median(c), median(e))
}

func opsPerSec(r Result) float64 { return r.OpsPerSec }
func p50ms(r Result) float64     { return float64(r.Latency.P50) / 1000 }
func p99ms(r Result) float64     { return float64(r.Latency.P99) / 1000 }
func rssMiB(r Result) float64    { return float64(r.ServerRSS) / (1 << 20) }

// cpuPerOp is the servers' CPU per operation, in microseconds.
func cpuPerOp(r Result) float64 {
	if r.Ops == 0 {
		return 0
	}
	return r.ServerCPU / float64(r.Ops) * 1e6
}

// WriteTable prints the markdown comparison of results: one line per
// row, ratios capraft/etcd per back-to-back pair (median, and the range
// over pairs), each system's medians beside them; then the machine's
// floor, if measured, and the one-client rows against it; then the mixed
// rows' read and write latencies, and every run that had errors or no
// partner.
//
// The other system is etcd, or whatever else the results name (run.sh
// --baseline labels a capraft built from another commit "base").
func WriteTable(w io.Writer, results []Result, floors []Floor) {
	rows := groupRows(results)
	other := "etcd"
	for _, r := range results {
		if r.System != "capraft" {
			other = r.System
			break
		}
	}
	fmt.Fprintln(w, "| workload | clients / conns | ops/s capraft vs "+other+" | ops/s ratio | p50 ratio; ms | p99 ratio; ms | server RSS ratio; MiB | server CPU µs/op |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, rw := range rows {
		if len(rw.pairs) == 0 {
			continue
		}
		ps := rw.pairs
		fmt.Fprintf(w, "| %s | %d / %d | %s | **%s** | %s; %s | %s; %s | %s; %s | %s |\n",
			rw.key.workload, rw.key.clients, rw.key.conns,
			both(ps, opsPerSec, "%.0f"), ratio(ps, opsPerSec),
			ratio(ps, p50ms), both(ps, p50ms, "%.2f"),
			ratio(ps, p99ms), both(ps, p99ms, "%.2f"),
			ratio(ps, rssMiB), both(ps, rssMiB, "%.0f"),
			both(ps, cpuPerOp, "%.0f"))
	}
	writeFloor(w, rows, floors, other)
	var notes []string
	for _, rw := range rows {
		for _, p := range rw.pairs {
			for _, r := range []Result{p.capraft, p.etcd} {
				if r.ReadLatency != nil && r.WriteLatency != nil {
					notes = append(notes, fmt.Sprintf("%s %d/%d rep %d, %s: reads p50 %.2f / p99 %.2f ms, writes p50 %.2f / p99 %.2f ms",
						rw.key.workload, rw.key.clients, rw.key.conns, r.Rep, r.System,
						float64(r.ReadLatency.P50)/1000, float64(r.ReadLatency.P99)/1000,
						float64(r.WriteLatency.P50)/1000, float64(r.WriteLatency.P99)/1000))
				}
				if r.Errors > 0 {
					notes = append(notes, fmt.Sprintf("%s %d/%d rep %d, %s: %d errors (first: %s)",
						rw.key.workload, rw.key.clients, rw.key.conns, r.Rep, r.System, r.Errors, r.FirstError))
				}
			}
		}
		for _, r := range rw.unpaired {
			notes = append(notes, fmt.Sprintf("%s %d/%d rep %d, %s: no partner run, left out of the table",
				rw.key.workload, rw.key.clients, rw.key.conns, r.Rep, r.System))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, "- "+n)
		}
	}
}

// writeFloor prints the median floor of the run and how far the
// one-client put and linearizable get rows are above it (issue 18's
// goals: a put's p50 at most 1.5 times its floor, a get's at its floor).
func writeFloor(w io.Writer, rows []*row, floors []Floor, other string) {
	if len(floors) == 0 {
		return
	}
	pick := func(f func(Floor) float64) float64 {
		xs := make([]float64, len(floors))
		for i, fl := range floors {
			xs[i] = f(fl)
		}
		return median(xs)
	}
	fsync := pick(func(f Floor) float64 { return f.FsyncUS })
	rtt := pick(func(f Floor) float64 { return f.RTTUS })
	put, get := fsync+2*rtt, 2*rtt+getAllowanceUS
	fmt.Fprintf(w, "\nFloor (median of %d measurements in this run, %d samples each): 4 KiB write + fdatasync p50 %.0f µs, loopback round trip p50 %.0f µs; "+
		"a put's floor (one write, two round trips) %.2f ms, a linearizable get's (two round trips + 50 µs) %.2f ms.\n",
		len(floors), floors[0].Samples, fsync, rtt, put/1000, get/1000)
	for _, rw := range rows {
		if rw.key.clients != 1 || rw.key.conns != 1 || len(rw.pairs) == 0 {
			continue
		}
		var floor float64
		switch rw.key.workload {
		case "put":
			floor = put
		case "get linearizable":
			floor = get
		default:
			continue
		}
		var cs, es []float64
		for _, p := range rw.pairs {
			cs = append(cs, float64(p.capraft.Latency.P50))
			es = append(es, float64(p.etcd.Latency.P50))
		}
		fmt.Fprintf(w, "- %s 1/1 p50 against its floor: capraft %.2f×, %s %.2f×\n", rw.key.workload, median(cs)/floor, other, median(es)/floor)
	}
}
