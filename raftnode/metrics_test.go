package raftnode_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/capraft/capraft/e2e/faultproxy"
	"github.com/capraft/capraft/internal/opshttp"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc/rpctest"
)

// serveOps serves n's operations endpoints on loopback and returns their
// base URL.
func serveOps(t *testing.T, n *raftnode.Node) string {
	t.Helper()
	s, err := opshttp.Listen(opshttp.Config{Addr: "127.0.0.1:0", Gatherer: n.Metrics(), Ready: n.Ready})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return "http://" + s.Addr().String()
}

func httpGet(t *testing.T, url string) (int, string) {
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

// scrape is one scrape of /metrics, parsed.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	code, body := httpGet(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include labels (name=value pairs), and whether there is one. A
// histogram's value is its count.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

func (s scrape) must(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("no series %s%v in the scrape", name, labels)
	}
	return v
}

func withMetrics(cfg *raftnode.Config) { cfg.Metrics = true }

// A scrape after known operations shows them: ten puts and a get
// answered ok by the node the client talks to, the leader's proposals
// committed and messages sent to each follower, fsyncs timed, every
// node agreeing on a leader and applying what it committed.
func TestScrapeAfterKnownOperationsShowsTheirCounts(t *testing.T) {
	c := newTestCluster(t, 3, withMetrics)
	lead := c.leader()
	bases := map[uint64]string{}
	for id, n := range c.nodes {
		n.ObserveServer(c.srvs[id])
		bases[id] = serveOps(t, n)
	}
	ctx := ctxT(t)
	k := c.client(lead)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	const puts = 10
	for i := range puts {
		if _, err := k.put(ctx, fmt.Sprintf("k%d", i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := k.get(ctx, "k0", false); err != nil {
		t.Fatal(err)
	}

	s := scrapeMetrics(t, bases[lead])
	if got := s.must(t, "capraft_client_request_duration_seconds", "method", "put", "code", "ok"); got != puts {
		t.Errorf("leader: %v puts answered ok, want %d", got, puts)
	}
	if got := s.must(t, "capraft_client_request_duration_seconds", "method", "get", "code", "ok"); got != 1 {
		t.Errorf("leader: %v gets answered ok, want 1", got)
	}
	// The session's opening and the puts, at least (sessions may also
	// be kept alive or expired through the log).
	if got := s.must(t, "capraft_proposals_committed_total"); got < puts+1 {
		t.Errorf("leader: %v proposals committed, want at least %d", got, puts+1)
	}
	if got := s.must(t, "capraft_proposals_failed_total"); got != 0 {
		t.Errorf("leader: %v proposals failed, want 0", got)
	}
	if got := s.must(t, "capraft_sessions"); got != 1 {
		t.Errorf("leader: %v sessions, want 1", got)
	}
	if got := s.must(t, "capraft_is_leader"); got != 1 {
		t.Errorf("leader: capraft_is_leader %v", got)
	}
	if got := s.must(t, "capraft_wal_fsync_duration_seconds"); got < 1 {
		t.Errorf("leader: %v fsyncs timed, want some", got)
	}
	if got := s.must(t, "capraft_apply_duration_seconds"); got < 1 {
		t.Errorf("leader: %v apply batches timed, want some", got)
	}
	// Without security every connection may become a peer's: count
	// them all (the followers' lanes and the test's client).
	conns := 0.0
	for _, kind := range []string{"client", "peer", "probation"} {
		conns += s.must(t, "capraft_connections", "kind", kind)
	}
	if conns < 1 {
		t.Errorf("leader: %v connections, want the followers' and the test's", conns)
	}
	if got := s.must(t, "capraft_data_dir_free_bytes"); got <= 0 {
		t.Errorf("leader: %v bytes free in the data directory", got)
	}
	for id := range c.nodes {
		if id == lead {
			continue
		}
		peer := fmt.Sprint(id)
		if got := s.must(t, "capraft_peer_sent_messages_total", "peer", peer); got < puts {
			t.Errorf("leader: %v messages sent to %s, want at least %d", got, peer, puts)
		}
		if got := s.must(t, "capraft_peer_round_trip_seconds", "peer", peer, "lane", "data"); got < 1 {
			t.Errorf("leader: %v round trips to %s timed, want some", got, peer)
		}
		s.must(t, "capraft_follower_lag_entries", "peer", peer)
	}
	for id, base := range bases {
		rpctest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d: a leader, everything committed applied", id), func() bool {
			s := scrapeMetrics(t, base)
			commit, _ := s.value("capraft_commit_index")
			applied, _ := s.value("capraft_applied_index")
			hasLeader, _ := s.value("capraft_has_leader")
			changes, _ := s.value("capraft_leader_changes_total")
			return hasLeader == 1 && changes >= 1 && commit >= puts && applied == commit
		})
	}
}

// newMetricsMeshCluster is newMeshCluster with metrics on.
func newMetricsMeshCluster(t *testing.T, size int) (*testCluster, *faultproxy.Mesh) {
	var mesh *faultproxy.Mesh
	c := newTestCluster(t, size, func(cfg *raftnode.Config) {
		cfg.Metrics = true
		if mesh == nil {
			var err error
			if mesh, err = faultproxy.NewMesh(cfg.Peers, 1); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { mesh.Close() })
		}
		peers := make(map[uint64]string, len(cfg.Peers))
		for id, addr := range cfg.Peers {
			peers[id] = addr
			if id != cfg.ID {
				peers[id] = mesh.Addr(cfg.ID, id)
			}
		}
		cfg.Peers = peers
	})
	return c, mesh
}

// /readyz says not ready, with the reason, on a node cut off from the
// others (it loses its leader), and ready again once the network heals;
// /healthz stays ok throughout.
func TestReadyzGoesUnreadyOnANodeCutOffAndBackAfterHealing(t *testing.T) {
	c, mesh := newMetricsMeshCluster(t, 3)
	lead := c.leader()
	cut := lead%3 + 1
	base := serveOps(t, c.nodes[cut])
	rpctest.Eventually(t, 10*time.Second, "the follower ready", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusOK
	})

	mesh.Isolate(cut)
	var body string
	rpctest.Eventually(t, 10*time.Second, "the cut-off node unready", func() bool {
		var code int
		code, body = httpGet(t, base+"/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "no leader known") {
		t.Errorf("GET /readyz on the cut-off node: %q, want the reason (no leader known)", body)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz on the cut-off node: %d, want 200", code)
	}
	if v := scrapeMetrics(t, base).must(t, "capraft_has_leader"); v != 0 {
		t.Errorf("cut-off node: capraft_has_leader %v, want 0", v)
	}

	mesh.Heal()
	rpctest.Eventually(t, 20*time.Second, "the healed node ready again", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == http.StatusOK
	})
}
