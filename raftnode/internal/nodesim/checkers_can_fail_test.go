package nodesim

import (
	"strings"
	"testing"
)

// TestCheckersCatchBrokenClientsAndDisks breaks the simulated clients
// and disks on purpose and expects the checkers to notice within a
// bounded number of seeds: checkers that cannot fail prove nothing.
func TestCheckersCatchBrokenClientsAndDisks(t *testing.T) {
	for _, tc := range []struct {
		name string
		bugs simBugs
		want string
	}{
		{"linearizable reads without a read barrier", simBugs{readWithoutBarrier: true}, "linearizab"},
		{"failed writes taken for acknowledged", simBugs{ackFailedWrites: true}, "linearizab"},
		{"a log that never fsyncs", simBugs{walNoSync: true}, ""},
		{"watches resumed a revision late", simBugs{watchResumesLate: true}, "watch"},
		{"watches resumed a revision early", simBugs{watchResumesEarly: true}, "watch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const maxSeeds = 100
			for seed := range int64(maxSeeds) {
				opts := DefaultOptions(3)
				opts.CrashP = 0.05
				opts.bugs = tc.bugs
				_, err := Run(seed, opts)
				if err == nil {
					continue
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("seed %d failed, but not with %q: %v", seed, tc.want, err)
				}
				t.Logf("caught at seed %d: %.200s", seed, err)
				return
			}
			t.Fatalf("not caught in %d seeds", maxSeeds)
		})
	}
}
