package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode/kv"
)

// Bounds of the numeric flags. Each is checked before the node touches its
// data directory or listens, so a typo cannot leave a node that serves but
// cannot work.
const (
	// minMessageSize is the smallest --max-message-size a cluster works
	// with. The largest entry is a batch at kv's limits (3 MiB of keys and
	// values, about 3.05 MiB encoded: kv.Config.MaxEntrySize); an
	// AppendEntries carries up to 1 MiB of entries or one larger entry,
	// and snapshot chunks are 1 MiB. 4 MiB holds the largest entry with
	// the transport's 64 KiB envelope.
	minMessageSize = 4 << 20
	// maxMessageSize is the largest useful --max-message-size: Cap'n
	// Proto's default traversal limit (64 MiB) refuses to read a larger
	// message anyway.
	maxMessageSize = 64 << 20
	// maxConns: every connection takes a file descriptor, and Linux
	// caps a process at 1,048,576 of them (fs.nr_open) by default.
	maxConns = 1 << 20
	// maxEchoQueue: a listener a million messages behind is not
	// listening; a larger queue only holds memory.
	maxEchoQueue = 1 << 20
	// minSegmentSize and maxSegmentSize bound --wal-segment-size. A
	// segment smaller than the largest entry (about 2 MiB) means a new
	// file for almost every write; the log is compacted and preallocated
	// a whole segment at a time, so one over 1 GiB holds that much disk
	// after a snapshot.
	minSegmentSize = 1 << 20
	maxSegmentSize = 1 << 30
	// minHeartbeat: a leader heartbeating more often than every
	// millisecond spends its time on heartbeats.
	minHeartbeat = time.Millisecond
)

// validate checks every flag and returns the parsed --peers. Its error
// has one line per problem, each naming the flag, what is wrong with it
// and what to give instead.
func (f *flags) validate() (map[uint64]string, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if f.id == 0 {
		bad("--id 0: node ids start at 1; give each node its own, e.g. --id 1")
	}
	if _, err := cli.ParseAddr(f.listen, cli.AddrRules{Listen: true}); err != nil {
		bad("--listen %v", err)
	} else if cli.IsWildcard(f.listen) && f.advertise == "" {
		// The listen address is what the node would otherwise advertise
		// (and record as its address in a new cluster).
		bad("--listen %s serves every interface; give --advertise with the address others reach this node at, e.g. --advertise 192.0.2.1:7000", cli.QuoteShort(f.listen, 64))
	}
	if f.metricsListen != "" {
		if _, err := cli.ParseAddr(f.metricsListen, cli.AddrRules{Listen: true}); err != nil {
			bad("--metrics-listen %v", err)
		}
	}
	if f.advertise != "" {
		if _, err := cli.ParseAddr(f.advertise, cli.AddrRules{}); err != nil {
			bad("--advertise %v", err)
		}
	}
	peers, err := parsePeers(f.peers)
	if err != nil {
		errs = append(errs, err)
	}
	if err == nil && len(peers) > 0 && peers[f.id] == "" && f.id != 0 {
		bad("--peers %s does not list this node's --id %d; list every initial member including this one, e.g. --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003", cli.QuoteShort(f.peers, 200), f.id)
	}
	if f.join && err == nil && len(peers) < 2 {
		bad("--join needs --peers listing the cluster's current members and this node, so that it can reach them")
	}
	if f.forceNewCluster && f.join {
		bad("--force-new-cluster and --join contradict each other: force a new cluster from a node that kept its data, and join the others to it")
	}
	if f.dataDir == "" {
		bad("--data-dir is empty; give the directory for this node's log and snapshots, e.g. --data-dir raftnode-data")
	}
	if strings.TrimSpace(f.clusterName) == "" {
		bad("--cluster-name is empty; give every node of a cluster the same name, e.g. --cluster-name capraft")
	}

	if f.maxConns < 1 || f.maxConns > maxConns {
		bad("--max-conns %d: give the number of connections to serve at once, from 1 to %d", f.maxConns, maxConns)
	}
	if f.peerConns < 0 {
		bad("--peer-conns %d: give the slots reserved for peers' connections, 0 or more (0: none)", f.peerConns)
	}
	if f.maxMessageSize < minMessageSize || f.maxMessageSize > maxMessageSize {
		bad("--max-message-size %d: give %d (4 MiB) to %d (64 MiB) bytes; Raft needs 4 MiB to carry the largest entry "+
			"(a batch of up to 3 MiB of keys and values) and the RPC envelope, "+
			"and Cap'n Proto reads no message over 64 MiB", f.maxMessageSize, minMessageSize, maxMessageSize)
	}
	if f.echoQueue < 1 || f.echoQueue > maxEchoQueue {
		bad("--echo-queue %d: give the messages a listener may fall behind, from 1 to %d", f.echoQueue, maxEchoQueue)
	}
	if f.historyRevs < 1 {
		bad("--history-revisions %d: give how many revisions of changes to keep for watches, at least 1 (default %d)", f.historyRevs, kv.DefaultHistoryRevisions)
	}
	if f.historyBytes < 1<<20 {
		bad("--history-bytes %d: give how many bytes of changes to keep for watches, at least 1048576 (1 MiB; default 16 MiB)", f.historyBytes)
	}
	if f.watchQueueBytes < 1<<20 {
		bad("--watch-queue-bytes %d: give how many bytes of changes a watcher may fall behind, at least 1048576 (1 MiB; default 8 MiB)", f.watchQueueBytes)
	}
	if f.snapshotEntries == 0 {
		bad("--snapshot-entries 0: give how many applied entries trigger a snapshot, at least 1 (default 10000)")
	}
	if f.snapshotBytes < 1<<20 {
		bad("--snapshot-bytes %d: give how many bytes written to the log trigger a snapshot, at least 1048576 (1 MiB; default 16 MiB)", f.snapshotBytes)
	}
	if f.snapshotCatchup == 0 {
		bad("--snapshot-catchup-entries 0: give how many entries to keep for lagging followers, at least 1 (default 5000)")
	}
	if f.walSegmentSize < minSegmentSize || f.walSegmentSize > maxSegmentSize {
		bad("--wal-segment-size %d: give %d (1 MiB) to %d (1 GiB) bytes; the log is preallocated and compacted a segment at a time",
			f.walSegmentSize, minSegmentSize, maxSegmentSize)
	}

	positive := func(flag string, d time.Duration, what string) {
		if d <= 0 {
			bad("%s %v: give a positive duration, %s", flag, d, what)
		}
	}
	if f.heartbeat < minHeartbeat {
		bad("--heartbeat-interval %v: give at least %v, e.g. 100ms", f.heartbeat, minHeartbeat)
	} else if f.electionTimeout < 3*f.heartbeat {
		bad("--election-timeout %v: give at least 3 heartbeat intervals (3 x %v = %v), e.g. 1s", f.electionTimeout, f.heartbeat, 3*f.heartbeat)
	}
	positive("--request-timeout", f.requestTimeout, "e.g. 5s")
	positive("--session-ttl", f.sessionTTL, "e.g. 60s")
	positive("--handshake-timeout", f.handshakeTimeout, "e.g. 10s")
	positive("--shutdown-timeout", f.shutdownTimeout, "e.g. 10s")
	if f.idleTimeout == 0 {
		bad("--idle-timeout 0s: give a positive duration (e.g. 5m), or a negative one to never close idle connections")
	}
	return peers, errors.Join(errs...)
}

// parsePeers reads "id=host:port,..." into a map. Each member needs a
// distinct non-zero id and an address of its own that other machines can
// dial.
func parsePeers(s string) (map[uint64]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	const example = "(example: --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003)"
	peers := make(map[uint64]string)
	byAddr := make(map[string]uint64)
	for _, part := range strings.Split(s, ",") {
		idStr, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		id, err := strconv.ParseUint(idStr, 10, 64)
		if !ok || err != nil || id == 0 {
			return nil, fmt.Errorf("--peers: %s is not id=host:port with a positive id %s", cli.QuoteShort(part, 64), example)
		}
		canon, err := cli.ParseAddr(addr, cli.AddrRules{})
		if err != nil {
			return nil, fmt.Errorf("--peers: member %d: %v", id, err)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("--peers: member %d is listed twice; give each member once %s", id, example)
		}
		if other, dup := byAddr[canon]; dup {
			return nil, fmt.Errorf("--peers: members %d and %d both have address %s; each member needs its own address %s", other, id, canon, example)
		}
		peers[id], byAddr[canon] = addr, id
	}
	return peers, nil
}
