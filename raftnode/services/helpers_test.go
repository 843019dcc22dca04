package services

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/storage"
)

// singleNode starts the services of a one-node cluster (its driver,
// storage and transport as raftnode builds them) and waits until it
// leads. opts adjust the services' Config.
func singleNode(tb testing.TB, opts ...func(*Config)) (*Server, context.Context) {
	tb.Helper()
	store, err := storage.Open(tb.TempDir(), storage.Options{NodeID: 1})
	if err != nil {
		tb.Fatal(err)
	}
	kvs := kv.New(kv.Config{})
	hub := echo.NewHub(echo.HubConfig{})
	tr := transport.New(transport.Config{ClusterID: 1, LocalID: 1, Incarnation: store.Incarnation()})
	boot := driver.BootstrapSnapshot([]raft.MemberIncarnation{{ID: 1, Incarnation: store.Incarnation()}}, map[uint64]string{1: "127.0.0.1:1"})
	var sv *Server
	d, err := driver.New(driver.Config{
		ID: 1, Storage: store, Machine: kvs.Machine(), Transport: tr, Bootstrap: &boot,
		HeartbeatInterval: 100 * time.Millisecond, ElectionTimeout: time.Second, RequestTimeout: 5 * time.Second,
		SnapshotEntries: 10000, SnapshotBytes: 64 << 20, Seed: 1,
		OnApplied: func(index uint64, res statemachine.Result, replayed bool) { sv.OnApplied(index, res, replayed) },
		OnLeading: func() { sv.OnLeading() },
	})
	if err != nil {
		tb.Fatal(err)
	}
	cfg := Config{
		ID: 1, ClusterID: 1, HeartbeatInterval: 100 * time.Millisecond, ElectionTimeout: time.Second, RequestTimeout: 5 * time.Second,
		Driver: d, KV: kvs, Echo: hub, Transport: tr,
	}
	for _, o := range opts {
		o(&cfg)
	}
	sv, err = New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	d.Start()
	tb.Cleanup(func() {
		sv.Close()
		d.Close()
		tr.Close()
		hub.Close()
		store.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	if _, err := d.WaitLeader(ctx); err != nil {
		tb.Fatal(err)
	}
	return sv, ctx
}
