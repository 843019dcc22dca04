// Package metrics turns a node's counters and hooks into Prometheus
// metrics. It is the only package of the node that knows Prometheus: the
// driver, the transport, the storage and the services keep plain
// counters (read here at scrape time) and call small Observer interfaces
// where a distribution matters (recorded here in histograms).
//
// Every metric is named capraft_<what>[_<unit>][_total] (Prometheus'
// conventions): counters end in _total, durations are histograms in
// seconds. Names lists them all; docs/OPERATIONS.md explains them.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/capraft/capraft/raftnode/internal/transport"
)

// Metrics holds a node's registry and its histograms. It implements the
// driver's, the transport's and the services' observers and the
// storage's fsync hook (Fsync).
type Metrics struct {
	reg *prometheus.Registry

	fsync         prometheus.Histogram
	apply         prometheus.Histogram
	snapSave      *prometheus.HistogramVec
	snapSend      *prometheus.HistogramVec
	snapReceive   *prometheus.HistogramVec
	roundTrip     *prometheus.HistogramVec
	requests      *prometheus.HistogramVec
	roundTripByID sync.Map // peer<<1|lane -> prometheus.Observer
	requestsByKey sync.Map // requestKey -> prometheus.Observer
}

// Duration buckets. A local fsync takes 0.1 to 10 ms on a healthy disk
// (etcd's guidance: p99 under 10 ms); a round trip on a LAN about as
// long; snapshots seconds.
var (
	fastBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs .. 3.3s
	snapBuckets = prometheus.ExponentialBuckets(0.01, 2, 14)   // 10ms .. 82s
)

// New returns the metrics of a node whose scrape-time values come from
// src. The registry also holds the Go runtime's and the process's
// collectors.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "capraft_wal_fsync_duration_seconds",
			Help:    "Time each write-ahead log commit took to become durable (fdatasync, or the whole O_DSYNC write).",
			Buckets: fastBuckets,
		}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "capraft_apply_duration_seconds",
			Help:    "Time the state machine took to apply one batch of committed entries.",
			Buckets: fastBuckets,
		}),
		snapSave: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "capraft_snapshot_save_duration_seconds",
			Help:    "Time to write a snapshot of the state machine to disk and compact the log, by result (ok, error).",
			Buckets: snapBuckets,
		}, []string{"result"}),
		snapSend: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "capraft_snapshot_send_duration_seconds",
			Help:    "Time to stream a snapshot to a follower, by result (ok, error).",
			Buckets: snapBuckets,
		}, []string{"result"}),
		snapReceive: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "capraft_snapshot_receive_duration_seconds",
			Help:    "Time from a leader's snapshot offer until the core took the snapshot, by result (ok, error).",
			Buckets: snapBuckets,
		}, []string{"result"}),
		roundTrip: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "capraft_peer_round_trip_seconds",
			Help:    "Time from sending a batch of Raft messages to a peer until its core took them, by peer and lane (control, data).",
			Buckets: fastBuckets,
		}, []string{"peer", "lane"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "capraft_client_request_duration_seconds",
			Help:    "Time to answer a client's KV call, by method and result code (ok or the error code the client sees); its _count counts requests.",
			Buckets: fastBuckets,
		}, []string{"method", "code"}),
	}
	// Series that exist before their first event, so that rates and
	// alerts see a zero rather than nothing.
	for _, r := range []string{"ok", "error"} {
		m.snapSave.WithLabelValues(r)
		m.snapSend.WithLabelValues(r)
		m.snapReceive.WithLabelValues(r)
	}
	for _, method := range []string{"put", "get", "delete", "cas", "range", "txn", "batch"} {
		m.requests.WithLabelValues(method, "ok")
	}
	m.reg.MustRegister(m.fsync, m.apply, m.snapSave, m.snapSend, m.snapReceive, m.roundTrip, m.requests,
		newCollector(src),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Gatherer is what /metrics serves.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Registry is the registry, for collectors added later.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Fsync records a write-ahead log commit (storage.Options.OnFsync).
func (m *Metrics) Fsync(took time.Duration) { m.fsync.Observe(took.Seconds()) }

// Applied records a batch applied (driver.Observer).
func (m *Metrics) Applied(_ int, took time.Duration) { m.apply.Observe(took.Seconds()) }

// SnapshotSaved records a snapshot written (driver.Observer).
func (m *Metrics) SnapshotSaved(took time.Duration, err error) {
	m.snapSave.WithLabelValues(result(err)).Observe(took.Seconds())
}

// SnapshotReceived records a snapshot received (driver.Observer).
func (m *Metrics) SnapshotReceived(took time.Duration, err error) {
	m.snapReceive.WithLabelValues(result(err)).Observe(took.Seconds())
}

// LeaderChanged does nothing: leader changes are counted by the driver
// (driver.Observer).
func (m *Metrics) LeaderChanged(uint64, uint64) {}

// SnapshotSent records a snapshot transfer (transport.Observer).
func (m *Metrics) SnapshotSent(_ uint64, took time.Duration, err error) {
	m.snapSend.WithLabelValues(result(err)).Observe(took.Seconds())
}

// RoundTrip records a send call's round trip (transport.Observer).
func (m *Metrics) RoundTrip(peer uint64, lane transport.Lane, took time.Duration) {
	key := peer<<1 | uint64(lane&1)
	o, ok := m.roundTripByID.Load(key)
	if !ok {
		// Resolved once per peer and lane: formatting labels on every
		// call would cost more than the observation.
		o, _ = m.roundTripByID.LoadOrStore(key, m.roundTrip.WithLabelValues(strconv.FormatUint(peer, 10), lane.String()))
	}
	o.(prometheus.Observer).Observe(took.Seconds())
}

// requestKey names one series of capraft_client_request_duration_seconds.
type requestKey struct{ method, code string }

// Request records a KV call (services.RequestObserver).
func (m *Metrics) Request(method, code string, took time.Duration) {
	key := requestKey{method, code}
	o, ok := m.requestsByKey.Load(key)
	if !ok {
		o, _ = m.requestsByKey.LoadOrStore(key, m.requests.WithLabelValues(method, code))
	}
	o.(prometheus.Observer).Observe(took.Seconds())
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
