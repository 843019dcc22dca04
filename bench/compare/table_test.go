package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func result(system string, rep int, workload string, clients, conns int, opsPerSec float64, p50, p99 int64, rssMiB int64) Result {
	return Result{
		System: system, Rep: rep, Workload: workload, Clients: clients, Conns: conns, ValueSize: 256, Keys: 10000,
		Seconds: 5, Ops: int64(opsPerSec * 5), OpsPerSec: opsPerSec, Latency: Latency{P50: p50, P99: p99},
		ServerRSS: rssMiB << 20, ServerCPU: opsPerSec * 5 * 300e-6,
	}
}

func TestTableRatiosArePerPairMedianAndRange(t *testing.T) {
	results := []Result{
		// Rep 1 runs capraft first, rep 2 etcd first: pairing is by rep,
		// not by order.
		result("capraft", 1, "put", 16, 16, 2000, 1000, 4000, 100),
		result("etcd", 1, "put", 16, 16, 1000, 2000, 8000, 200),
		result("capraft", 1, "get linearizable", 16, 16, 9000, 500, 900, 100),
		result("etcd", 1, "get linearizable", 16, 16, 3000, 1500, 2700, 100),
		result("etcd", 2, "put", 16, 16, 1000, 2000, 8000, 200),
		result("capraft", 2, "put", 16, 16, 3000, 500, 2000, 100),
		// An etcd run whose capraft partner failed.
		result("etcd", 2, "get linearizable", 16, 16, 3000, 1500, 2700, 100),
	}
	var b bytes.Buffer
	WriteTable(&b, results, nil)
	out := b.String()
	lines := strings.Split(out, "\n")
	wantPut := "| put | 16 / 16 | 2500 vs 1000 | **2.50 (2.00–3.00)** | 0.38 (0.25–0.50); 0.75 vs 2.00 | 0.38 (0.25–0.50); 3.00 vs 8.00 | 0.50 (0.50–0.50); 100 vs 200 | 300 vs 300 |"
	wantGet := "| get linearizable | 16 / 16 | 9000 vs 3000 | **3.00** | 0.33; 0.50 vs 1.50 | 0.33; 0.90 vs 2.70 | 1.00; 100 vs 100 | 300 vs 300 |"
	if len(lines) < 4 || lines[2] != wantPut || lines[3] != wantGet {
		t.Fatalf("table:\n%s\nwant rows\n%s\n%s", out, wantPut, wantGet)
	}
	if !strings.Contains(out, "- get linearizable 16/16 rep 2, etcd: no partner run, left out of the table") {
		t.Fatalf("the unpaired run is not noted:\n%s", out)
	}
}

func TestTableNotesErrorsAndMixedLatencies(t *testing.T) {
	c := result("capraft", 1, "mixed 0.9 linearizable", 64, 16, 2000, 1000, 4000, 100)
	c.ReadLatency, c.WriteLatency = &Latency{P50: 800, P99: 3000}, &Latency{P50: 2500, P99: 6000}
	c.Errors, c.FirstError = 2, "deadline exceeded"
	e := result("etcd", 1, "mixed 0.9 linearizable", 64, 16, 1000, 2000, 8000, 200)
	e.ReadLatency, e.WriteLatency = &Latency{P50: 1900}, &Latency{P50: 2100}
	var b bytes.Buffer
	WriteTable(&b, []Result{c, e}, nil)
	out := b.String()
	for _, want := range []string{
		"- mixed 0.9 linearizable 64/16 rep 1, capraft: reads p50 0.80 / p99 3.00 ms, writes p50 2.50 / p99 6.00 ms",
		"- mixed 0.9 linearizable 64/16 rep 1, etcd: reads p50 1.90",
		"- mixed 0.9 linearizable 64/16 rep 1, capraft: 2 errors (first: deadline exceeded)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestReadResultsSkipsNonJSONLines(t *testing.T) {
	in := "== a note\n\n" + `{"system":"etcd","rep":2,"workload":"put","ops_per_sec":12.5}` + "\n"
	rs, _, err := ReadResults(strings.NewReader(in))
	if err != nil || len(rs) != 1 || rs[0].System != "etcd" || rs[0].Rep != 2 || rs[0].OpsPerSec != 12.5 {
		t.Fatalf("got %+v, %v", rs, err)
	}
	if _, _, err := ReadResults(strings.NewReader("{not json\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a broken JSON line: %v, want an error naming line 1", err)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1}, 2}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestFloorLinesAreReadApartAndTheOneClientRowsAreSetAgainstThem(t *testing.T) {
	in := `{"system":"floor","samples":100,"fsync_p50_us":400,"rtt_p50_us":50,"put_floor_us":500,"get_floor_us":150}
{"system":"floor","samples":100,"fsync_p50_us":600,"rtt_p50_us":50,"put_floor_us":700,"get_floor_us":150}
`
	results, floors, err := ReadResults(strings.NewReader(in))
	if err != nil || len(results) != 0 || len(floors) != 2 {
		t.Fatalf("ReadResults: %d results, %d floors, err %v; want 0, 2, nil", len(results), len(floors), err)
	}
	results = []Result{
		result("capraft", 1, "put", 1, 1, 1000, 900, 2000, 50),
		result("etcd", 1, "put", 1, 1, 800, 1200, 2500, 50),
		result("capraft", 1, "get linearizable", 1, 1, 5000, 300, 600, 50),
		result("etcd", 1, "get linearizable", 1, 1, 3000, 450, 900, 50),
	}
	var b bytes.Buffer
	WriteTable(&b, results, floors)
	out := b.String()
	// Median fsync 500 µs, round trip 50 µs: a put's floor 0.60 ms, a
	// get's 0.15 ms.
	for _, want := range []string{
		"fdatasync p50 500 µs, loopback round trip p50 50 µs; a put's floor (one write, two round trips) 0.60 ms, a linearizable get's (two round trips + 50 µs) 0.15 ms.",
		"- put 1/1 p50 against its floor: capraft 1.50×, etcd 2.00×",
		"- get linearizable 1/1 p50 against its floor: capraft 2.00×, etcd 3.00×",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("table:\n%s\nlacks %q", out, want)
		}
	}
}

func TestFloorIsMeasuredOnThisMachine(t *testing.T) {
	f, err := MeasureFloor(context.Background(), t.TempDir(), 20)
	if err != nil {
		t.Fatal(err)
	}
	if f.FsyncUS <= 0 || f.RTTUS <= 0 || f.PutUS != f.FsyncUS+2*f.RTTUS || f.GetUS != 2*f.RTTUS+getAllowanceUS {
		t.Fatalf("floor %+v: want positive figures, put = fsync + 2 rtt, get = 2 rtt + %d", f, getAllowanceUS)
	}
}
