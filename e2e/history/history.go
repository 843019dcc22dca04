// Package history records what clients of a key-value store saw and
// checks that it is linearizable with porcupine.
//
// Each operation is recorded with the time it was called and the time its
// answer came back. An operation whose outcome is unknown (the client got
// an error or a timeout: a write may or may not have been applied) is
// recorded as pending forever, as Jepsen does: it may take effect at any
// point after its call, or never. Reads that failed carry no information
// and are left out.
//
// The model is a register per key with put, get and compare-and-swap; the
// history is partitioned by key, so each key is checked on its own.
package history

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is an operation's type.
type Kind int

const (
	// Put writes Value to Key.
	Put Kind = iota + 1
	// Get reads Key.
	Get
	// CAS writes Value to Key if the key holds Expect (or, with
	// ExpectAbsent, if it does not exist).
	CAS
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case Put:
		return "put"
	case Get:
		return "get"
	case CAS:
		return "cas"
	default:
		return fmt.Sprintf("Kind(%d)", int(k))
	}
}

// Input is an operation as called.
type Input struct {
	Kind         Kind
	Key          string
	Value        string // Put, CAS: the value written
	Expect       string // CAS: the value the key must hold
	ExpectAbsent bool   // CAS: the key must not exist (Expect is ignored)
}

// Output is an operation's answer.
type Output struct {
	Unknown bool   // the outcome is unknown (error or timeout)
	Found   bool   // Get: the key exists
	Value   string // Get: its value
	OK      bool   // CAS: the compare succeeded and the write was applied
}

// register is the per-key model state.
type register struct {
	exists bool
	value  string
}

// Model is the porcupine model of a key-value store of registers, one
// partition per key.
var Model = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range ops {
			k := op.Input.(Input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return register{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		return step(state.(register), input.(Input), output.(Output))
	},
	Equal: func(a, b interface{}) bool { return a.(register) == b.(register) },
	DescribeOperation: func(input, output interface{}) string {
		return Describe(input.(Input), output.(Output))
	},
	DescribeState: func(state interface{}) string {
		r := state.(register)
		if !r.exists {
			return "<absent>"
		}
		return fmt.Sprintf("%q", r.value)
	},
}

func step(s register, in Input, out Output) (bool, register) {
	switch in.Kind {
	case Put:
		// Known or not, a put that takes effect sets the value; a put that
		// never takes effect is linearized after everything else, where it
		// changes nothing anyone saw.
		return true, register{exists: true, value: in.Value}
	case Get:
		if out.Unknown {
			return true, s
		}
		if out.Found != s.exists || (s.exists && out.Value != s.value) {
			return false, s
		}
		return true, s
	case CAS:
		match := (in.ExpectAbsent && !s.exists) || (!in.ExpectAbsent && s.exists && s.value == in.Expect)
		switch {
		case out.Unknown:
			if match {
				return true, register{exists: true, value: in.Value}
			}
			return true, s
		case out.OK:
			if !match {
				return false, s
			}
			return true, register{exists: true, value: in.Value}
		default:
			return !match, s
		}
	}
	return false, s
}

// Describe renders an operation for the visualization and for messages.
func Describe(in Input, out Output) string {
	var b strings.Builder
	switch in.Kind {
	case Put:
		fmt.Fprintf(&b, "put(%s, %q)", in.Key, in.Value)
	case Get:
		fmt.Fprintf(&b, "get(%s)", in.Key)
	case CAS:
		if in.ExpectAbsent {
			fmt.Fprintf(&b, "cas(%s, <absent> -> %q)", in.Key, in.Value)
		} else {
			fmt.Fprintf(&b, "cas(%s, %q -> %q)", in.Key, in.Expect, in.Value)
		}
	default:
		fmt.Fprintf(&b, "%v(%s)", in.Kind, in.Key)
	}
	switch {
	case out.Unknown:
		b.WriteString(" -> ?")
	case in.Kind == Get && !out.Found:
		b.WriteString(" -> <absent>")
	case in.Kind == Get:
		fmt.Fprintf(&b, " -> %q", out.Value)
	case in.Kind == CAS && out.OK:
		b.WriteString(" -> ok")
	case in.Kind == CAS:
		b.WriteString(" -> failed")
	default:
		b.WriteString(" -> ok")
	}
	return b.String()
}

// Recorder collects a history from many goroutines.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	stats Stats
}

// Stats counts recorded operations.
type Stats struct {
	Ops     int // recorded operations
	Unknown int // of which pending forever
	Dropped int // failed reads, not recorded
}

// NewRecorder starts a history whose clock starts now.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Call is an operation in flight; finish it with Return, Fail or Drop.
type Call struct {
	r      *Recorder
	client int
	in     Input
	at     int64
}

// Begin records that client (a small non-negative number, one per
// sequential client) called in now.
func (r *Recorder) Begin(client int, in Input) *Call {
	return &Call{r: r, client: client, in: in, at: r.now()}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Return records the operation's answer, received now.
func (c *Call) Return(out Output) {
	c.r.add(porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Output: out, Return: c.r.now()})
}

// Fail records that the operation's outcome is unknown. A read that
// failed tells nothing and is dropped; a write is pending forever.
func (c *Call) Fail() {
	if c.in.Kind == Get {
		c.r.mu.Lock()
		c.r.stats.Dropped++
		c.r.mu.Unlock()
		return
	}
	c.r.add(porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Output: Output{Unknown: true}, Return: math.MaxInt64})
}

func (r *Recorder) add(op porcupine.Operation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	r.stats.Ops++
	if op.Output.(Output).Unknown {
		r.stats.Unknown++
	}
}

// Stats returns the counters so far.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Operations returns a copy of the history. Operations pending forever
// return just after the last known answer, which porcupine treats the
// same as never and keeps the visualization readable.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	var end int64
	for _, op := range ops {
		if op.Return != math.MaxInt64 && op.Return > end {
			end = op.Return
		}
		if op.Call > end {
			end = op.Call
		}
	}
	for i := range ops {
		if ops[i].Return == math.MaxInt64 {
			ops[i].Return = end + 1
		}
	}
	return ops
}

// Result is the outcome of a check.
type Result struct {
	Verdict porcupine.CheckResult // Ok, Illegal or Unknown (timed out)
	Info    porcupine.LinearizationInfo
	Ops     int
}

// Check checks the history with a time limit.
func (r *Recorder) Check(timeout time.Duration) Result {
	ops := r.Operations()
	res, info := porcupine.CheckOperationsVerbose(Model, ops, timeout)
	return Result{Verdict: res, Info: info, Ops: len(ops)}
}

// Visualize writes porcupine's HTML view of the checked history to path.
func (res Result) Visualize(path string) error {
	if err := porcupine.VisualizePath(Model, res.Info, path); err != nil {
		return fmt.Errorf("history: write visualization %s: %w", path, err)
	}
	return nil
}

// WithStaleRead returns the operations on one key plus a read that
// returns that key's overwritten value: the key's first acknowledged
// value, read just after a later acknowledged write (called after the
// first returned) replaced it. A checker that accepts the result cannot
// see stale reads in this history. The earliest such overwrite is used so
// that the checker can prove the violation quickly. Written values must
// be unique per key (else a later write may have restored the value). ok
// is false when no key was written twice in sequence.
func WithStaleRead(ops []porcupine.Operation) (out []porcupine.Operation, ok bool) {
	type write struct {
		value   string
		return_ int64
	}
	first := map[string]write{}
	var (
		key   string
		stale string
		at    int64 = -1
	)
	sorted := append([]porcupine.Operation(nil), ops...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
	for _, op := range sorted {
		in, o := op.Input.(Input), op.Output.(Output)
		if o.Unknown || !(in.Kind == Put || (in.Kind == CAS && o.OK)) {
			continue
		}
		f, seen := first[in.Key]
		switch {
		case !seen:
			first[in.Key] = write{in.Value, op.Return}
		case op.Call > f.return_ && in.Value != f.value && (at < 0 || op.Return < at):
			key, stale, at = in.Key, f.value, op.Return
		}
	}
	if at < 0 {
		return ops, false
	}
	for _, op := range ops {
		if op.Input.(Input).Key == key {
			out = append(out, op)
		}
	}
	out = append(out, porcupine.Operation{
		ClientId: 0,
		Input:    Input{Kind: Get, Key: key},
		Call:     at + 1,
		Output:   Output{Found: true, Value: stale},
		Return:   at + 2,
	})
	return out, true
}
