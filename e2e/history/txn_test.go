package history

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Builders for hand-made transaction histories (group 0 unless said).

func txop(c int, call, ret int64, in TxnInput, out TxnOutput) porcupine.Operation {
	if ret < 0 {
		ret = 1 << 40
		out = TxnOutput{Unknown: true}
	}
	return porcupine.Operation{ClientId: c, Input: in, Call: call, Output: out, Return: ret}
}

func tput(k int, v string) TxnOp { return TxnOp{Kind: TxnPut, Key: k, Value: v} }
func tdel(k int) TxnOp           { return TxnOp{Kind: TxnDelete, Key: k} }
func tget(k int) TxnOp           { return TxnOp{Kind: TxnGet, Key: k} }
func trange() TxnOp              { return TxnOp{Kind: TxnRange} }

func kvAt(k int, v string, ver, create, mod uint64) TxnKV {
	return TxnKV{Key: k, Value: v, Version: ver, CreateRevision: create, ModRevision: mod}
}

func found(kv TxnKV) TxnOpResult { return TxnOpResult{Found: true, KV: &kv} }

var missing = TxnOpResult{}

// plainPut is a put answered with its revision.
func plainPut(k int, v string) TxnInput { return TxnInput{Then: []TxnOp{tput(k, v)}} }
func putAt(rev uint64) TxnOutput        { return TxnOutput{Succeeded: true, Revision: rev} }

// plainGet is a get answered without a revision.
func plainGet(k int) TxnInput { return TxnInput{Then: []TxnOp{tget(k)}} }
func sawKV(kv TxnKV) TxnOutput {
	return TxnOutput{Succeeded: true, Results: []TxnOpResult{found(kv)}}
}
func sawNothing() TxnOutput { return TxnOutput{Succeeded: true, Results: []TxnOpResult{missing}} }

func ifValue(k int, v string) TxnCompare {
	return TxnCompare{Key: k, Target: CmpValue, Operator: OpEqual, Value: v}
}
func ifMod(k int, rev uint64) TxnCompare {
	return TxnCompare{Key: k, Target: CmpModRevision, Operator: OpEqual, Number: rev}
}
func ifAbsent(k int) TxnCompare { return TxnCompare{Key: k, Target: CmpAbsent, Operator: OpEqual} }

func txn(cmps []TxnCompare, then, els []TxnOp) TxnInput {
	return TxnInput{Compares: cmps, Then: then, Else: els}
}

func answered(ok bool, rev uint64, results ...TxnOpResult) TxnOutput {
	if results == nil {
		results = []TxnOpResult{}
	}
	return TxnOutput{Succeeded: ok, Revision: rev, Results: results}
}

func checkTxns(t *testing.T, ops ...porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	return porcupine.CheckOperationsTimeout(TxnModel, AnnotateTxnRevisions(ops), 10*time.Second)
}

// TestTxnModelAcceptsAndRejects: hand-made histories the model must accept
// (they are linearizable) or reject (each breaks one promise of KV.txn).
func TestTxnModelAcceptsAndRejects(t *testing.T) {
	cases := []struct {
		name string
		want porcupine.CheckResult
		ops  []porcupine.Operation
	}{
		{"sequential txns, puts and gets", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b"), tput(1, "c"), tget(0)}, nil),
				answered(true, 6, found(kvAt(0, "a", 1, 5, 5)), missing, found(kvAt(0, "b", 2, 5, 6)))),
			txop(1, 4, 5, txn(nil, []TxnOp{trange()}, nil),
				answered(true, 6, TxnOpResult{KVs: []TxnKV{kvAt(0, "b", 2, 5, 6), kvAt(1, "c", 1, 6, 6)}})),
			txop(1, 6, 7, txn([]TxnCompare{ifMod(1, 5)}, []TxnOp{tdel(1)}, []TxnOp{tdel(0), tget(1)}),
				answered(false, 7, found(kvAt(0, "b", 2, 5, 6)), found(kvAt(1, "c", 1, 6, 6)))),
			txop(0, 8, 9, plainGet(0), sawNothing()),
		}},
		{"compare reported as held although it failed", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn([]TxnCompare{ifValue(0, "x")}, []TxnOp{tput(1, "b")}, nil), answered(true, 6, missing)),
		}},
		{"compare reported as failed although it held", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn([]TxnCompare{ifAbsent(1)}, []TxnOp{tput(1, "b")}, nil), answered(false, 5)),
		}},
		{"torn transaction: a range sees one of its two writes", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, txn(nil, []TxnOp{tput(0, "a"), tput(1, "b")}, nil), answered(true, 5, missing, missing)),
			txop(1, 2, 3, txn(nil, []TxnOp{trange()}, nil), answered(true, 5, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5)}})),
		}},
		{"stale range after a txn", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn(nil, []TxnOp{tput(0, "b")}, nil), answered(true, 6, found(kvAt(0, "a", 1, 5, 5)))),
			txop(1, 4, 5, txn(nil, []TxnOp{trange()}, nil), answered(true, 6, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5)}})),
		}},
		{"a read served at a revision before a write that preceded it", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, plainPut(1, "b"), putAt(6)),
			txop(1, 4, 5, txn(nil, []TxnOp{tget(0)}, nil), answered(true, 5, found(kvAt(0, "a", 1, 5, 5)))),
		}},
		{"writes whose revisions go backwards", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(6)),
			txop(0, 2, 3, plainPut(1, "b"), putAt(5)),
		}},
		{"wrong version", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, plainPut(0, "b"), putAt(6)),
			txop(0, 4, 5, plainGet(0), sawKV(kvAt(0, "b", 1, 6, 6))),
		}},
		{"wrong create revision", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, plainPut(0, "b"), putAt(6)),
			txop(0, 4, 5, plainGet(0), sawKV(kvAt(0, "b", 2, 6, 6))),
		}},
		{"a value from the branch that did not run", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, txn([]TxnCompare{ifAbsent(0)}, []TxnOp{tput(0, "a")}, []TxnOp{tput(1, "z")}), answered(true, 5, missing)),
			txop(0, 2, 3, plainGet(1), sawKV(kvAt(1, "z", 1, 5, 5))),
		}},
		{"a delete that says the key did not exist", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn(nil, []TxnOp{tdel(0)}, nil), answered(true, 5, missing)),
		}},
		{"unknown txn that never applied", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, -1, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b"), tput(1, "c")}, nil), TxnOutput{}),
			txop(0, 3, 4, txn(nil, []TxnOp{trange()}, nil), answered(true, 5, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5)}})),
		}},
		{"unknown txn applied later, its revision learned from a read", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, -1, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b"), tput(1, "c")}, nil), TxnOutput{}),
			txop(0, 3, 4, plainGet(0), sawKV(kvAt(0, "a", 1, 5, 5))),
			txop(0, 5, 6, plainGet(1), sawKV(kvAt(1, "c", 1, 9, 9))),
			txop(0, 7, 8, txn([]TxnCompare{ifMod(0, 9)}, []TxnOp{tdel(1)}, nil), answered(true, 10, found(kvAt(1, "c", 1, 9, 9)))),
		}},
		{"unknown txn applied, but a read sees half of it", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, -1, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b"), tput(1, "c")}, nil), TxnOutput{}),
			txop(0, 5, 6, txn(nil, []TxnOp{trange()}, nil), answered(true, 9, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5), kvAt(1, "c", 1, 9, 9)}})),
		}},
		{"unknown txn applied twice", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, -1, txn(nil, []TxnOp{tput(1, "c")}, nil), TxnOutput{}),
			txop(0, 3, 4, plainGet(1), sawKV(kvAt(1, "c", 1, 6, 6))),
			txop(0, 5, 6, txn(nil, []TxnOp{tdel(1)}, nil), answered(true, 7, found(kvAt(1, "c", 1, 6, 6)))),
			txop(0, 7, 8, plainGet(1), sawKV(kvAt(1, "c", 1, 6, 6))),
		}},
		{"a compare against an unknown write's revision cannot hold", porcupine.Illegal, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, -1, plainPut(0, "b"), TxnOutput{}),
			txop(0, 3, 4, plainGet(0), sawKV(kvAt(0, "a", 1, 5, 5))),
			// Only a value written by the unknown put can make mod != 5
			// while no read showed it; the txn claims mod == 7 held.
			txop(0, 5, 6, txn([]TxnCompare{ifMod(0, 7)}, []TxnOp{tput(1, "x")}, nil), answered(true, 8, missing)),
		}},
		{"replayed txn without results", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b"), tget(0)}, nil), TxnOutput{Succeeded: true, Revision: 6}),
			txop(1, 4, 5, plainGet(0), sawKV(kvAt(0, "b", 2, 5, 6))),
		}},
		{"version order compares", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(0, 2, 3, plainPut(0, "b"), putAt(6)),
			txop(0, 4, 5, txn([]TxnCompare{{Key: 0, Target: CmpVersion, Operator: OpGreater, Number: 1}}, []TxnOp{tput(1, "c")}, nil),
				answered(true, 7, missing)),
			txop(0, 6, 7, txn([]TxnCompare{{Key: 0, Target: CmpValue, Operator: OpLess, Value: "b"}}, []TxnOp{tput(1, "d")}, nil),
				answered(false, 7)),
		}},
		{"concurrent txns in either order", porcupine.Ok, []porcupine.Operation{
			txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
			txop(1, 2, 10, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "b")}, nil), answered(true, 7, found(kvAt(0, "a", 1, 5, 5)))),
			txop(2, 3, 9, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(0, "c")}, nil), answered(false, 7)),
			txop(3, 4, 8, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(1, "d")}, nil), answered(true, 6, missing)),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkTxns(t, tc.ops...); got != tc.want {
				t.Fatalf("checked as %s, want %s", got, tc.want)
			}
		})
	}
}

// TestTxnModelPartitionsByGroup: the same keys in two groups are two
// stores' keys.
func TestTxnModelPartitionsByGroup(t *testing.T) {
	a := plainPut(0, "a")
	b := plainPut(0, "b")
	b.Group = 1
	getB := plainGet(0)
	getB.Group = 1
	if got := checkTxns(t,
		txop(0, 0, 1, a, putAt(5)),
		txop(0, 2, 3, b, putAt(6)),
		txop(0, 4, 5, getB, sawKV(kvAt(0, "b", 1, 6, 6))),
	); got != porcupine.Ok {
		t.Fatalf("checked as %s, want Ok", got)
	}
}

// TestWithFlippedTxnIsRejected: the negative control the e2e test runs
// must turn a linearizable history into an illegal one.
func TestWithFlippedTxnIsRejected(t *testing.T) {
	ops := []porcupine.Operation{
		txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
		txop(1, 2, 3, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(1, "b")}, nil), answered(true, 6, missing)),
		txop(0, 4, 5, txn(nil, []TxnOp{trange()}, nil), answered(true, 6, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5), kvAt(1, "b", 1, 6, 6)}})),
	}
	if got := checkTxns(t, ops...); got != porcupine.Ok {
		t.Fatalf("the history checks as %s, want Ok", got)
	}
	flipped, ok := WithFlippedTxn(AnnotateTxnRevisions(ops))
	if !ok {
		t.Fatal("no transaction to flip")
	}
	if got := porcupine.CheckOperationsTimeout(TxnModel, flipped, 10*time.Second); got != porcupine.Illegal {
		t.Fatalf("the flipped history checks as %s, want Illegal", got)
	}
	if _, ok := WithFlippedTxn(ops[:2]); ok {
		t.Fatal("flipped a transaction no read observed")
	}
}

// TestTxnRecorderFailures: a failed transaction that may write is
// pending forever; one that only reads is dropped.
func TestTxnRecorderFailures(t *testing.T) {
	r := NewTxnRecorder()
	r.Begin(0, plainPut(0, "a")).Fail()
	r.Begin(1, plainGet(0)).Fail()
	r.Begin(2, plainGet(0)).Return(sawKV(kvAt(0, "a", 1, 4, 4)))
	st := r.Stats()
	if st.Ops != 2 || st.Unknown != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v, want 2 ops, 1 unknown, 1 dropped", st)
	}
	ops := r.Operations()
	var pending porcupine.Operation
	for _, op := range ops {
		if op.Output.(TxnOutput).Unknown {
			pending = op
		}
	}
	if in := pending.Input.(TxnInput); in.Rev != 4 {
		t.Fatalf("the unknown put's revision is %d, want 4 (learned from the read)", in.Rev)
	}
	if res := CheckTxns(ops, 10*time.Second); res.Verdict != porcupine.Ok {
		t.Fatalf("checked as %s, want Ok", res.Verdict)
	}
}

// TestVisualizeTxns: the HTML view of a checked transaction history is
// written (it is what a failing e2e run leaves to look at).
func TestVisualizeTxns(t *testing.T) {
	ops := AnnotateTxnRevisions([]porcupine.Operation{
		txop(0, 0, 1, plainPut(0, "a"), putAt(5)),
		txop(1, 2, 3, txn([]TxnCompare{ifValue(0, "a")}, []TxnOp{tput(1, "b"), trange()}, []TxnOp{tget(0)}),
			answered(true, 6, missing, TxnOpResult{KVs: []TxnKV{kvAt(0, "a", 1, 5, 5), kvAt(1, "b", 1, 6, 6)}})),
		txop(2, 4, -1, txn([]TxnCompare{{Key: 1, Target: CmpVersion, Operator: OpLess, Number: 2}}, []TxnOp{tdel(0)}, nil), TxnOutput{}),
	})
	res := CheckTxns(ops, 10*time.Second)
	if res.Verdict != porcupine.Ok {
		t.Fatalf("checked as %s, want Ok", res.Verdict)
	}
	path := filepath.Join(t.TempDir(), "txns.html")
	if err := VisualizeTxns(res, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := `put k1=\"b\"`; !strings.Contains(string(b), want) {
		t.Fatalf("the visualization does not describe the transactions (no %s)", want)
	}
}
