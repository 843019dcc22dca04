package kv

import (
	"bytes"
	"math"
	"reflect"
	"testing"
)

// txnCommands covers a transaction's fields, valid or not (the decoder
// leaves the validation to Apply).
func txnCommands() []Command {
	return []Command{
		{Kind: CmdBatch, ID: 20, Time: 10, Session: 7, Ops: []WriteOp{
			{Seq: 9, Type: OpTxn, Txn: &Txn{
				Compares: []TxnCompare{
					{Key: []byte("a"), Target: TargetValue, Operator: NotEqual, Value: []byte("v")},
					{Key: []byte("b"), Target: TargetModRevision, Operator: Greater, Number: math.MaxUint64},
					{Key: []byte("c"), Target: TargetAbsent},
				},
				Then: []TxnOp{{Type: TxnPut, Key: []byte("a"), Value: []byte("w")}, {Type: TxnRange, Key: []byte("p"), After: []byte("pq"), Limit: math.MaxUint32}},
				Else: []TxnOp{{Type: TxnGet, Key: []byte("a")}, {Type: TxnDelete, Key: []byte("b")}},
			}},
			put(10, "k", "v"),
			{Seq: 11, Type: OpTxn, Txn: &Txn{}},
			{Seq: 12, Type: OpTxn, Txn: &Txn{Compares: []TxnCompare{{Target: 99, Operator: 77}}, Then: []TxnOp{{Type: 63}}}}, // under 0x40: the two high bits flag a lease and a prefix
		}},
	}
}

// txnOf wraps a transaction in a write.
func txnOf(seq uint64, t *Txn) WriteOp { return WriteOp{Seq: seq, Type: OpTxn, Txn: t} }

func tput(k, v string) TxnOp { return TxnOp{Type: TxnPut, Key: []byte(k), Value: []byte(v)} }
func tdel(k string) TxnOp    { return TxnOp{Type: TxnDelete, Key: []byte(k)} }
func tget(k string) TxnOp    { return TxnOp{Type: TxnGet, Key: []byte(k)} }

// Every write of a transaction takes the same revision, one above the
// store's before it; its reads see the writes before them in the branch.
func TestTxnWritesShareOneRevision(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.one(sess, put(1, "b", "old")) // revision 1
	r := d.one(sess, txnOf(2, &Txn{Then: []TxnOp{
		tput("a", "1"), tget("a"), tdel("b"), tput("c", "3"),
		{Type: TxnRange, Key: []byte("")},
	}}))
	if r.Code != OK || !r.Succeeded || r.Revision != 2 {
		t.Fatalf("txn: %+v", r)
	}
	res := r.Txn.Results
	if got := res[1]; !got.Found || string(got.KV.Value) != "1" || got.KV.ModRevision != 2 {
		t.Errorf("get after put in the txn: %+v", got)
	}
	if got := res[2]; !got.Found || string(got.KV.Value) != "old" {
		t.Errorf("delete: %+v", got)
	}
	if got := res[4].KVs; len(got) != 2 || string(got[0].Key) != "a" || string(got[1].Key) != "c" {
		t.Errorf("range in the txn: %+v", got)
	}
	for _, k := range []string{"a", "c"} {
		kv, _, rev := d.s.Get([]byte(k))
		if kv.ModRevision != 2 || kv.CreateRevision != 2 || kv.Version != 1 || rev != 2 {
			t.Errorf("%s: %+v at %d, want written at revision 2", k, kv, rev)
		}
	}
	// A branch that writes nothing (a delete of a missing key) leaves the
	// revision.
	r = d.one(sess, txnOf(3, &Txn{Then: []TxnOp{tdel("missing"), tget("a")}}))
	if r.Code != OK || r.Revision != 2 || d.s.Revision() != 2 {
		t.Fatalf("txn without effect: %+v, store at %d", r, d.s.Revision())
	}
}

// The compares hold as etcd's do: a missing key has version and
// revisions 0 and fails every value compare.
func TestTxnComparesFollowEtcd(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.one(sess, put(1, "k", "m")) // k: create 1, mod 1, version 1
	d.one(sess, put(2, "k", "m")) // k: mod 2, version 2
	cmp := func(key string, target TxnTarget, op TxnOperator, value string, n uint64) TxnCompare {
		return TxnCompare{Key: []byte(key), Target: target, Operator: op, Value: []byte(value), Number: n}
	}
	for i, tc := range []struct {
		c    TxnCompare
		want bool
	}{
		{cmp("k", TargetValue, Equal, "m", 0), true},
		{cmp("k", TargetValue, Less, "n", 0), true},
		{cmp("k", TargetValue, Greater, "l", 0), true},
		{cmp("k", TargetValue, NotEqual, "m", 0), false},
		{cmp("x", TargetValue, NotEqual, "m", 0), false}, // missing: every value compare fails
		{cmp("k", TargetVersion, Equal, "", 2), true},
		{cmp("k", TargetCreateRevision, Equal, "", 1), true},
		{cmp("k", TargetModRevision, Greater, "", 1), true},
		{cmp("k", TargetModRevision, Less, "", 2), false},
		{cmp("x", TargetVersion, Equal, "", 0), true},
		{cmp("x", TargetModRevision, Less, "", 1), true},
		{cmp("x", TargetAbsent, Equal, "", 0), true},
		{cmp("k", TargetAbsent, Equal, "", 0), false},
		{cmp("k", TargetAbsent, NotEqual, "", 0), true},
	} {
		r := d.s.ReadTxn(&Txn{Compares: []TxnCompare{tc.c}})
		if r.Code != OK || r.Succeeded != tc.want {
			t.Errorf("%d: %+v: %+v, want succeeded %v", i, tc.c, r, tc.want)
		}
	}
}

// A transaction is refused as a whole, nothing applied, when one branch
// writes a key twice, as etcd does; a read may not write.
func TestTxnRefusesAKeyWrittenTwice(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	r := d.one(sess, txnOf(1, &Txn{Else: []TxnOp{tput("a", "1"), tput("b", "2"), tdel("a")}}))
	if r.Code != InvalidArgument || r.Message != msgTxnDupKey || d.s.Len() != 0 || d.s.Revision() != 0 {
		t.Fatalf("txn writing a twice: %+v; store holds %d keys at %d", r, d.s.Len(), d.s.Revision())
	}
	if r := d.s.ReadTxn(&Txn{Then: []TxnOp{tput("a", "1")}}); r.Code != InvalidArgument || d.s.Len() != 0 {
		t.Fatalf("read txn with a put: %+v", r)
	}
}

// A retried transaction is answered from the session's saved result:
// its branch and revision, without the branch's results, and is not
// applied again; the snapshot holds no more than for any write.
func TestRetriedTxnAnswersItsSavedBranch(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	tx := &Txn{Compares: []TxnCompare{{Key: []byte("n"), Target: TargetAbsent}},
		Then: []TxnOp{tput("n", "1")}, Else: []TxnOp{tput("other", "x")}}
	first := d.one(sess, txnOf(1, tx))
	if first.Code != OK || !first.Succeeded || first.Txn == nil || len(first.Txn.Results) != 1 {
		t.Fatalf("first: %+v", first)
	}
	again := d.one(sess, txnOf(1, tx))
	want := first
	want.Txn = nil
	if !reflect.DeepEqual(again, want) || d.s.Revision() != 1 || d.s.Len() != 1 {
		t.Fatalf("retry: %+v, want %+v; store at %d with %d keys", again, want, d.s.Revision(), d.s.Len())
	}
	// The saved result survives a snapshot, which restores byte for byte.
	b := snapBytes(t, d.s)
	s2 := restored(t, Config{}, b)
	if !bytes.Equal(snapBytes(t, s2), b) {
		t.Fatal("snapshot after a txn does not restore to itself")
	}
	d.s = s2
	if r := d.one(sess, txnOf(1, tx)); !reflect.DeepEqual(r, want) {
		t.Fatalf("retry after restore: %+v, want %+v", r, want)
	}
}

// A batch of transactions within the limits encodes within MaxEntrySize:
// a txn's compares and operations each count as an op.
func TestMaxEntrySizeBoundsTransactions(t *testing.T) {
	for _, cfg := range []Config{{}, {MaxBatchOps: 7, MaxKeySize: 5, MaxValueSize: 7, MaxBatchBytes: 1}} {
		lim := cfg.withDefaults()
		budget := lim.MaxBatchBytes
		take := func(limit int) []byte {
			n := min(limit, budget)
			budget -= n
			return bytes.Repeat([]byte{'x'}, n)
		}
		for _, items := range []int{0, 1, 2} {
			budget = lim.MaxBatchBytes
			cmd := Command{Kind: CmdBatch, ID: math.MaxUint64, Time: math.MinInt64, Session: math.MaxUint64, AckedBelow: math.MaxUint64}
			for ops := 0; ops+1+items <= lim.MaxBatchOps; ops += 1 + items {
				tx := &Txn{}
				for i := range items {
					if i%2 == 0 {
						tx.Compares = append(tx.Compares, TxnCompare{Key: take(lim.MaxKeySize), Target: TargetValue, Operator: Greater,
							Value: take(lim.MaxValueSize), Number: math.MaxUint64})
					} else {
						tx.Then = append(tx.Then, TxnOp{Type: TxnRange, Key: take(lim.MaxKeySize), Value: take(lim.MaxValueSize),
							After: take(lim.MaxKeySize), Limit: math.MaxUint32})
					}
				}
				cmd.Ops = append(cmd.Ops, WriteOp{Seq: math.MaxUint64, Type: OpTxn, Txn: tx})
			}
			if got, limit := len(cmd.AppendBinary(nil)), cfg.MaxEntrySize(); got > limit {
				t.Errorf("config %+v, %d items per txn: a command within the limits encodes to %d bytes, over MaxEntrySize %d", cfg, items, got, limit)
			}
		}
	}
}
