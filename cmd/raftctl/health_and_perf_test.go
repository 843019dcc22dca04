package main_test

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthReport is raftctl endpoint health -o json.
type healthReport struct {
	Healthy   bool `json:"healthy"`
	Endpoints []struct {
		Endpoint string `json:"endpoint"`
		Healthy  bool   `json:"healthy"`
		ID       uint64 `json:"id"`
		Leader   uint64 `json:"leader"`
		Lag      uint64 `json:"lag"`
		Error    string `json:"error"`
	} `json:"endpoints"`
}

func health(t *testing.T, endpoints string) (healthReport, string, int) {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, "--timeout", "3s", "-o", "json", "endpoint", "health")
	var r healthReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("endpoint health -o json: %v; stdout %q, stderr %q", err, out, errOut)
	}
	return r, out, code
}

// endpoint health says per endpoint whether it is reachable, knows a
// leader and keeps up; it exits 1 when any is not: an unreachable
// endpoint, then a node left without a leader when the others stop.
func TestEndpointHealthSaysWhichEndpointsAreUnhealthy(t *testing.T) {
	c := startCluster(t, 3)
	out := mustCtl(t, c.endpoints(), "endpoint", "health")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ENDPOINT") || strings.Count(out, " true ") != 3 {
		t.Fatalf("endpoint health of a healthy cluster:\n%s", out)
	}

	dead := deadEndpoint(t)
	r, raw, code := health(t, c.endpoints()+","+dead)
	if code != 1 || r.Healthy || len(r.Endpoints) != 4 {
		t.Fatalf("with an unreachable endpoint: exit %d, %s", code, raw)
	}
	for _, e := range r.Endpoints[:3] {
		if !e.Healthy || e.Leader == 0 || e.Error != "" {
			t.Errorf("cluster endpoint %s: %+v, want healthy with a leader", e.Endpoint, e)
		}
	}
	if e := r.Endpoints[3]; e.Healthy || e.Endpoint != dead || !strings.Contains(e.Error, "connection refused") {
		t.Errorf("unreachable endpoint: %+v", e)
	}

	// Alone, node 1 loses its leader (or, leading, steps down when it
	// hears from no quorum).
	for _, id := range []uint64{2, 3} {
		_ = c.nodes[id].stop(t, syscall.SIGKILL)
	}
	waitFor(t, 20*time.Second, "node 1 unhealthy for want of a leader", func() (bool, string) {
		r, raw, code := health(t, c.addrs[0])
		return code == 1 && !r.Healthy && len(r.Endpoints) == 1 && strings.Contains(r.Endpoints[0].Error, "no leader known"), raw
	})
}

// perfReport is raftctl check perf -o json.
type perfReport struct {
	Pass   bool    `json:"pass"`
	Ops    int64   `json:"ops"`
	Errors int64   `json:"errors"`
	Rate   float64 `json:"puts_per_sec"`
	Checks []struct {
		Check string `json:"check"`
		Pass  bool   `json:"pass"`
	} `json:"checks"`
}

// check perf passes a load the cluster sustains, fails one it cannot
// (naming the check that failed), reports progress, and leaves no key
// behind.
func TestCheckPerfPassesASustainableLoadAndFailsAnImpossibleOne(t *testing.T) {
	c := startCluster(t, 3)
	run := func(args ...string) (perfReport, string, int) {
		t.Helper()
		out, errOut, code := ctl(t, c.endpoints(), append([]string{"--timeout", "5s", "-o", "json", "check", "perf"}, args...)...)
		var r perfReport
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("check perf %v -o json: %v; stdout %q, stderr %q", args, err, out, errOut)
		}
		return r, errOut, code
	}

	// 40 puts/s for 2 s; a generous latency bound, as the test machine
	// may be busy.
	r, errOut, code := run("--clients", "4", "--rate", "40", "--duration", "2s", "--p99", "2s")
	if code != 0 || !r.Pass || r.Errors != 0 || r.Ops < 72 || len(r.Checks) != 4 {
		t.Fatalf("sustainable load: exit %d, %+v, stderr %q", code, r, errOut)
	}
	if !strings.Contains(errOut, "check perf:   1.0s") {
		t.Errorf("no progress line on stderr: %q", errOut)
	}

	r, errOut, code = run("--clients", "4", "--rate", "1000000", "--duration", "1s")
	if code != 1 || r.Pass || r.Checks[0].Check != "throughput" || r.Checks[0].Pass {
		t.Fatalf("impossible load: exit %d, %+v, stderr %q", code, r, errOut)
	}
	if !strings.Contains(errOut, "raftctl: check perf failed: throughput") {
		t.Errorf("stderr %q does not name the failed check", errOut)
	}

	if out := mustCtl(t, c.endpoints(), "range", "capraft-check-perf/"); strings.TrimSpace(out) != "" {
		t.Errorf("keys left behind:\n%s", out)
	}
}
