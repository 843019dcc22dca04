package nodesim

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Shrinking. A failing seed's schedule is drawn from its options: fewer
// faults, clients, keys or a shorter chaos draw a shorter schedule. Shrink
// tries such reductions one at a time, greedily, each with the failing
// seed and a few after it, keeping the first run that fails the same way
// with no more events, and returns the smallest failing seed and options it
// found, which Override names for a replay. A changed option draws a
// different schedule (not a sub-schedule of the first): the smaller
// failure is another witness of the same bug, usually easier to read.

// shrinkSeeds is how many seeds, from the failing one on, each
// reduction is tried with.
const shrinkSeeds = 8

// reduction is one way to make a run smaller: it changes o and reports
// whether it changed anything.
type reduction struct {
	name  string
	apply func(o *Options) bool
}

func zeroP(name string, f func(o *Options) *float64) reduction {
	return reduction{name + "=0", func(o *Options) bool {
		p := f(o)
		if *p == 0 {
			return false
		}
		*p = 0
		return true
	}}
}

var reductions = []reduction{
	{"halve the chaos", func(o *Options) bool {
		if o.Chaos <= 100*time.Millisecond {
			return false
		}
		o.Chaos = (o.Chaos / 2).Round(time.Millisecond)
		return true
	}},
	{"one client fewer", func(o *Options) bool {
		if o.Clients <= 1 {
			return false
		}
		o.Clients--
		return true
	}},
	{"one key fewer", func(o *Options) bool {
		if o.Keys <= 1 {
			return false
		}
		o.Keys--
		return true
	}},
	zeroP("ConfChangeP", func(o *Options) *float64 { return &o.ConfChangeP }),
	zeroP("DiskLossP", func(o *Options) *float64 { return &o.DiskLossP }),
	zeroP("TransferP", func(o *Options) *float64 { return &o.TransferP }),
	zeroP("PauseP", func(o *Options) *float64 { return &o.PauseP }),
	zeroP("ClockJumpP", func(o *Options) *float64 { return &o.ClockJumpP }),
	zeroP("DriftP", func(o *Options) *float64 { return &o.DriftP }),
	zeroP("SlowDiskP", func(o *Options) *float64 { return &o.SlowDiskP }),
	zeroP("FsyncCrashP", func(o *Options) *float64 { return &o.FsyncCrashP }),
	zeroP("DamageSnapP", func(o *Options) *float64 { return &o.DamageSnapP }),
	zeroP("PartitionP", func(o *Options) *float64 { return &o.PartitionP }),
	zeroP("CrashP", func(o *Options) *float64 { return &o.CrashP }),
	zeroP("DupP", func(o *Options) *float64 { return &o.DupP }),
	zeroP("DropP", func(o *Options) *float64 { return &o.DropP }),
}

// ShrinkResult is the smallest failing run Shrink found.
type ShrinkResult struct {
	Seed   int64
	Opts   Options
	Err    error
	Events int
	// Runs counts the runs Shrink made; Steps lists the reductions kept.
	Runs  int
	Steps []string
}

// Shrink looks for smaller options under which seed still fails, starting
// from opts, which fail with err after events events. same says whether
// a failure is the same as the first (e.g. the same checker). It stops
// after maxRuns runs or once budget has passed.
func Shrink(seed int64, opts Options, err error, events int, same func(error) bool, maxRuns int, budget time.Duration) ShrinkResult {
	best := ShrinkResult{Seed: seed, Opts: opts, Err: err, Events: events}
	deadline := time.Now().Add(budget)
	for improved := true; improved; {
		improved = false
		for _, r := range reductions {
			if best.Runs >= maxRuns || time.Now().After(deadline) {
				return best
			}
			o := best.Opts
			if !r.apply(&o) {
				continue
			}
			o.Trace = nil
			for s := best.Seed; s < best.Seed+shrinkSeeds && best.Runs < maxRuns; s++ {
				best.Runs++
				res, err := Run(s, o)
				if err == nil || !same(err) || res.Events > best.Events {
					continue
				}
				best.Seed, best.Opts, best.Err, best.Events = s, o, err, res.Events
				best.Steps = append(best.Steps, r.name)
				improved = true
				break
			}
		}
	}
	return best
}

// overridable are the options Override and ApplyOverride know.
var overridable = []string{"Nodes", "Clients", "Keys", "Chaos", "Liveness", "DropP", "DupP", "MinDelay", "MaxDelay",
	"CrashP", "PartitionP", "PauseP", "TransferP", "FaultEvery", "MaxPause", "DiskLossP", "ConfChangeP", "Think",
	"ValueSize", "SessionTTL", "SnapshotEntries", "TrailingEntries", "DamageSnapP", "SkipTransportChecksum",
	"SlowDiskP", "FsyncCrashP", "MinFsync", "MaxFsync", "ClockJumpP", "DriftP", "MaxClockJump", "MaxDrift"}

// Override names the options in which o differs from base, as
// "Name=value,..." (ApplyOverride reads it back).
func Override(base, o Options) string {
	bv, ov := reflect.ValueOf(base), reflect.ValueOf(o)
	var parts []string
	for _, name := range overridable {
		b, v := bv.FieldByName(name), ov.FieldByName(name)
		if b.Interface() != v.Interface() {
			parts = append(parts, fmt.Sprintf("%s=%v", name, v.Interface()))
		}
	}
	return strings.Join(parts, ",")
}

// ApplyOverride sets the options s names (see Override) in o.
func ApplyOverride(o *Options, s string) error {
	if s == "" {
		return nil
	}
	ov := reflect.ValueOf(o).Elem()
	for _, part := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(part, "=")
		f := ov.FieldByName(name)
		if !ok || !f.IsValid() || !strings.Contains(","+strings.Join(overridable, ",")+",", ","+name+",") {
			return fmt.Errorf("option %q: not one of %v", part, overridable)
		}
		var err error
		switch f.Interface().(type) {
		case time.Duration:
			var d time.Duration
			d, err = time.ParseDuration(val)
			f.SetInt(int64(d))
		case int:
			var n int64
			n, err = strconv.ParseInt(val, 10, 64)
			f.SetInt(n)
		case uint64:
			var n uint64
			n, err = strconv.ParseUint(val, 10, 64)
			f.SetUint(n)
		case float64:
			var x float64
			x, err = strconv.ParseFloat(val, 64)
			f.SetFloat(x)
		case bool:
			var b bool
			b, err = strconv.ParseBool(val)
			f.SetBool(b)
		}
		if err != nil {
			return fmt.Errorf("option %q: %w", part, err)
		}
	}
	return nil
}
