package driver

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// nopTransport sends nothing: the tests' drivers lead clusters of one,
// or play a member whose peers never answer.
type nopTransport struct{}

func (nopTransport) Send([]raft.Message)    {}
func (nopTransport) SetPeer(uint64, string) {}
func (nopTransport) RemovePeer(uint64)      {}
func (nopTransport) CancelSnapshots()       {}

// testDriver is a started driver of node 1 over a key-value store, with
// its storage in a temporary directory.
type testDriver struct {
	*Driver
	kv *kv.Store
}

// newTestDriver starts a driver with the node's defaults; configure
// changes its Config first (nil: a new single-node cluster). Cleanup
// closes it.
func newTestDriver(t testing.TB, configure func(cfg *Config)) *testDriver {
	t.Helper()
	store, err := storage.Open(t.TempDir(), storage.Options{NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	kvs := kv.New(kv.Config{})
	boot := BootstrapSnapshot([]raft.MemberIncarnation{{ID: 1, Incarnation: store.Incarnation()}}, map[uint64]string{1: "127.0.0.1:1"})
	cfg := Config{
		ID: 1, Storage: store, Machine: kvs.Machine(), Transport: nopTransport{}, Bootstrap: &boot,
		HeartbeatInterval: 100 * time.Millisecond, ElectionTimeout: time.Second, RequestTimeout: 5 * time.Second,
		SnapshotEntries: 10000, SnapshotBytes: 64 << 20, Seed: 1,
	}
	if configure != nil {
		configure(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	d.Start()
	t.Cleanup(func() {
		d.Close()
		store.Close()
	})
	return &testDriver{Driver: d, kv: kvs}
}

// newLoneDriver starts a single-node cluster and waits until it leads.
func newLoneDriver(t testing.TB) *testDriver {
	t.Helper()
	d := newTestDriver(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// runOnLoop runs fn on d's loop (onLoop for a task with no result).
func runOnLoop(ctx context.Context, d *Driver, fn func()) error {
	_, err := onLoop(ctx, d, func() struct{} { fn(); return struct{}{} })
	return err
}

// openSession is a key-value command that opens a session: a write
// whose result names its entry's index.
func openSession() []byte {
	return (&kv.Command{Kind: kv.CmdOpenSession, Time: time.Now().UnixNano()}).AppendBinary(nil)
}

// applied returns the key-value store's result of a proposal.
func applied(r Result) kv.Applied {
	if a, ok := r.Value.(*kv.Applied); ok && a != nil {
		return *a
	}
	return kv.Applied{}
}
