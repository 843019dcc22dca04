package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/storage"
)

// BenchmarkHooksOfOnePut is what metrics add to one put on the leader at
// most, when nothing is batched: the request observed, one fsync, one
// apply and a round trip to each of two followers. (Batching shares the
// last four among many puts.) docs/BENCHMARKS.md sets it against the
// put's own cost.
func BenchmarkHooksOfOnePut(b *testing.B) {
	m := New(nopSources())
	b.ReportAllocs()
	for b.Loop() {
		m.Request("put", "ok", time.Microsecond)
		m.Fsync(time.Millisecond)
		m.Applied(1, time.Microsecond)
		m.RoundTrip(2, transport.LaneData, time.Millisecond)
		m.RoundTrip(3, transport.LaneData, time.Millisecond)
	}
}

// nopSources are Sources that report nothing (no scrape happens here).
func nopSources() Sources {
	return Sources{
		NodeID:        1,
		DataDir:       ".",
		Leader:        func() uint64 { return 1 },
		Stopped:       func() bool { return false },
		Counters:      func() driver.Counters { return driver.Counters{} },
		Status:        func(context.Context) (driver.Status, error) { return driver.Status{}, nil },
		Applied:       func() uint64 { return 0 },
		Received:      func() driver.ReceiveStats { return driver.ReceiveStats{} },
		Storage:       func() storage.Stats { return storage.Stats{} },
		Peer:          func(uint64) transport.PeerStats { return transport.PeerStats{} },
		Snapshots:     func() transport.SnapshotStats { return transport.SnapshotStats{} },
		Sessions:      func() int { return 0 },
		EchoListeners: func() int { return 0 },
	}
}
