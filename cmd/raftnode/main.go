// Command raftnode runs a capraft node: a member of a Raft cluster that
// replicates a key-value store and serves it, its peers and its operators
// over Cap'n Proto on one TCP address.
//
// With no flags it starts (or resumes) a single-node cluster on
// 127.0.0.1:7000 with its data in ./raftnode-data:
//
//	raftnode
//
// A three-node cluster on one machine:
//
//	raftnode --id 1 --listen 127.0.0.1:7001 --data-dir data1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//	raftnode --id 2 --listen 127.0.0.1:7002 --data-dir data2 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//	raftnode --id 3 --listen 127.0.0.1:7003 --data-dir data3 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003
//
// SIGINT or SIGTERM shuts it down gracefully: it stops accepting, lets calls
// in flight finish (up to --shutdown-timeout) and closes every connection.
// A second signal exits at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
)

type flags struct {
	id               uint64
	listen           string
	advertise        string
	logLevel         string
	logJSON          bool
	maxConns         int
	peerConns        int
	maxMessageSize   uint64
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	shutdownTimeout  time.Duration
	echoQueue        int
	historyRevs      int
	historyBytes     int64
	watchQueueBytes  int64
	tlsCert, tlsKey  string
	tlsCA            string

	clusterSecretFiles []string
	insecure           bool
	anonymous          string

	dataDir         string
	peers           string
	join            bool
	forceNewCluster bool
	clusterName     string
	heartbeat       time.Duration
	electionTimeout time.Duration
	snapshotEntries uint64
	snapshotBytes   uint64
	snapshotCatchup uint64
	snapshotRate    byteRate
	requestTimeout  time.Duration
	sessionTTL      time.Duration
	walSegmentSize  int64
	walDirectIO     bool

	metricsListen string
	pprof         bool
	traceFile     string
}

func main() {
	if err := newCommand().Execute(); err != nil {
		// One line per problem (flag checks report them all at once).
		// Errors from the raftnode package carry its name already.
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "raftnode: "+strings.TrimPrefix(line, "raftnode: "))
		}
		os.Exit(1)
	}
}

func newCommand() *cobra.Command { return newCommandFor(new(flags)) }

// newCommandFor returns the command, parsing its flags into f.
func newCommandFor(f *flags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "raftnode",
		Short: "Run a capraft consensus node",
		Long: "raftnode runs one member of a capraft cluster: it replicates a key-value store with Raft\n" +
			"and serves clients, peers and operators over Cap'n Proto on one TCP address.\n\n" +
			"With no flags it starts (or resumes) a single-node cluster on 127.0.0.1:7000 with its data\n" +
			"in ./raftnode-data; try `raftctl put greeting hello` and `raftctl get greeting` next.\n" +
			"For a 3-node cluster give each node its --id, --listen, --data-dir and the same --peers list.",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       cli.Version(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), *f)
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return fmt.Errorf("%w (see raftnode --help)", err)
	})
	cmd.AddCommand(restoreCommand())
	d := rpc.DefaultConfig()
	fl := cmd.Flags()
	fl.Uint64Var(&f.id, "id", 1, "this node's id in its cluster (non-zero)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:7000", "TCP address to serve on (port 0 picks a free port)")
	fl.StringVar(&f.advertise, "advertise", "", "address clients and peers should use to reach this node, host:port (default: the listen address)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: "+cli.LogLevels)
	fl.BoolVar(&f.logJSON, "log-json", false, "log JSON lines instead of text")
	fl.IntVar(&f.maxConns, "max-conns", d.MaxConns, "connections served at once, 1 to 1048576; more are refused")
	fl.IntVar(&f.peerConns, "peer-conns", rpc.DefaultPeerConns, "of --max-conns, slots only peers' connections may keep, so clients cannot lock a restarted peer out (0: none; capped at a quarter of --max-conns)")
	fl.Uint64Var(&f.maxMessageSize, "max-message-size", d.MaxMessageSize, "largest message accepted from a peer, in bytes (4 MiB to 64 MiB: Raft needs 4 MiB for its largest entries)")
	fl.DurationVar(&f.handshakeTimeout, "handshake-timeout", d.HandshakeTimeout, "time a new connection has to send its first message")
	fl.DurationVar(&f.idleTimeout, "idle-timeout", d.IdleTimeout, "close connections silent for this long (negative: never)")
	fl.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long calls in flight may take to finish")
	fl.IntVar(&f.echoQueue, "echo-queue", echo.DefaultQueueLen, "messages an echo listener may fall behind before it is dropped (1 to 1048576)")
	fl.IntVar(&f.historyRevs, "history-revisions", kv.DefaultHistoryRevisions, "newest revisions of changes kept for watches to replay (a watch from an older revision must re-list)")
	fl.Int64Var(&f.historyBytes, "history-bytes", kv.DefaultHistoryBytes, "bytes of keys and values of the changes kept for watches to replay (at least 1 MiB)")
	fl.Int64Var(&f.watchQueueBytes, "watch-queue-bytes", watch.DefaultQueueBytes, "bytes of changes a watcher may fall behind before the node closes its watch (at least 1 MiB)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate file; with --tls-key, serve TLS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key file for --tls-cert")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "PEM file of the cluster CA (with --tls-cert): mutual TLS, where certificates from this CA carry roles (Subject OU peer, operator or client) and this node's must name peer")
	fl.StringArrayVar(&f.clusterSecretFiles, "cluster-secret-file", nil, "file holding the secret every member proves it knows (challenge-response; it never crosses the wire), at least 32 bytes, mode 0600; repeat it to rotate: the node proves the first and accepts any")
	fl.BoolVar(&f.insecure, "insecure", false, "allow a node that other machines can reach, or that has peers, to run without a cluster secret or mutual TLS: anyone who can connect can then do anything")
	fl.StringVar(&f.anonymous, "anonymous", "", "what connections without a credential hold: none, client (kv, echo, status) or operator (also admin) (default: none with a cluster secret or mutual TLS, everything without)")
	fl.StringVar(&f.dataDir, "data-dir", "raftnode-data", "directory for the write-ahead log and snapshots (created if missing; reused on restart)")
	fl.StringVar(&f.peers, "peers", "", "initial members of a new cluster as id=host:port,... including this node (default: a single-node cluster of this node); on restart, overrides the addresses of the ids it lists")
	fl.BoolVar(&f.join, "join", false, "start with an empty data directory and wait to be added with 'raftctl member add' instead of bootstrapping a cluster")
	fl.BoolVar(&f.forceNewCluster, "force-new-cluster", false, "disaster recovery, once: make this node, with its data, the only voter of its cluster when a majority of the voters lost their data for good; every entry in its log becomes committed (see docs/OPERATIONS.md); start it without the flag afterwards")
	fl.StringVar(&f.clusterName, "cluster-name", "capraft", "cluster name; nodes refuse peers of a cluster with another name")
	fl.DurationVar(&f.heartbeat, "heartbeat-interval", 100*time.Millisecond, "how often the leader sends heartbeats (at least 1ms)")
	fl.DurationVar(&f.electionTimeout, "election-timeout", time.Second, "how long a follower waits for a leader before starting an election (at least 3 heartbeat intervals)")
	fl.Uint64Var(&f.snapshotEntries, "snapshot-entries", 10000, "snapshot the state machine and compact the log every this many applied entries (at least 1)")
	fl.Uint64Var(&f.snapshotBytes, "snapshot-bytes", raftnode.DefaultSnapshotBytes, "also snapshot and compact the log once this many bytes were written to it since the last snapshot (at least 1 MiB)")
	fl.Uint64Var(&f.snapshotCatchup, "snapshot-catchup-entries", 5000, "entries kept before a snapshot so lagging followers catch up from the log (at least 1; at most half of --snapshot-bytes of them)")
	f.snapshotRate = raftnode.DefaultSnapshotRate
	fl.Var(&f.snapshotRate, "snapshot-rate", "bytes per second a leader streams a snapshot to a follower at, e.g. 64MiB, 512KiB or 1GiB (units are powers of 1024; at least 64KiB); 0 or unlimited: as fast as the follower takes it, at a cost to the latency of the writes the leader serves meanwhile")
	fl.DurationVar(&f.requestTimeout, "request-timeout", 5*time.Second, "how long a client request may wait for a leader, a commit or a read index")
	fl.Int64Var(&f.walSegmentSize, "wal-segment-size", 64<<20, "size of write-ahead log segment files, 1 MiB to 1 GiB; the log is compacted a segment at a time")
	fl.BoolVar(&f.walDirectIO, "wal-direct-io", true, "write the log with O_DIRECT|O_DSYNC where the file system allows it (false: page cache and fdatasync)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics), liveness (/healthz) and readiness (/readyz) over HTTP on this address, e.g. 127.0.0.1:9090 (default: off); HTTPS with --tls-cert, and a non-loopback address needs it or --insecure")
	fl.BoolVar(&f.pprof, "pprof", false, "also serve the Go profiler under /debug/pprof/ on --metrics-listen")
	fl.StringVar(&f.traceFile, "trace", "", "record a timeline of Raft events (fsyncs, applies, sends to peers, client requests, leader changes) in this file as Chrome trace-event JSON until the node stops; raftctl trace merge lines up several nodes' (a diagnostic: it costs a write per event)")
	fl.DurationVar(&f.sessionTTL, "session-ttl", 60*time.Second, "a client session with no write or keep-alive for this long (in log time) expires")
	return cmd
}

func run(ctx context.Context, f flags) error {
	log, err := cli.NewLogger("raftnode", f.logLevel, f.logJSON, os.Stderr)
	if err != nil {
		return err
	}
	// Every flag is checked before the node listens or touches its data
	// directory: a bad one leaves nothing behind.
	peers, err := f.validate()
	if err != nil {
		return err
	}
	log = log.With("node", f.id)

	sec, err := f.security(peers, log)
	if err != nil {
		return err
	}
	metricsTLS, err := f.metricsTLS(sec, log)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s: address already in use (is another raftnode running? choose another address with --listen)", f.listen)
		}
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	advertise := f.advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}

	node, err := raftnode.New(raftnode.Config{
		ID:                     f.id,
		ClusterName:            f.clusterName,
		Version:                cli.Version(),
		Advertise:              advertise,
		DataDir:                f.dataDir,
		Peers:                  peers,
		Join:                   f.join,
		ForceNewCluster:        f.forceNewCluster,
		HeartbeatInterval:      f.heartbeat,
		ElectionTimeout:        f.electionTimeout,
		SnapshotEntries:        f.snapshotEntries,
		SnapshotBytes:          f.snapshotBytes,
		SnapshotCatchupEntries: f.snapshotCatchup,
		SnapshotRate:           f.snapshotRate.config(),
		RequestTimeout:         f.requestTimeout,
		WALSegmentSize:         f.walSegmentSize,
		WALBufferedIO:          !f.walDirectIO,
		KV:                     kv.Config{SessionTTL: f.sessionTTL, HistoryRevisions: f.historyRevs, HistoryBytes: f.historyBytes},
		Watch:                  watch.Config{QueueBytes: f.watchQueueBytes},
		Dial:                   rpc.DialConfig{TLSConfig: sec.peerTLS, MaxMessageSize: f.maxMessageSize},
		Security:               sec.Security,
		Echo:                   echo.HubConfig{QueueLen: f.echoQueue},
		Logger:                 log,
		Metrics:                f.metricsListen != "",
		TraceFile:              f.traceFile,
	})
	if err != nil {
		ln.Close()
		return err
	}
	defer node.Close()
	ops, err := f.startMetrics(node, metricsTLS, log)
	if err != nil {
		ln.Close()
		return err
	}

	srv := rpc.NewServer(rpc.Config{
		Bootstrap:        node.Bootstrap,
		MaxConns:         f.maxConns,
		PeerConns:        peerConnsConfig(f.peerConns),
		MaxMessageSize:   f.maxMessageSize,
		HandshakeTimeout: f.handshakeTimeout,
		IdleTimeout:      f.idleTimeout,
		TLSConfig:        sec.serverTLS,
		Logger:           log.Named("rpc"),
	})
	node.ObserveServer(srv)
	log.Info("raftnode starting", "version", cli.Version(), "listen", ln.Addr().String(), "advertise", advertise)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	var stopErr error
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	case sig := <-sigs:
		log.Info("shutting down", "signal", sig.String(), "timeout", f.shutdownTimeout)
	case <-node.Done():
		stopErr = node.Err()
		log.Error("node stopped", "reason", stopErr)
	}

	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	go func() {
		// A second signal means "now": stop waiting for calls in flight.
		select {
		case sig := <-sigs:
			log.Warn("second signal; closing connections now", "signal", sig.String())
			cancel()
		case <-sctx.Done():
		}
	}()
	if stopErr == nil {
		// Hand leadership over first: clients then wait one round trip
		// instead of an election timeout.
		tctx, tcancel := context.WithTimeout(sctx, f.electionTimeout)
		if err := node.StepDown(tctx); err != nil {
			log.Warn("could not hand leadership over before stopping", "error", err)
		}
		tcancel()
	}
	// Watches next, while their connections are up: told the node is
	// stopping, their clients resume elsewhere at once.
	if err := node.CloseWatches(sctx); err != nil {
		log.Warn("could not tell every watcher the node is stopping", "error", err)
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown did not drain in time; connections were closed with calls in flight", "error", err)
	}
	<-served
	if ops != nil {
		// Last: /readyz says why the node is not ready while it stops.
		if err := ops.Close(sctx); err != nil {
			log.Warn("closing the metrics listener", "error", err)
		}
	}
	log.Info("stopped")
	if stopErr != nil {
		return fmt.Errorf("node %d stopped: %v", f.id, stopErr)
	}
	return nil
}

// peerConnsConfig maps --peer-conns to rpc.Config.PeerConns, where 0
// means the default and a negative number none.
func peerConnsConfig(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
