package raftnode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/metrics"
	"github.com/capraft/capraft/raftnode/internal/timeline"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/services"
	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/rpc"
)

// DefaultReadyApplyLag is Config.ReadyApplyLag's default: a node whose
// state machine is further behind its commit index than this many
// entries is not ready (Node.Ready).
const DefaultReadyApplyLag = 1000

// newMetrics creates the node's metrics when Config.Metrics asks for
// them. The sources are read at scrape time, once the node is open.
func (n *Node) newMetrics() {
	if !n.cfg.Metrics {
		return
	}
	n.metrics = metrics.New(metrics.Sources{
		NodeID:        n.cfg.ID,
		DataDir:       n.cfg.DataDir,
		Leader:        func() uint64 { return n.d.Leader() },
		Stopped:       func() bool { return n.d.Stopped() },
		Counters:      func() driver.Counters { return n.d.Counters() },
		Status:        func(ctx context.Context) (driver.Status, error) { return n.d.Status(ctx) },
		Applied:       func() uint64 { return n.kv.AppliedIndex() },
		Received:      func() driver.ReceiveStats { return n.d.ReceiveStats() },
		Storage:       func() storage.Stats { return n.store.Stats() },
		Peer:          func(id uint64) transport.PeerStats { return n.tr.Stats(id) },
		Snapshots:     func() transport.SnapshotStats { return n.tr.SnapshotStats() },
		Sessions:      n.kv.Sessions,
		EchoListeners: n.hub.NumListeners,
	})
}

// The observers handed to the node's parts: nil interfaces (not typed
// nils) when neither metrics nor a trace are on, so the parts skip them.

func (n *Node) observing() bool { return n.metrics != nil || n.trace != nil }

func (n *Node) fsyncObserver() func(time.Duration) {
	if !n.observing() {
		return nil
	}
	return observers{n.metrics, n.trace}.Fsync
}

func (n *Node) driverObserver() driver.Observer {
	if !n.observing() {
		return nil
	}
	return observers{n.metrics, n.trace}
}

func (n *Node) transportObserver() transport.Observer {
	if !n.observing() {
		return nil
	}
	return observers{n.metrics, n.trace}
}

func (n *Node) requestObserver() services.RequestObserver {
	if !n.observing() {
		return nil
	}
	return observers{n.metrics, n.trace}
}

// observers hands every observation to the metrics and the trace, where
// on.
type observers struct {
	m *metrics.Metrics
	t *timeline.Writer
}

func (o observers) Fsync(took time.Duration) {
	if o.m != nil {
		o.m.Fsync(took)
	}
	if o.t != nil {
		o.t.Fsync(took)
	}
}

func (o observers) Applied(n int, took time.Duration) {
	if o.m != nil {
		o.m.Applied(n, took)
	}
	if o.t != nil {
		o.t.Applied(n, took)
	}
}

func (o observers) SnapshotSaved(took time.Duration, err error) {
	if o.m != nil {
		o.m.SnapshotSaved(took, err)
	}
	if o.t != nil {
		o.t.SnapshotSaved(took, err)
	}
}

func (o observers) SnapshotReceived(took time.Duration, err error) {
	if o.m != nil {
		o.m.SnapshotReceived(took, err)
	}
	if o.t != nil {
		o.t.SnapshotReceived(took, err)
	}
}

func (o observers) LeaderChanged(lead, term uint64) {
	if o.t != nil {
		o.t.LeaderChanged(lead, term)
	}
}

func (o observers) RoundTrip(peer uint64, lane transport.Lane, took time.Duration) {
	if o.m != nil {
		o.m.RoundTrip(peer, lane, took)
	}
	if o.t != nil {
		o.t.RoundTrip(peer, lane, took)
	}
}

func (o observers) SnapshotSent(peer uint64, took time.Duration, err error) {
	if o.m != nil {
		o.m.SnapshotSent(peer, took, err)
	}
	if o.t != nil {
		o.t.SnapshotSent(peer, took, err)
	}
}

func (o observers) Request(method, code string, took time.Duration) {
	if o.m != nil {
		o.m.Request(method, code, took)
	}
	if o.t != nil {
		o.t.Request(method, code, took)
	}
}

// Metrics returns what the node's /metrics endpoint serves, or nil if
// Config.Metrics is off.
func (n *Node) Metrics() prometheus.Gatherer {
	if n.metrics == nil {
		return nil
	}
	return n.metrics.Gatherer()
}

// ObserveServer adds the connection counts of srv, the server the node's
// capabilities are served on, to its metrics (if on).
func (n *Node) ObserveServer(srv *rpc.Server) {
	if n.metrics != nil {
		n.metrics.ObserveServer(srv)
	}
}

// Ready says whether the node should receive traffic (/readyz): nil if
// it is a member of its cluster's configuration, knows a leader, and its
// state machine has applied its commit index to within
// Config.ReadyApplyLag entries; otherwise why not.
func (n *Node) Ready(ctx context.Context) error {
	if n.d.Stopped() {
		return fmt.Errorf("the node stopped: %v", n.d.StoppedError())
	}
	st, err := n.d.Status(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errors.New("the node's loop did not answer in time")
		}
		return fmt.Errorf("read the node's status: %w", err)
	}
	cs := st.Config
	if !slices.Contains(cs.Voters, n.cfg.ID) && !slices.Contains(cs.Learners, n.cfg.ID) && !slices.Contains(cs.LearnersNext, n.cfg.ID) {
		return errors.New("not a member of the cluster's configuration (yet)")
	}
	if st.Lead == 0 {
		return fmt.Errorf("no leader known (term %d)", st.Term)
	}
	applied := n.kv.AppliedIndex()
	if lag := st.Commit - min(st.Commit, applied); lag > n.cfg.ReadyApplyLag {
		return fmt.Errorf("applied index %d is %d entries behind the commit index %d (more than %d)", applied, lag, st.Commit, n.cfg.ReadyApplyLag)
	}
	return nil
}

// closeTrace ends the trace file, if any (after everything that feeds it
// stopped).
func (n *Node) closeTrace() {
	if n.trace == nil {
		return
	}
	if err := n.trace.Close(); err != nil {
		n.log.Warn("writing the trace file", "file", n.cfg.TraceFile, "error", err)
	}
}
