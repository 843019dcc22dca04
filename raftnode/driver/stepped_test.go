package driver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/nodesim"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

type nopTransport struct{}

func (nopTransport) Send([]raft.Message)    {}
func (nopTransport) SetPeer(uint64, string) {}
func (nopTransport) RemovePeer(uint64)      {}
func (nopTransport) CancelSnapshots()       {}

// steppedDriver starts a stepped single-node driver on a virtual clock;
// its background work is queued in bg.
func steppedDriver(t *testing.T, clock *nodesim.Clock, bg *[]func()) *driver.Driver {
	t.Helper()
	store, err := storage.Open(t.TempDir(), storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	boot := driver.BootstrapSnapshot([]raft.MemberIncarnation{{ID: 1, Incarnation: store.Incarnation()}}, map[uint64]string{1: "n1"})
	d, err := driver.New(driver.Config{
		ID: 1, Storage: store, Machine: kv.New(kv.Config{}).Machine(), Transport: nopTransport{}, Bootstrap: &boot,
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond, RequestTimeout: time.Second,
		SnapshotEntries: 3, SnapshotBytes: 1 << 30, Seed: 1,
		Clock: clock, Go: func(f func()) { *bg = append(*bg, f) }, Stepped: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	t.Cleanup(d.Close)
	return d
}

// A stepped driver runs no goroutine of its own: requests are answered
// during Step, on the caller's goroutine; its timers are its Clock's, and
// its background work goes through Config.Go.
func TestSteppedDriverMovesOnlyWhenStepped(t *testing.T) {
	clock := nodesim.NewClock(time.Unix(0, 0))
	var bg []func()
	d := steppedDriver(t, clock, &bg)

	var results []driver.Result
	for i := range 4 {
		cmd := kv.Command{Kind: kv.CmdOpenSession, ID: uint64(i + 1), Time: clock.Now().UnixNano()}
		d.Propose(cmd.AppendBinary(nil), func(r driver.Result) { results = append(results, r) })
	}
	if len(results) != 0 || d.IsLeader() {
		t.Fatalf("before any Step: %d answers, leader %v; want none and false", len(results), d.IsLeader())
	}
	for i := 0; i < 100 && d.Step(); i++ {
	}
	if !d.IsLeader() || len(results) != 4 {
		t.Fatalf("after stepping: leader %v, %d answers; want true and 4", d.IsLeader(), len(results))
	}
	for _, r := range results {
		if r.Err != nil {
			t.Fatalf("proposal failed: %v", r.Err)
		}
	}
	// Four entries applied past SnapshotEntries: the snapshot's writing
	// was handed to Go, not started on a goroutine.
	if len(bg) != 1 {
		t.Fatalf("%d background tasks started; want 1 (the snapshot)", len(bg))
	}
	bg[0]()
	for i := 0; i < 100 && d.Step(); i++ {
	}
	st, err := d.Status(context.Background())
	if err != nil || st.SnapshotIndex == 0 {
		t.Fatalf("after the background task: snapshot index %d, %v; want a snapshot", st.SnapshotIndex, err)
	}

	// A read with no leader change is released at the next Step.
	var readErr error
	read := false
	d.ReadBarrier(func(err error) { read, readErr = true, err })
	if read {
		t.Fatal("read answered before Step")
	}
	for i := 0; i < 100 && d.Step(); i++ {
	}
	if !read || readErr != nil {
		t.Fatalf("read: answered %v, %v", read, readErr)
	}

	// Close answers nothing twice and stops Step.
	d.Close()
	if d.Step() {
		t.Fatal("Step after Close reports more to do")
	}
	d.Propose(nil, func(r driver.Result) {
		if !errors.Is(r.Err, driver.ErrStopped) {
			t.Errorf("proposal after Close: %v, want ErrStopped", r.Err)
		}
	})
}
