package raftnode_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// The files under deploy/ that name the node's metrics.
var deployFiles = []string{
	"../deploy/prometheus/capraft-alerts.yml",
	"../deploy/grafana/capraft-dashboard.json",
}

var metricName = regexp.MustCompile(`\bcapraft_[a-z0-9_]+`)

// Every metric the alerting rules and the dashboard use is in a scrape of
// a running cluster, so that renaming one without them fails here rather
// than leave a silent alert or an empty graph.
func TestEveryMetricTheDashboardAndAlertsUseIsScraped(t *testing.T) {
	c := newTestCluster(t, 3, withMetrics)
	lead := c.leader()
	ctx := ctxT(t)
	k := c.client(lead)
	if err := k.open(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := k.put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.nodes[lead].Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	// The leader's view of its followers, and a follower's of itself.
	families := map[string]*dto.MetricFamily{}
	for _, id := range []uint64{lead, lead%3 + 1} {
		n := c.nodes[id]
		n.ObserveServer(c.srvs[id])
		for name, f := range scrapeMetrics(t, serveOps(t, n)) {
			families[name] = f
		}
	}

	for _, path := range deployFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		names := metricName.FindAllString(string(b), -1)
		if len(names) == 0 {
			t.Errorf("%s names no capraft metric", path)
		}
		slices.Sort(names)
		for _, name := range slices.Compact(names) {
			if !scraped(families, name) {
				t.Errorf("%s uses %s, which no scrape has", filepath.Base(path), name)
			}
		}
	}
}

// scraped reports whether name is a family of the scrape, or a series
// of one of its histograms (_bucket, _count, _sum).
func scraped(families map[string]*dto.MetricFamily, name string) bool {
	if families[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f := families[base]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
	}
	return false
}
