package kvwire

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// randTxn returns a valid transaction of at most a few compares and
// operations per branch; each branch writes a key at most once.
func randTxn(rng *rand.Rand) Op {
	t := &Transaction{}
	for range rng.IntN(4) {
		c := Comparison{Key: append([]byte("c"), randBytes(rng)...), Target: Target(1 + rng.IntN(5)), Operator: Operator(rng.IntN(4))}
		switch c.Target {
		case TargetValue:
			c.Value = randBytes(rng)
		case TargetAbsent:
			c.Operator = Operator(rng.IntN(2))
		default:
			c.Number = rng.Uint64()
		}
		t.Compares = append(t.Compares, c)
	}
	branch := func() []Op {
		var ops []Op
		for i := range rng.IntN(4) {
			o := canonicalOp(Op{Kind: []Kind{Put, Delete, Get, Range}[rng.IntN(4)], Seq: rng.Uint64(),
				Key: []byte{'k', byte(i)}, Value: randBytes(rng), After: randBytes(rng), Limit: rng.Uint32(),
				Serializable: rng.IntN(2) == 0, Prefix: rng.IntN(2) == 0})
			ops = append(ops, o)
		}
		return ops
	}
	t.Then, t.Else = branch(), branch()
	return Op{Kind: Txn, Seq: rng.Uint64(), Serializable: rng.IntN(2) == 0, Txn: t}
}

// randTxnResult returns a valid result of a transaction.
func randTxnResult(rng *rand.Rand) Result {
	r := Result{Revision: rng.Uint64(), Succeeded: rng.IntN(2) == 0, Txn: &TxnResult{Replayed: rng.IntN(4) == 0}}
	if r.Txn.Replayed {
		r.Txn.Results = []Result{}
		return r
	}
	r.Txn.Results = make([]Result, rng.IntN(4))
	for i := range r.Txn.Results {
		kind := []Kind{Put, Delete, Get, Range}[rng.IntN(4)]
		nr := randResult(rng, kind)
		if nr.Err == nil {
			nr.Kind = kind
		}
		r.Txn.Results[i] = nr
	}
	return r
}

// A transaction decodes to what was encoded and re-encodes to the same
// bytes; so does its result.
func TestTxnRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	for range 2000 {
		o := randTxn(rng)
		b := encodeOp(t, &o)
		got, err := DecodeOp(readOp(t, b))
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Fatalf("encoded %+v\ndecoded %+v", *o.Txn, *got.Txn)
		}
		if again := encodeOp(t, &got); string(again) != string(b) {
			t.Fatalf("%+v re-encodes differently", o)
		}

		r := randTxnResult(rng)
		_, seg := newMessage(t)
		dst, err := schema.NewRootResult(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := EncodeResult(dst, Txn, &r); err != nil {
			t.Fatal(err)
		}
		back, err := DecodeResult(dst, Txn)
		if err != nil || !reflect.DeepEqual(back, r) {
			t.Fatalf("result %+v decoded as %+v, %v", r, back, err)
		}
	}
}

// Check refuses what no store would run: one message per mistake, with
// the code invalidArgument.
func TestTxnCheckRefusesMalformedTransactions(t *testing.T) {
	k := []byte("k")
	for _, tc := range []struct {
		name string
		txn  Transaction
		want string
	}{
		{"key written twice", Transaction{Then: []Op{{Kind: Put, Key: k}, {Kind: Delete, Key: k}}}, "written twice"},
		{"key written twice in else", Transaction{Else: []Op{{Kind: Put, Key: k}, {Kind: Put, Key: k}}}, "txn else operation 1"},
		{"cas inside", Transaction{Then: []Op{{Kind: CAS, Key: k}}}, "a cas cannot run inside a txn"},
		{"txn inside", Transaction{Then: []Op{{Kind: Txn, Txn: &Transaction{}}}}, "a txn cannot run inside a txn"},
		{"empty put key", Transaction{Then: []Op{{Kind: Put}}}, "put of an empty key"},
		{"empty compare key", Transaction{Compares: []Comparison{{Target: TargetVersion}}}, "empty key"},
		{"no target", Transaction{Compares: []Comparison{{Key: k}}}, "unknown target"},
		{"absence ordered", Transaction{Compares: []Comparison{{Key: k, Target: TargetAbsent, Operator: Less}}}, "absence takes = or != only"},
		{"bad operator", Transaction{Compares: []Comparison{{Key: k, Target: TargetValue, Operator: 9}}}, "unknown operator"},
		{"put under a deleted prefix", Transaction{Then: []Op{{Kind: Delete, Key: []byte("p/"), Prefix: true}, {Kind: Put, Key: []byte("p/1")}}},
			`operation 1: it writes keys under prefix "p/", which operation 0 deletes`},
		{"put before a deleted prefix", Transaction{Else: []Op{{Kind: Put, Key: []byte("p/1")}, {Kind: Delete, Key: []byte("p/"), Prefix: true}}},
			`txn else operation 1: it deletes prefix "p/", under which operation 0 writes key "p/1"`},
		{"delete under a deleted prefix", Transaction{Then: []Op{{Kind: Delete, Key: []byte("p/1")}, {Kind: Delete, Key: []byte("p/"), Prefix: true}}},
			"under which operation 0 writes"},
		{"overlapping prefixes", Transaction{Then: []Op{{Kind: Delete, Key: []byte("p/"), Prefix: true}, {Kind: Delete, Key: []byte("p"), Prefix: true}}},
			"which operation 0 deletes"},
		{"empty prefix", Transaction{Then: []Op{{Kind: Delete, Prefix: true}}}, "delete of the empty prefix refused"},
		{"prefix on a put", Transaction{Then: []Op{{Kind: Put, Key: k, Prefix: true}}}, "a put takes no prefix flag"},
	} {
		err := tc.txn.Check()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			continue
		}
		if c := errCode(t, err); c != schema.ErrorCode_invalidArgument {
			t.Errorf("%s: code %v", tc.name, c)
		}
	}
	// The same key written once in each branch, and read and written in
	// one, is fine.
	ok := Transaction{Then: []Op{{Kind: Get, Key: k}, {Kind: Put, Key: k}}, Else: []Op{{Kind: Delete, Key: k}}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	// A prefix delete beside writes outside it, reads under it, and the
	// same prefix deleted in the other branch are fine.
	p := []byte("p/")
	ok = Transaction{Then: []Op{{Kind: Range, Key: p}, {Kind: Delete, Key: p, Prefix: true}, {Kind: Put, Key: []byte("p")},
		{Kind: Get, Key: []byte("p/1")}, {Kind: Delete, Key: []byte("q/"), Prefix: true}}, Else: []Op{{Kind: Delete, Key: p, Prefix: true}}}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
}

// encodeTxnCall returns KV.txn's arguments for o.
func encodeTxnCall(t *testing.T, o *Op) schema.KV_txn_Params {
	t.Helper()
	_, seg := newMessage(t)
	p, err := schema.NewRootKV_txn_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	p.SetSession(3)
	p.SetSeq(o.Seq)
	dst, err := p.NewOp()
	if err != nil {
		t.Fatal(err)
	}
	if err := encodeTxn(dst, o); err != nil {
		t.Fatal(err)
	}
	return p
}

// A transaction counts its compares and operations towards the batch's
// operation limit and its bytes towards the byte limit, in a batch and
// in KV.txn alike.
func TestTxnCountsTowardsTheBatchLimits(t *testing.T) {
	lim := testLimits // MaxBatchOps 4
	puts := func(n int) []Op {
		ops := make([]Op, n)
		for i := range ops {
			ops[i] = Op{Kind: Put, Key: []byte{'k', byte(i)}}
		}
		return ops
	}
	small := Op{Kind: Txn, Seq: 1, Txn: &Transaction{Then: puts(2)}}
	big := Op{Kind: Txn, Seq: 2, Txn: &Transaction{Then: puts(lim.MaxBatchOps)}}

	if _, o, err := DecodeTxnCall(encodeTxnCall(t, &small), lim); err != nil || !reflect.DeepEqual(o, small) {
		t.Fatalf("small txn: %+v, %v", o, err)
	}
	_, _, err := DecodeTxnCall(encodeTxnCall(t, &big), lim)
	if err == nil || errCode(t, err) != schema.ErrorCode_tooLarge || !strings.Contains(err.Error(), "a txn counts its compares and operations") {
		t.Fatalf("txn over the op limit: %v", err)
	}

	// In a batch: the first txn takes 3 of 4, so a second is refused
	// and the get after it still fits.
	p := encodeRequest(t, Header{Session: 1}, []Op{small, small}, nil)
	req, err := DecodeRequest(p, lim)
	if err != nil {
		t.Fatal(err)
	}
	if req.Errs == nil || req.Errs[0] != nil || req.Errs[1] == nil || errCode(t, req.Errs[1]) != schema.ErrorCode_tooLarge {
		t.Fatalf("errors %v, want the second txn alone refused", req.Errs)
	}

	// Bytes: a value over the value limit inside a branch is named.
	fat := Op{Kind: Txn, Seq: 3, Txn: &Transaction{Then: []Op{{Kind: Put, Key: []byte("k"), Value: make([]byte, lim.MaxValueSize+1)}}}}
	if _, _, err := DecodeTxnCall(encodeTxnCall(t, &fat), lim); err == nil || errCode(t, err) != schema.ErrorCode_tooLarge ||
		!strings.Contains(err.Error(), "put value") {
		t.Fatalf("txn with a large value: %v", err)
	}
}

// A transaction nested in a transaction, or a compare-and-swap in one,
// is refused as it is read: a hand-made message can hold them.
func TestNestedTxnOnTheWireIsRefused(t *testing.T) {
	for _, which := range []string{"txn", "cas"} {
		_, seg := newMessage(t)
		dst, err := schema.NewRootOp(seg)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := dst.NewTxn()
		if err != nil {
			t.Fatal(err)
		}
		l, err := tx.NewThen(1)
		if err != nil {
			t.Fatal(err)
		}
		if which == "txn" {
			_, err = l.At(0).NewTxn()
		} else {
			_, err = l.At(0).NewCas()
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = DecodeOp(dst)
		if err == nil || errCode(t, err) != schema.ErrorCode_invalidArgument || !strings.Contains(err.Error(), "cannot run inside a txn") {
			t.Fatalf("%s in a txn: %v", which, err)
		}
	}
}

// A transaction's lists of empty structs cost the message a word per
// element at least: a few bytes claiming millions of compares are
// refused before anything is allocated.
func TestTxnListOfEmptyStructsIsRefused(t *testing.T) {
	_, seg := newMessage(t)
	dst, err := schema.NewRootOp(seg)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := dst.NewTxn()
	if err != nil {
		t.Fatal(err)
	}
	// A composite list of zero-sized elements: 1<<24 compares in a few
	// words.
	l, err := capnp.NewCompositeList(seg, capnp.ObjectSize{}, 1<<24)
	if err != nil {
		t.Fatal(err)
	}
	if err := capnp.Struct(tx).SetPtr(0, l.ToPtr()); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeOp(dst); err == nil {
		t.Fatal("a txn of 16 M empty compares decoded")
	}
}
