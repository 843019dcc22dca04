package driver

import (
	"context"
	"sync"
	"testing"
	"time"
)

// An operator's snapshot asked for while another snapshot is being
// written (one the log's growth started) waits for it and then takes its
// own: it succeeds, covering everything applied when it was asked, rather
// than failing with "busy".
func TestSnapshotAskedDuringAnotherWaitsAndCoversWhatWasApplied(t *testing.T) {
	var mu sync.Mutex
	var held []func()
	d := newTestDriver(t, func(cfg *Config) {
		cfg.SnapshotEntries = 5
		cfg.Go = func(f func()) {
			mu.Lock()
			defer mu.Unlock()
			held = append(held, f) // the test runs each snapshot's writing
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := d.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	takeHeld := func() []func() {
		mu.Lock()
		defer mu.Unlock()
		fs := held
		held = nil
		return fs
	}
	// Enough entries for the log's growth to start a snapshot, which is
	// held: it stays "being written".
	for i := 0; i < 8; i++ {
		if r := <-proposeWait(d.Driver, openSession()); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	var first []func()
	for first == nil && ctx.Err() == nil {
		first = takeHeld()
		time.Sleep(time.Millisecond)
	}
	if len(first) != 1 {
		t.Fatalf("%d snapshots started by the log's growth; want 1", len(first))
	}
	if r := <-proposeWait(d.Driver, openSession()); r.Err != nil {
		t.Fatal(r.Err)
	}
	st, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asked := st.Applied

	type answer struct {
		index uint64
		err   error
	}
	got := make(chan answer, 1)
	go func() {
		i, err := d.Snapshot(ctx)
		got <- answer{i, err}
	}()
	first[0]() // the snapshot under way ends: it is older than asked
	var ours []func()
	for ours == nil && ctx.Err() == nil {
		select {
		case a := <-got:
			t.Fatalf("Snapshot answered %d, %v before its own snapshot was written (applied %d when asked)", a.index, a.err, asked)
		default:
		}
		ours = takeHeld()
		time.Sleep(time.Millisecond)
	}
	if len(ours) != 1 {
		t.Fatalf("%d snapshots started for the request; want 1", len(ours))
	}
	ours[0]()
	a := <-got
	if a.err != nil || a.index < asked {
		t.Fatalf("Snapshot: index %d, %v; want a snapshot at %d or later", a.index, a.err, asked)
	}
}
