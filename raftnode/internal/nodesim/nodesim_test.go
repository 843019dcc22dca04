package nodesim

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

var (
	flagSeeds   = flag.Int("nodesim.seeds", 0, "seeds per configuration (0: the default)")
	flagSeed    = flag.Int64("nodesim.seed", -1, "replay exactly this seed")
	flagFrom    = flag.Int64("nodesim.from", 0, "the first seed of -nodesim.seeds (to split a long run)")
	flagTrace   = flag.Bool("nodesim.trace", false, "log every event of the run (use with -nodesim.seed)")
	flagReplays = flag.Int("nodesim.replays", 1, "seeds per configuration run twice by the replay test")
	flagEvery   = flag.Int("nodesim.progress", 0, "log progress every this many seeds (0: never; with -v it streams)")
	flagOpts    = flag.String("nodesim.opts", "", "override options of the configuration: Name=value,... (what shrinking prints)")
	flagShrink  = flag.Duration("nodesim.shrink", time.Minute, "how long to shrink a failing seed (0: do not)")
)

// configs are the simulated configurations, with their default seed
// counts (kept small: the test's cost in CI; divided by raceDivisor under
// -race). -nodesim.seeds runs more.
var configs = []struct {
	name  string
	seeds int
	opts  func() Options
}{
	{"n=3", 120, func() Options { return DefaultOptions(3) }},
	{"n=5", 40, func() Options { return DefaultOptions(5) }},
	{"n=7", 10, func() Options { return DefaultOptions(7) }},
	{"n=3,lossy", 40, func() Options {
		o := DefaultOptions(3)
		o.DropP, o.DupP, o.MaxDelay = 0.2, 0.1, 30*time.Millisecond
		return o
	}},
	{"n=3,disk-loss", 40, func() Options {
		o := DefaultOptions(3)
		o.DiskLossP = 0.02
		return o
	}},
	{"n=5,membership", 30, func() Options {
		o := DefaultOptions(5)
		o.ConfChangeP = 0.02
		return o
	}},
	{"n=3,busy", 10, func() Options {
		o := DefaultOptions(3)
		// 3 s of chaos, like the others (5 s made it a third of the
		// CI step's cost: .ci/run runs 500 seeds of each).
		o.Clients, o.Keys, o.Think = 10, 20, 5*time.Millisecond
		o.ValueSize = 200
		return o
	}},
	{"n=3,sessions-expire", 30, func() Options {
		o := DefaultOptions(3)
		o.SessionTTL = 300 * time.Millisecond
		o.PauseP = 0.03
		return o
	}},
	{"n=3,damaged-snapshots", 30, func() Options {
		o := DefaultOptions(3)
		o.CrashP, o.SnapshotEntries, o.TrailingEntries = 0.03, 10, 0
		o.DamageSnapP, o.SkipTransportChecksum = 0.3, true
		return o
	}},
	{"n=5,crashy,snapshots", 30, func() Options {
		o := DefaultOptions(5)
		o.CrashP, o.PartitionP = 0.05, 0.03
		o.SnapshotEntries, o.TrailingEntries = 10, 0
		return o
	}},
}

// raceDivisor divides the default seed counts under -race.
const raceDivisor = 4

// seeds returns the seeds to run.
func seeds(def int) []int64 {
	if *flagSeed >= 0 {
		return []int64{*flagSeed}
	}
	n := def
	if raceEnabled {
		n = max(1, n/raceDivisor)
	}
	if *flagSeeds > 0 {
		n = *flagSeeds
	}
	s := make([]int64, n)
	for i := range s {
		s[i] = *flagFrom + int64(i)
	}
	return s
}

// TestWholeNodeSimulation runs clusters of real nodes (driver, key-value
// state machine, storage on a crash-simulating disk) on a simulated clock
// and network under faults and client load, one seed at a time, and
// checks linearizability, exactly-once, replica agreement, election
// safety, that no acknowledged write is lost, and liveness after healing.
//
// More seeds: go test ./raftnode/internal/nodesim -run TestWholeNodeSimulation -nodesim.seeds=1000
// Replay one: go test ./raftnode/internal/nodesim -run 'TestWholeNodeSimulation/n=3$' -nodesim.seed=S -v [-nodesim.trace]
func TestWholeNodeSimulation(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			// Each run is single-threaded: the configurations share the
			// cores (CI: .ci/run runs 500 seeds of each).
			t.Parallel()
			start := time.Now()
			var total Stats
			ss := seeds(cfg.seeds)
			for _, seed := range ss {
				opts := cfg.opts()
				if err := ApplyOverride(&opts, *flagOpts); err != nil {
					t.Fatal(err)
				}
				if *flagTrace {
					opts.Trace = os.Stdout
				}
				res, err := Run(seed, opts)
				if err != nil {
					t.Errorf("seed %d: %v\nreplay: %s", seed, err, replayCommand(cfg.name, seed, *flagOpts))
					shrinkAndReport(t, cfg.name, cfg.opts(), seed, opts, err, res.Events)
					t.FailNow()
				}
				add(&total, res.Stats)
				if k := *flagEvery; k > 0 && (seed+1-*flagFrom)%int64(k) == 0 {
					t.Logf("seeds %d-%d in %v", *flagFrom, seed, time.Since(start).Round(time.Second))
				}
			}
			el := time.Since(start)
			t.Logf("%d seeds in %v (%.2f seeds/s): %+v", len(ss), el.Round(time.Millisecond), float64(len(ss))/el.Seconds(), total)
		})
	}
}

// replayCommand is the command that replays seed of configuration name
// with the options override.
func replayCommand(name string, seed int64, override string) string {
	cmd := fmt.Sprintf("go test ./raftnode/internal/nodesim -run 'TestWholeNodeSimulation/%s$' -nodesim.seed=%d", name, seed)
	if override != "" {
		cmd += fmt.Sprintf(" -nodesim.opts='%s'", override)
	}
	return cmd + " -v -nodesim.trace"
}

// shrinkAndReport shrinks a failing seed (for at most -nodesim.shrink)
// and logs the smallest failing replay it found.
func shrinkAndReport(t *testing.T, name string, base Options, seed int64, opts Options, err error, events int) {
	t.Helper()
	if *flagShrink <= 0 {
		return
	}
	kind := failureKind(err)
	sr := Shrink(seed, opts, err, events, func(e error) bool { return failureKind(e) == kind }, 200, *flagShrink)
	if len(sr.Steps) == 0 {
		t.Logf("shrinking: none of %d smaller runs failed the same way (%s)", sr.Runs, kind)
		return
	}
	t.Logf("shrunk in %d runs (%s) from %d events to %d: %v\nsmallest failing replay: %s",
		sr.Runs, strings.Join(sr.Steps, ", "), events, sr.Events, sr.Err, replayCommand(name, sr.Seed, Override(base, sr.Opts)))
}

// failureKind is what failed: the checker's words before the details.
func failureKind(err error) string {
	s := err.Error()
	if strings.HasPrefix(s, "at ") {
		if _, rest, ok := strings.Cut(s, ": "); ok {
			s = rest
		}
	}
	if i := strings.IndexAny(s, ":"); i >= 0 {
		s = s[:i]
	}
	if strings.HasPrefix(s, "read of ") {
		return "read of"
	}
	if strings.HasPrefix(s, "node ") {
		// "node N stopped", "node N took a snapshot ...": the verb.
		f := strings.Fields(s)
		if len(f) >= 3 {
			return "node " + f[2]
		}
	}
	return s
}

func add(t *Stats, s Stats) {
	t.Delivered += s.Delivered
	t.Dropped += s.Dropped
	t.Duplicated += s.Duplicated
	t.Crashes += s.Crashes
	t.ArmedCrashes += s.ArmedCrashes
	t.Restarts += s.Restarts
	t.Partitions += s.Partitions
	t.Pauses += s.Pauses
	t.Transfers += s.Transfers
	t.DiskLosses += s.DiskLosses
	t.Removals += s.Removals
	t.SnapshotsDamaged += s.SnapshotsDamaged
	t.DamageRefused += s.DamageRefused
	t.SpuriousDemotions += s.SpuriousDemotions
	t.SnapshotsSent += s.SnapshotsSent
	t.SnapshotsFailed += s.SnapshotsFailed
	t.Acked += s.Acked
	t.Unknown += s.Unknown
	t.Reads += s.Reads
	t.FailedReads += s.FailedReads
	t.SerializableReads += s.SerializableReads
	t.Forwarded += s.Forwarded
	t.SlowWrites += s.SlowWrites
	t.FsyncCrashes += s.FsyncCrashes
	t.ClockJumps += s.ClockJumps
	t.Leaders += s.Leaders
	t.MaxApplied = max(t.MaxApplied, s.MaxApplied)
	t.WatchEvents += s.WatchEvents
	t.WatchResumes += s.WatchResumes
	t.WatchRelists += s.WatchRelists
	t.WatchChecked += s.WatchChecked
}

// TestSimulationReplaysFromItsSeed runs a seed of every configuration
// twice: the event traces (and final states) must be identical, or a
// failing seed could not be replayed.
func TestSimulationReplaysFromItsSeed(t *testing.T) {
	for _, cfg := range configs {
		for seed := range int64(*flagReplays) {
			replays(t, cfg.name, cfg.opts, seed)
		}
	}
}

// replays runs seed under opts twice and compares the traces.
func replays(t *testing.T, name string, opts func() Options, seed int64) {
	t.Helper()
	a, err := Run(seed, opts())
	if err != nil {
		t.Fatalf("%s, seed %d: %v", name, seed, err)
	}
	b, err := Run(seed, opts())
	if err != nil {
		t.Fatalf("%s, seed %d, second run: %v", name, seed, err)
	}
	if a.TraceHash != b.TraceHash || a.Events != b.Events {
		t.Fatalf("%s: seed %d replays differently: %d events hashing to %x, then %d hashing to %x",
			name, seed, a.Events, a.TraceHash, b.Events, b.TraceHash)
	}
	if a.Events < 300 {
		t.Fatalf("%s: seed %d: only %d events: the simulation does not run", name, seed, a.Events)
	}
	t.Logf("%s, seed %d: %d events, trace %x", name, seed, a.Events, a.TraceHash)
}
