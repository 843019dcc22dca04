package nodesim

import (
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/internal/driverbugs"
)

// TestShrinkingFindsASmallerFailingRun breaks the driver on purpose (an
// unknown outcome answered as dropped), shrinks the first failing seed
// and expects a smaller run that fails the same way, which the printed
// override replays exactly.
func TestShrinkingFindsASmallerFailingRun(t *testing.T) {
	defer driverbugs.Set(driverbugs.Flags{UnknownAsDropped: true})()
	base := DefaultOptions(3)
	base.CrashP = 0.05
	var seed int64
	var first error
	var events int
	for seed = range 200 {
		res, err := Run(seed, base)
		if err != nil {
			first, events = err, res.Events
			break
		}
	}
	if first == nil {
		t.Fatal("no seed failed")
	}
	kind := failureKind(first)
	sr := Shrink(seed, base, first, events, func(e error) bool { return failureKind(e) == kind }, 80, time.Minute)
	if len(sr.Steps) == 0 || sr.Events > events {
		t.Fatalf("seed %d (%d events, %s): no smaller failing run in %d runs", seed, events, kind, sr.Runs)
	}
	override := Override(base, sr.Opts)
	t.Logf("seed %d (%d events) shrunk to seed %d (%d events) in %d runs (%v): -nodesim.opts='%s'",
		seed, events, sr.Seed, sr.Events, sr.Runs, sr.Steps, override)
	replay := DefaultOptions(3)
	replay.CrashP = 0.05
	if err := ApplyOverride(&replay, override); err != nil {
		t.Fatal(err)
	}
	res, err := Run(sr.Seed, replay)
	if err == nil || err.Error() != sr.Err.Error() || res.Events != sr.Events {
		t.Fatalf("the override does not replay the shrunk failure: %d events, %v; want %d events, %v", res.Events, err, sr.Events, sr.Err)
	}
}
