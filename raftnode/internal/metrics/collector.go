package metrics

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
	"github.com/capraft/capraft/rpc"
)

// Sources are what a scrape reads: counters and states the node's parts
// keep anyway. Every field is required.
type Sources struct {
	// NodeID is this node's id (it is left out of the peers).
	NodeID uint64
	// DataDir is the data directory whose file system's space is
	// reported.
	DataDir string
	// Leader is the leader this node knows of (0: none), without asking
	// the loop.
	Leader func() uint64
	// Stopped says the node stopped on its own (removed, disk failure).
	Stopped func() bool
	// Counters are the driver's; Status asks its loop (bounded by ctx).
	Counters func() driver.Counters
	Status   func(ctx context.Context) (driver.Status, error)
	// Applied is the state machine's applied index.
	Applied func() uint64
	// Received counts the snapshots the driver refused.
	Received func() driver.ReceiveStats
	// Storage is the write-ahead log's counters.
	Storage func() storage.Stats
	// Peer describes the sending side towards one peer; Snapshots the
	// snapshot transfers sent.
	Peer      func(id uint64) transport.PeerStats
	Snapshots func() transport.SnapshotStats
	// Sessions counts the state machine's live client sessions;
	// EchoListeners the echo hub's listeners.
	Sessions      func() int
	EchoListeners func() int
}

// statusTimeout bounds a scrape's wait for the loop: a scrape of a busy
// node reports what it knows without it rather than hang.
const statusTimeout = time.Second

// collector reads Sources at scrape time.
type collector struct {
	src Sources
}

func newCollector(src Sources) *collector { return &collector{src: src} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The metrics read at scrape time.
var (
	dHasLeader     = desc("capraft_has_leader", "1 if this node knows a leader, else 0.")
	dIsLeader      = desc("capraft_is_leader", "1 if this node is the leader, else 0.")
	dStopped       = desc("capraft_stopped", "1 if the node stopped on its own (removed from the cluster, disk failure), else 0.")
	dLeaderChanges = desc("capraft_leader_changes_total", "Times this node learned of a new leader.")
	dTerm          = desc("capraft_term", "The node's current Raft term.")
	dCommit        = desc("capraft_commit_index", "The highest log index this node knows committed.")
	dApplied       = desc("capraft_applied_index", "The highest log index the state machine applied.")
	dLast          = desc("capraft_last_index", "The last index in this node's log.")
	dSnapIndex     = desc("capraft_snapshot_index", "The newest snapshot's index.")
	dMember        = desc("capraft_is_member", "1 if this node's configuration includes it (voter or learner), else 0.")
	dVoters        = desc("capraft_voters", "Voters in this node's configuration.")
	dPropCommitted = desc("capraft_proposals_committed_total", "Proposals applied and answered with their result.")
	dPropFailed    = desc("capraft_proposals_failed_total", "Proposals answered with an error (not leader, dropped, outcome unknown, stopping).")
	dPropPending   = desc("capraft_proposals_pending", "Proposals waiting for their entry to be applied.")
	dWALSaves      = desc("capraft_wal_saves_total", "Write-ahead log saves (one per Ready persisted).")
	dWALBytes      = desc("capraft_wal_written_bytes_total", "Bytes of records written to the write-ahead log.")
	dWALSegments   = desc("capraft_wal_segments", "Write-ahead log segment files.")
	dSnapSent      = desc("capraft_snapshots_sent_total", "Snapshot transfers to followers that ended, by result (ok, error, superseded).", "result")
	dSnapSentBytes = desc("capraft_snapshot_sent_bytes_total", "Snapshot bytes followers took.")
	dSnapReceived  = desc("capraft_snapshots_received_total", "Snapshots received from a leader, by result (installed, refused).", "result")
	dPeerSent      = desc("capraft_peer_sent_messages_total", "Raft messages sent to a peer.", "peer")
	dPeerBytes     = desc("capraft_peer_sent_bytes_total", "Bytes of Raft messages sent to a peer (as queued).", "peer")
	dPeerDropped   = desc("capraft_peer_dropped_messages_total", "Raft messages to a peer dropped (queue full, connection failed, unencodable).", "peer")
	dPeerFailures  = desc("capraft_peer_dial_failures_total", "Failed connection attempts and failed connections to a peer.", "peer")
	dPeerConnected = desc("capraft_peer_connected", "1 if every lane to the peer is connected, else 0.", "peer")
	dPeerQueued    = desc("capraft_peer_queued_bytes", "Bytes of Raft messages waiting to be sent to a peer.", "peer")
	dFollowerLag   = desc("capraft_follower_lag_entries", "Leader only: entries a follower's log is behind the leader's last index.", "peer")
	dFollowerAct   = desc("capraft_follower_active", "Leader only: 1 if the follower answered recently, else 0.", "peer")
	dSessions      = desc("capraft_sessions", "Live client sessions in the state machine.")
	dEcho          = desc("capraft_echo_listeners", "Echo listeners subscribed on this node.")
	dDiskFree      = desc("capraft_data_dir_free_bytes", "Free bytes (for unprivileged users) on the data directory's file system.")
	dDiskSize      = desc("capraft_data_dir_capacity_bytes", "Size in bytes of the data directory's file system.")
)

var allDescs = []*prometheus.Desc{dHasLeader, dIsLeader, dStopped, dLeaderChanges, dTerm, dCommit, dApplied, dLast,
	dSnapIndex, dMember, dVoters, dPropCommitted, dPropFailed, dPropPending, dWALSaves, dWALBytes, dWALSegments,
	dSnapSent, dSnapSentBytes, dSnapReceived, dPeerSent, dPeerBytes, dPeerDropped, dPeerFailures, dPeerConnected,
	dPeerQueued, dFollowerLag, dFollowerAct, dSessions, dEcho, dDiskFree, dDiskSize}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func flag(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src
	lead := s.Leader()
	gauge(ch, dHasLeader, flag(lead != 0))
	gauge(ch, dIsLeader, flag(lead == s.NodeID))
	gauge(ch, dStopped, flag(s.Stopped()))

	dc := s.Counters()
	counter(ch, dLeaderChanges, dc.LeaderChanges)
	counter(ch, dPropCommitted, dc.Committed)
	counter(ch, dPropFailed, dc.Failed)
	gauge(ch, dPropPending, float64(dc.Pending()))

	ws := s.Storage()
	counter(ch, dWALSaves, ws.Saves)
	counter(ch, dWALBytes, ws.BytesWritten)
	gauge(ch, dWALSegments, float64(ws.Segments))

	ss := s.Snapshots()
	counter(ch, dSnapSent, ss.Finished, "ok")
	counter(ch, dSnapSent, ss.Failed, "error")
	counter(ch, dSnapSent, ss.Superseded, "superseded")
	counter(ch, dSnapSentBytes, ss.BytesSent)
	counter(ch, dSnapReceived, s.Received().Refused, "refused")

	gauge(ch, dApplied, float64(s.Applied()))
	gauge(ch, dSessions, float64(s.Sessions()))
	gauge(ch, dEcho, float64(s.EchoListeners()))
	if free, size, err := diskSpace(s.DataDir); err == nil {
		gauge(ch, dDiskFree, float64(free))
		gauge(ch, dDiskSize, float64(size))
	}

	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	st, err := s.Status(ctx)
	cancel()
	if err != nil {
		// Stopped or too busy to answer: the gauges that need the loop
		// are left out of this scrape (absent, not stale).
		return
	}
	counter(ch, dSnapReceived, st.SnapshotsInstalled, "installed")
	gauge(ch, dTerm, float64(st.Term))
	gauge(ch, dCommit, float64(st.Commit))
	gauge(ch, dLast, float64(st.LastIndex))
	gauge(ch, dSnapIndex, float64(st.SnapshotIndex))
	cs := st.Config
	gauge(ch, dMember, flag(slices.Contains(cs.Voters, s.NodeID) || slices.Contains(cs.Learners, s.NodeID) ||
		slices.Contains(cs.LearnersNext, s.NodeID)))
	gauge(ch, dVoters, float64(len(cs.Voters)))
	for _, id := range peers(cs, s.NodeID) {
		label := strconv.FormatUint(id, 10)
		ps := s.Peer(id)
		if ps.Known {
			counter(ch, dPeerSent, ps.Sent, label)
			counter(ch, dPeerBytes, ps.SentBytes, label)
			counter(ch, dPeerDropped, ps.Dropped, label)
			counter(ch, dPeerFailures, ps.Failures, label)
			gauge(ch, dPeerConnected, flag(ps.Connected), label)
			gauge(ch, dPeerQueued, float64(ps.QueuedBytes), label)
		}
		if pr, ok := st.Progress[id]; ok {
			gauge(ch, dFollowerLag, float64(st.LastIndex-min(st.LastIndex, pr.Match)), label)
			gauge(ch, dFollowerAct, flag(pr.RecentActive), label)
		}
	}
}

// peers lists every member of cs but self, once, in order.
func peers(cs raft.ConfState, self uint64) []uint64 {
	var ids []uint64
	for _, l := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		ids = append(ids, l...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return slices.DeleteFunc(ids, func(id uint64) bool { return id == self })
}

// ObserveServer adds the connection counts of srv (the node's RPC
// server) to the metrics.
func (m *Metrics) ObserveServer(srv *rpc.Server) {
	m.reg.MustRegister(connCollector{srv})
}

var (
	dConns        = desc("capraft_connections", "Connections served, by the slot they hold (client, peer, probation: not yet proven a peer).", "kind")
	dConnsEvicted = desc("capraft_connections_evicted_total", "Client connections closed to make room for a new connection.")
	dConnsRefused = desc("capraft_connections_refused_total", "New connections closed because no slot was free.")
)

type connCollector struct{ srv *rpc.Server }

func (connCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dConns
	ch <- dConnsEvicted
	ch <- dConnsRefused
}

func (c connCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	gauge(ch, dConns, float64(st.Clients), "client")
	gauge(ch, dConns, float64(st.Peers), "peer")
	gauge(ch, dConns, float64(st.OnProbation), "probation")
	counter(ch, dConnsEvicted, st.Evicted)
	counter(ch, dConnsRefused, st.Refused)
}
