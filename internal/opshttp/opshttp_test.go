package opshttp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capraft/capraft/internal/opshttp"
)

func serve(t *testing.T, cfg opshttp.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := opshttp.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestMetricsServesTheGatherersFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "capraft_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	base := serve(t, opshttp.Config{Gatherer: reg})
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "capraft_test_things_total 3") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
}

func TestReadyzFollowsTheCheckAndHealthzDoesNot(t *testing.T) {
	var notReady atomic.Pointer[error]
	base := serve(t, opshttp.Config{
		Gatherer: prometheus.NewRegistry(),
		Ready: func(context.Context) error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("ready: GET /readyz: %d %q", code, body)
	}
	reason := errors.New("no leader known")
	notReady.Store(&reason)
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "no leader known") {
		t.Fatalf("not ready: GET /readyz: %d %q, want 503 with the reason", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz of a live but unready node: %d, want 200", code)
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	off := serve(t, opshttp.Config{Gatherer: prometheus.NewRegistry()})
	if code, _ := get(t, off+"/debug/pprof/"); code != http.StatusNotFound {
		t.Fatalf("pprof off: GET /debug/pprof/: %d, want 404", code)
	}
	on := serve(t, opshttp.Config{Gatherer: prometheus.NewRegistry(), Pprof: true})
	if code, body := get(t, on+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof on: GET /debug/pprof/: %d", code)
	}
}
