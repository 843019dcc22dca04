package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
)

// gather returns the series of family name by their labels
// ("peer=2,lane=data"; "" without labels), with their values (a
// histogram's: its count).
func gather(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	fams, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(labels, ",")] = value(s)
		}
	}
	return out
}

func value(s *dto.Metric) float64 {
	switch {
	case s.Counter != nil:
		return s.Counter.GetValue()
	case s.Gauge != nil:
		return s.Gauge.GetValue()
	case s.Histogram != nil:
		return float64(s.Histogram.GetSampleCount())
	}
	return 0
}

func same(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A scrape reports the counters whatever the loop does; the gauges that
// need the loop are left out when it does not answer, rather than
// reported stale or as zero.
func TestScrapeOfABusyLoopLeavesOutOnlyWhatNeedsIt(t *testing.T) {
	src := nopSources()
	src.Counters = func() driver.Counters { return driver.Counters{Proposed: 7, Committed: 4, Failed: 1, LeaderChanges: 2} }
	src.Status = func(context.Context) (driver.Status, error) { return driver.Status{}, context.DeadlineExceeded }
	m := New(src)
	for _, name := range []string{"capraft_term", "capraft_commit_index", "capraft_follower_lag_entries"} {
		if got := gather(t, m, name); len(got) != 0 {
			t.Errorf("%s with a busy loop: %v, want no series", name, got)
		}
	}
	if got := gather(t, m, "capraft_proposals_pending"); !same(got, map[string]float64{"": 2}) {
		t.Errorf("capraft_proposals_pending: %v, want 2", got)
	}
	if got := gather(t, m, "capraft_leader_changes_total"); !same(got, map[string]float64{"": 2}) {
		t.Errorf("capraft_leader_changes_total: %v, want 2", got)
	}
}

// The leader reports each follower once, however many lists of its
// configuration name it, and never itself.
func TestLeaderReportsEachFollowerOnce(t *testing.T) {
	src := nopSources()
	src.Status = func(context.Context) (driver.Status, error) {
		var st driver.Status
		st.LastIndex = 100
		st.Config = raft.ConfState{Voters: []uint64{1, 2, 3}, VotersOutgoing: []uint64{1, 2}, Learners: []uint64{4}}
		st.Progress = map[uint64]raft.ProgressStatus{1: {Match: 100}, 2: {Match: 90, RecentActive: true}, 3: {Match: 0}, 4: {Match: 100}}
		return st, nil
	}
	src.Peer = func(id uint64) transport.PeerStats { return transport.PeerStats{Known: id != 4} }
	m := New(src)
	if got, want := gather(t, m, "capraft_follower_lag_entries"), map[string]float64{"peer=2": 10, "peer=3": 100, "peer=4": 0}; !same(got, want) {
		t.Errorf("capraft_follower_lag_entries: %v, want %v", got, want)
	}
	if got, want := gather(t, m, "capraft_peer_connected"), map[string]float64{"peer=2": 0, "peer=3": 0}; !same(got, want) {
		t.Errorf("capraft_peer_connected: %v, want %v (peer 4 unknown to the transport)", got, want)
	}
}

// Observations land in their series, and the vector histograms exist
// before their first event.
func TestObserversFeedTheirHistograms(t *testing.T) {
	m := New(nopSources())
	if got := gather(t, m, "capraft_snapshot_send_duration_seconds"); !same(got, map[string]float64{"result=ok": 0, "result=error": 0}) {
		t.Fatalf("snapshot send series before any transfer: %v, want ok and error at 0", got)
	}
	m.SnapshotSent(2, 0, errors.New("refused"))
	m.Request("put", "ok", 0)
	m.Request("put", "outcomeUnknown", 0)
	m.Request("put", "ok", 0)
	m.RoundTrip(2, transport.LaneControl, 0)
	if got := gather(t, m, "capraft_snapshot_send_duration_seconds"); got["result=error"] != 1 {
		t.Errorf("snapshot sends: %v, want one error", got)
	}
	got := gather(t, m, "capraft_client_request_duration_seconds")
	if len(got) != 8 || got["code=ok,method=put"] != 2 || got["code=outcomeUnknown,method=put"] != 1 {
		t.Errorf("client requests: %v, want 2 puts ok, 1 outcomeUnknown, and the other methods' ok at 0", got)
	}
	if got, want := gather(t, m, "capraft_peer_round_trip_seconds"), map[string]float64{"lane=control,peer=2": 1}; !same(got, want) {
		t.Errorf("round trips: %v, want %v", got, want)
	}
}
