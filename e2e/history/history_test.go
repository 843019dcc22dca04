package history

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds an operation by hand: client c, called at call, answered at ret
// (-1: pending forever).
func op(c int, call, ret int64, in Input, out Output) porcupine.Operation {
	if ret < 0 {
		ret = 1 << 40
		out.Unknown = true
	}
	return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
}

func put(k, v string) Input        { return Input{Kind: Put, Key: k, Value: v} }
func get(k string) Input           { return Input{Kind: Get, Key: k} }
func cas(k, from, to string) Input { return Input{Kind: CAS, Key: k, Expect: from, Value: to} }
func casAbsent(k, to string) Input { return Input{Kind: CAS, Key: k, ExpectAbsent: true, Value: to} }
func saw(v string) Output          { return Output{Found: true, Value: v} }

var (
	ok      = Output{}
	absent  = Output{}
	casOK   = Output{OK: true}
	casFail = Output{}
)

func check(t *testing.T, ops ...porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	return porcupine.CheckOperationsTimeout(Model, ops, 10*time.Second)
}

func TestModel(t *testing.T) {
	cases := []struct {
		name string
		want porcupine.CheckResult
		ops  []porcupine.Operation
	}{
		{"sequential put/get", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, get("x"), absent),
			op(0, 2, 3, put("x", "1"), ok),
			op(0, 4, 5, get("x"), saw("1")),
		}},
		{"stale read", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, 3, put("x", "2"), ok),
			op(1, 4, 5, get("x"), saw("1")),
		}},
		{"read of a value never written", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(1, 2, 3, get("x"), saw("7")),
		}},
		{"lost write: absent after an acknowledged put", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(1, 2, 3, get("x"), absent),
		}},
		{"concurrent read may see either", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, 10, put("x", "2"), ok),
			op(1, 3, 4, get("x"), saw("1")),
			op(2, 5, 6, get("x"), saw("2")),
		}},
		{"reads may not go back in time", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, 10, put("x", "2"), ok),
			op(1, 3, 4, get("x"), saw("2")),
			op(2, 5, 6, get("x"), saw("1")),
		}},
		{"unknown put may never apply", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, -1, put("x", "2"), Output{}),
			op(1, 5, 6, get("x"), saw("1")),
		}},
		{"unknown put may apply later", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, -1, put("x", "2"), Output{}),
			op(1, 5, 6, get("x"), saw("1")),
			op(1, 7, 8, get("x"), saw("2")),
		}},
		{"unknown put applies at most once in time", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("x", "1"), ok),
			op(0, 2, -1, put("x", "2"), Output{}),
			op(1, 5, 6, get("x"), saw("2")),
			op(1, 7, 8, get("x"), saw("1")),
		}},
		{"cas chain", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, casAbsent("c", "0"), casOK),
			op(0, 2, 3, cas("c", "0", "1"), casOK),
			op(1, 4, 5, cas("c", "0", "1"), casFail),
			op(1, 6, 7, get("c"), saw("1")),
		}},
		{"cas succeeded against the wrong value", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("c", "5"), ok),
			op(1, 2, 3, cas("c", "4", "6"), casOK),
		}},
		{"cas failed although it matched", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("c", "5"), ok),
			op(1, 2, 3, cas("c", "5", "6"), casFail),
		}},
		{"double-applied increment", porcupine.Illegal, []porcupine.Operation{
			op(0, 0, 1, put("c", "0"), ok),
			op(0, 2, 3, cas("c", "0", "1"), casOK),
			// a retried increment reported as failed after it applied
			op(1, 4, 5, cas("c", "1", "2"), casFail),
			op(1, 6, 7, get("c"), saw("2")),
		}},
		{"unknown cas either way", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("c", "0"), ok),
			op(0, 2, -1, cas("c", "0", "1"), Output{}),
			op(1, 3, 4, get("c"), saw("1")),
		}},
		{"keys are independent", porcupine.Ok, []porcupine.Operation{
			op(0, 0, 1, put("a", "1"), ok),
			op(1, 0, 1, put("b", "1"), ok),
			op(0, 2, 3, get("b"), saw("1")),
			op(1, 2, 3, get("a"), saw("1")),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := check(t, tc.ops...); got != tc.want {
				t.Fatalf("check = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRecorderConcurrentClients(t *testing.T) {
	r := NewRecorder()
	// A serial register shared by goroutines under a lock is linearizable
	// by construction; the recorder must keep it so.
	var mu sync.Mutex
	state := map[string]string{}
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				k := []string{"a", "b"}[i%2]
				if i%3 == 0 {
					v := string(rune('a'+c)) + string(rune('0'+i%10))
					call := r.Begin(c, put(k, v))
					mu.Lock()
					state[k] = v
					mu.Unlock()
					call.Return(ok)
					continue
				}
				call := r.Begin(c, get(k))
				mu.Lock()
				v, found := state[k]
				mu.Unlock()
				call.Return(Output{Found: found, Value: v})
			}
		}(c)
	}
	wg.Wait()
	res := r.Check(10 * time.Second)
	if res.Verdict != porcupine.Ok || res.Ops != 400 {
		t.Fatalf("verdict %v over %d ops, want Ok over 400", res.Verdict, res.Ops)
	}
}

func TestRecorderFailures(t *testing.T) {
	r := NewRecorder()
	r.Begin(0, put("x", "1")).Return(ok)
	r.Begin(0, get("x")).Fail()           // dropped
	r.Begin(1, put("x", "2")).Fail()      // pending forever
	r.Begin(0, get("x")).Return(saw("1")) // the unknown put did not apply yet
	r.Begin(0, get("x")).Return(saw("2")) // now it did
	st := r.Stats()
	if st.Ops != 4 || st.Unknown != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	ops := r.Operations()
	var last int64
	for _, o := range ops {
		if !o.Output.(Output).Unknown && o.Return > last {
			last = o.Return
		}
	}
	for _, o := range ops {
		if o.Output.(Output).Unknown && o.Return <= last {
			t.Fatalf("unknown op returns at %d, not after the last answer %d", o.Return, last)
		}
	}
	if res := r.Check(10 * time.Second); res.Verdict != porcupine.Ok {
		t.Fatalf("verdict %v", res.Verdict)
	}
	r.Begin(0, get("x")).Return(saw("1")) // back in time
	res := r.Check(10 * time.Second)
	if res.Verdict != porcupine.Illegal {
		t.Fatalf("verdict %v, want Illegal", res.Verdict)
	}
	path := filepath.Join(t.TempDir(), "history.html")
	if err := res.Visualize(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "put(x, \\\"2\\\")") && !strings.Contains(string(b), "put(x, \"2\")") {
		t.Fatalf("visualization does not describe the operations (%d bytes)", len(b))
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct {
		in   Input
		out  Output
		want string
	}{
		{put("k", "v"), ok, `put(k, "v") -> ok`},
		{get("k"), absent, `get(k) -> <absent>`},
		{get("k"), saw("v"), `get(k) -> "v"`},
		{cas("k", "a", "b"), casOK, `cas(k, "a" -> "b") -> ok`},
		{casAbsent("k", "b"), casFail, `cas(k, <absent> -> "b") -> failed`},
		{put("k", "v"), Output{Unknown: true}, `put(k, "v") -> ?`},
	} {
		if got := Describe(tc.in, tc.out); got != tc.want {
			t.Errorf("Describe = %s, want %s", got, tc.want)
		}
	}
	if Put.String() != "put" || Kind(9).String() != "Kind(9)" {
		t.Error("Kind.String")
	}
}

func TestWithStaleRead(t *testing.T) {
	ops := []porcupine.Operation{
		op(0, 0, 1, put("x", "1"), ok),
		op(1, 0, 5, casAbsent("y", "1"), casOK),
		op(0, 2, 3, put("x", "2"), ok),
		op(0, 4, 5, get("x"), saw("2")),
	}
	if check(t, ops...) != porcupine.Ok {
		t.Fatal("base history should be linearizable")
	}
	mutated, found := WithStaleRead(ops)
	if !found || len(mutated) != 4 { // the three operations on x, and the stale read
		t.Fatalf("WithStaleRead found %v, %d ops", found, len(mutated))
	}
	if got := check(t, mutated...); got != porcupine.Illegal {
		t.Fatalf("history with a stale read: %v, want Illegal", got)
	}
	// Overlapping writes do not make a stale read certain.
	if _, found := WithStaleRead([]porcupine.Operation{
		op(0, 0, 3, put("x", "1"), ok),
		op(1, 1, 4, put("x", "2"), ok),
	}); found {
		t.Fatal("found a stale read for concurrent writes")
	}
}

func TestWithStaleReadStaysCheapWithManyPendingWrites(t *testing.T) {
	var ops []porcupine.Operation
	cur := ""
	var at int64
	for i := 0; i < 2000; i++ {
		at += 2
		switch {
		case i%50 == 7: // a write whose outcome is unknown and that never applies
			ops = append(ops, op(i%4, at, -1, put("k", fmt.Sprintf("lost%d", i)), Output{}))
		case i%3 == 0:
			v := fmt.Sprintf("v%d", i)
			ops = append(ops, op(i%4, at, at+1, put("k", v), ok))
			cur = v
		default:
			ops = append(ops, op(i%4, at, at+1, get("k"), saw(cur)))
		}
	}
	ops[0] = op(0, 0, 1, put("k", "v0"), ok) // keep the first write acknowledged
	if got := check(t, ops...); got != porcupine.Ok {
		t.Fatalf("base history: %v", got)
	}
	mutated, found := WithStaleRead(ops)
	if !found {
		t.Fatal("no overwrite found")
	}
	start := time.Now()
	if got := porcupine.CheckOperationsTimeout(Model, mutated, 10*time.Second); got != porcupine.Illegal {
		t.Fatalf("with a stale read: %v after %v, want Illegal", got, time.Since(start))
	}
}
