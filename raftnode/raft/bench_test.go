package raft

import (
	"runtime"
	"testing"
)

// allocMeter reports allocations per proposal with a fraction, which
// b.ReportAllocs rounds away when batching makes them rare.
type allocMeter struct{ start uint64 }

func startAllocs() allocMeter {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return allocMeter{ms.Mallocs}
}

func (a allocMeter) report(b *testing.B) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.Mallocs-a.start)/float64(b.N), "allocs/proposal")
}

// benchCluster is a minimal in-memory 3-node cluster without faults or
// checkers: it measures the core alone (plus MemoryStorage).
type benchCluster struct {
	cores   []*Core
	disks   []*MemoryStorage
	queue   []Message
	applied []uint64
}

func newBenchCluster(b *testing.B) *benchCluster {
	bc := &benchCluster{}
	voters := []uint64{1, 2, 3}
	for _, id := range voters {
		d := NewMemoryStorage()
		_ = d.ApplySnapshot(BootstrapSnapshot(ConfState{Voters: voters}))
		c, err := New(Config{ID: id, Storage: d, ElectionTick: 10, HeartbeatTick: 1, Seed: id,
			MaxInflightMsgs: 256, MaxSizePerMsg: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		bc.cores = append(bc.cores, c)
		bc.disks = append(bc.disks, d)
		bc.applied = append(bc.applied, 0)
	}
	bc.cores[0].campaign(campaignElection)
	bc.settle()
	if bc.cores[0].state != StateLeader {
		b.Fatal("no leader")
	}
	return bc
}

func (bc *benchCluster) process(i int) {
	c, d := bc.cores[i], bc.disks[i]
	for c.HasReady() {
		rd := c.Ready()
		bc.queue = append(bc.queue, rd.Messages...)
		_ = d.Append(rd.Entries)
		if !rd.HardState.IsEmpty() {
			d.SetHardState(rd.HardState)
		}
		bc.queue = append(bc.queue, rd.MessagesAfterPersist...)
		if n := len(rd.CommittedEntries); n > 0 {
			bc.applied[i] = rd.CommittedEntries[n-1].Index
		}
		c.Advance()
		// Compact now and then so memory stays flat over long runs.
		if first, _ := d.FirstIndex(); bc.applied[i] > first+20000 {
			_, _ = d.CreateSnapshot(bc.applied[i], c.ConfState(), nil)
			_ = d.Compact(bc.applied[i] - 1000)
		}
	}
}

func (bc *benchCluster) settle() {
	for i := range bc.cores {
		bc.process(i)
	}
	for len(bc.queue) > 0 {
		q := bc.queue
		bc.queue = nil
		for _, m := range q {
			_ = bc.cores[m.To-1].Step(m)
		}
		for i := range bc.cores {
			bc.process(i)
		}
	}
}

// BenchmarkProposeSingle: one 256-byte proposal per round trip.
func BenchmarkProposeSingle(b *testing.B) {
	data := make([]byte, 256)
	benchPropose(b, 1, func(bc *benchCluster, n int) error { return bc.cores[0].Propose(data) })
}

// BenchmarkProposeBatched: 256-byte proposals, 256 per Ready cycle (the
// driver drains many client requests into one batch).
func BenchmarkProposeBatched(b *testing.B) {
	const batch = 256
	data := make([]byte, 256)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = data
	}
	benchPropose(b, batch, func(bc *benchCluster, n int) error { return bc.cores[0].ProposeBatch(bufs[:n]) })
}

// BenchmarkProposeManyCalls: 256 separate Propose calls per Ready cycle.
func BenchmarkProposeManyCalls(b *testing.B) {
	data := make([]byte, 256)
	benchPropose(b, 256, func(bc *benchCluster, n int) error {
		for j := 0; j < n; j++ {
			if err := bc.cores[0].Propose(data); err != nil {
				return err
			}
		}
		return nil
	})
}

// benchPropose proposes b.N entries on the leader of a fresh 3-node
// cluster, perRound entries per Ready cycle (propose(n) submits n), lets
// every node settle after each round, and reports proposals/s and
// allocations per proposal.
func benchPropose(b *testing.B, perRound int, propose func(bc *benchCluster, n int) error) {
	bc := newBenchCluster(b)
	b.ReportAllocs()
	b.ResetTimer()
	am := startAllocs()
	for done := 0; done < b.N; done += perRound {
		if err := propose(bc, min(perRound, b.N-done)); err != nil {
			b.Fatal(err)
		}
		bc.settle()
	}
	b.StopTimer()
	am.report(b)
	if bc.applied[0] < uint64(b.N) {
		b.Fatalf("applied %d of %d", bc.applied[0], b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "proposals/s")
}
