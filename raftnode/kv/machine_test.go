package kv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/statemachine/statemachinetest"
)

// TestMachineKeepsTheStateMachineContract runs the driver's contract
// (statemachinetest) against the store: random sessions, writes, token
// keys and revocations under small limits, so sessions expire and are
// evicted and results are forgotten along the way.
func TestMachineKeepsTheStateMachineContract(t *testing.T) {
	cfg := Config{SessionTTL: 10 * time.Second, MaxSessions: 3, MaxSavedResults: 4, MaxKeySize: 8, MaxValueSize: 32, MaxRangeLimit: 3}
	statemachinetest.Run(t, statemachinetest.Harness{
		New: func() statemachine.Machine { return New(cfg).Machine() },
		NewCommands: func(seed uint64) func(index uint64) []byte {
			g := newGen(rand.New(rand.NewSource(int64(seed))))
			return func(index uint64) []byte {
				c := g.next()
				if c.Kind == CmdOpenSession {
					g.sessions = append(g.sessions, index)
				}
				return enc(c)
			}
		},
		Seed: uint64(testSeed(t)),
	})
}

// TestVerifyDoesNotBuildTheState checks Machine.Verify validates a
// snapshot in memory bounded by its read buffer, not by the state's size
// (Restore allocates at least every key and value again), and leaves the
// store alone.
func TestVerifyDoesNotBuildTheState(t *testing.T) {
	src := newDriver(t, Config{})
	sess := src.open()
	var seq uint64
	for i := range 200 {
		ops := make([]WriteOp, 100)
		for j := range ops {
			seq++
			ops[j] = put(seq, fmt.Sprintf("key/%03d/%03d", i, j), strings.Repeat("v", 100))
		}
		src.batch(sess, seq-99, ops...)
	}
	b := snapBytes(t, src.s)
	target, _ := richStore(t)
	before := snapBytes(t, target.s)
	m := target.s.Machine()
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	err := m.Verify(bytes.NewReader(b), src.s.AppliedIndex())
	runtime.ReadMemStats(&ms2)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if grew, state := ms2.TotalAlloc-ms1.TotalAlloc, uint64(len(b)); grew > 512<<10 || grew > state/4 {
		t.Fatalf("Verify of a %d-byte snapshot allocated %d bytes", state, grew)
	}
	if !bytes.Equal(snapBytes(t, target.s), before) {
		t.Fatal("Verify changed the store")
	}
	if err := m.Verify(bytes.NewReader(b), src.s.AppliedIndex()-1); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Verify of a snapshot applied beyond the index given: %v", err)
	}
}

// TestReadsDuringRestoreNeverSeeTheEmptyStore checks that a read racing a
// Restore, which drops the old state before building the new, sees the
// old state or the new one: it waits while the store is empty. The
// snapshot arrives through a pipe, so the read is issued while Restore
// is stalled mid-stream with the old state already dropped.
func TestReadsDuringRestoreNeverSeeTheEmptyStore(t *testing.T) {
	src := newDriver(t, Config{})
	sess := src.open()
	var seq uint64
	for i := range 20 {
		ops := make([]WriteOp, 100)
		for j := range ops {
			seq++
			ops[j] = put(seq, fmt.Sprintf("key/%03d/%03d", i, j), "new")
		}
		src.batch(sess, seq-99, ops...)
	}
	b := snapBytes(t, src.s)

	target := newDriver(t, Config{})
	tsess := target.open()
	target.batch(tsess, 1, put(1, "key/000/000", "old"))
	m := target.s.Machine()

	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() { restored <- m.Restore(pr, src.s.AppliedIndex()) }()
	// The header and part of the keys: Restore accepted the snapshot
	// and dropped the old state, and now waits for more.
	if _, err := pw.Write(b[:len(b)/2]); err != nil {
		t.Fatal(err)
	}
	type read struct {
		kv    KeyValue
		found bool
	}
	got := make(chan read, 1)
	go func() {
		kv, found, _ := target.s.Get([]byte("key/000/000"))
		got <- read{kv, found}
	}()
	check := func(r read) {
		t.Helper()
		if !r.found || (string(r.kv.Value) != "old" && string(r.kv.Value) != "new") {
			t.Fatalf("a read during Restore saw found=%v value %q: neither the old state nor the new", r.found, r.kv.Value)
		}
	}
	checked := false
	select {
	case r := <-got: // a store that let the read through must not have been empty
		check(r)
		checked = true
	case <-time.After(50 * time.Millisecond): // the read waits, as it should: feed the rest
	}
	if _, err := pw.Write(b[len(b)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-restored; err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if !checked {
		check(<-got)
	}
	if kv, found, _ := target.s.Get([]byte("key/000/000")); !found || string(kv.Value) != "new" {
		t.Fatalf("after Restore: found=%v value %q, want the snapshot's", found, kv.Value)
	}
}
