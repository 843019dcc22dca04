package nodesim

import (
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/internal/driverbugs"
)

// driverBugCases are the driver's injected bugs (raftnode/internal/
// driverbugs), each with a configuration whose faults expose it, the
// checker expected to fail (a substring of its error, or several
// separated by "|", any of which will do; "": any, as a lost
// acknowledged write shows in the reads' prefix check or in the history)
// and how many seeds may pass before it does.
var driverBugCases = []struct {
	name     string
	bug      driverbugs.Flags
	opts     func() Options
	want     string
	maxSeeds int
}{
	{"acknowledgements before the write", driverbugs.Flags{AckBeforePersist: true}, func() Options {
		o := DefaultOptions(3)
		o.CrashP, o.PartitionP = 0.08, 0.03
		return o
	}, "", 400},
	{"reads released before the apply", driverbugs.Flags{ReadBeforeApplied: true}, func() Options {
		return DefaultOptions(3)
	}, "linearizab", 200},
	{"an unknown outcome answered as dropped", driverbugs.Flags{UnknownAsDropped: true}, func() Options {
		o := DefaultOptions(3)
		o.CrashP = 0.05
		return o
	}, "exactly-once", 400},
	{"a wiped voter counted", driverbugs.Flags{CountWipedVoters: true}, func() Options {
		o := DefaultOptions(3)
		o.DiskLossP, o.CrashP, o.PartitionP = 0.03, 0.03, 0.03
		return o
		// A wiped voter whose vote is counted again elects a second
		// leader in a term (election safety) or one missing committed
		// entries (leader completeness): which shows first depends on
		// the seed's schedule.
	}, "leader completeness|election safety", 400},
	{"a snapshot installed unverified", driverbugs.Flags{InstallUnverified: true}, func() Options {
		o := DefaultOptions(3)
		o.CrashP, o.SnapshotEntries, o.TrailingEntries = 0.03, 10, 0
		o.DamageSnapP, o.SkipTransportChecksum = 0.3, true
		return o
	}, "damaged", 200},
}

// TestSimulatorCatchesInjectedDriverBugs switches on each injected bug
// of the driver in turn and expects the simulator to find a violation
// within a bounded number of seeds; the seed that caught it must pass
// with the bug off (the violation is the bug's).
func TestSimulatorCatchesInjectedDriverBugs(t *testing.T) {
	for _, tc := range driverBugCases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			seed, err := firstFailing(tc.bug, tc.opts, tc.maxSeeds)
			if err == nil {
				t.Fatalf("not caught in %d seeds", tc.maxSeeds)
			}
			if !containsAny(err.Error(), strings.Split(tc.want, "|")) {
				t.Fatalf("seed %d failed, but not with %q: %v", seed, tc.want, err)
			}
			t.Logf("caught at seed %d (%v): %.300s", seed, time.Since(start).Round(time.Millisecond), err)
			if _, err := Run(seed, tc.opts()); err != nil {
				t.Fatalf("seed %d fails with the bug off too: %v", seed, err)
			}
		})
	}
}

// firstFailing runs seeds 0, 1, ... with bug on until one fails, at most
// maxSeeds; it returns the seed and its error (nil: none failed).
func firstFailing(bug driverbugs.Flags, opts func() Options, maxSeeds int) (int64, error) {
	defer driverbugs.Set(bug)()
	for seed := range int64(maxSeeds) {
		if _, err := Run(seed, opts()); err != nil {
			return seed, err
		}
	}
	return -1, nil
}

// containsAny reports whether s contains one of subs.
func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
