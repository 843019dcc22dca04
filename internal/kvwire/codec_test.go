package kvwire

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// testSeed returns a seed for a randomized test, logged if the test fails.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	})
	return seed
}

// randBytes returns nil, an empty slice or a few random bytes: the codec
// keeps the three apart.
func randBytes(rng *rand.Rand) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, 1+rng.IntN(40))
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// canonicalOp is o with only the fields its kind carries on the wire.
func canonicalOp(o Op) Op {
	c := Op{Kind: o.Kind, Seq: o.Seq, Key: o.Key}
	switch o.Kind {
	case Put:
		c.Value = o.Value
	case Get:
		c.Serializable = o.Serializable
	case Delete:
		c.Prefix = o.Prefix && len(o.Key) > 0 // the empty prefix is refused
	case CAS:
		c.Value, c.DeleteOnSuccess, c.Compare = o.Value, o.DeleteOnSuccess, o.Compare
		switch o.Compare {
		case CompareValue:
			c.CompareValue = o.CompareValue
		case CompareModRevision:
			c.CompareRevision = o.CompareRevision
		}
	case Range:
		c.After, c.Limit, c.Serializable = o.After, o.Limit, o.Serializable
	}
	return c
}

// randOp returns a valid operation.
func randOp(rng *rand.Rand) Op {
	return canonicalOp(Op{Kind: Kind(1 + rng.IntN(5)), Seq: rng.Uint64(), Key: randBytes(rng), Value: randBytes(rng),
		Compare: CompareKind(1 + rng.IntN(3)), CompareValue: randBytes(rng), CompareRevision: rng.Uint64(),
		DeleteOnSuccess: rng.IntN(2) == 0, After: randBytes(rng), Limit: rng.Uint32(), Serializable: rng.IntN(2) == 0,
		Prefix: rng.IntN(2) == 0})
}

func randKeyValue(rng *rand.Rand) KeyValue {
	return KeyValue{Key: randBytes(rng), Value: randBytes(rng),
		CreateRevision: rng.Uint64(), ModRevision: rng.Uint64(), Version: rng.Uint64()}
}

// randResult returns a valid result of an operation of kind.
func randResult(rng *rand.Rand, kind Kind) Result {
	r := Result{Revision: rng.Uint64()}
	if rng.IntN(4) == 0 {
		msg := ""
		if rng.IntN(2) == 0 {
			msg = "why " + string(rune('a'+rng.IntN(26)))
		}
		r.Err = &Error{Code: schema.ErrorCode(rng.IntN(10)), Message: msg, LeaderHint: rng.Uint64()}
		return r
	}
	switch kind {
	case Put, Get:
		r.Found = rng.IntN(2) == 0
	case Delete, CAS:
		r.Succeeded, r.Found = rng.IntN(2) == 0, rng.IntN(2) == 0
		if kind == Delete && r.Succeeded {
			r.Count = 1 + rng.Uint64N(1<<40)
		}
	case Range:
		r.More = rng.IntN(2) == 0
		r.KVs = make([]KeyValue, rng.IntN(4))
		for i := range r.KVs {
			r.KVs[i] = randKeyValue(rng)
		}
	}
	if r.Found {
		r.KV = randKeyValue(rng)
	}
	return r
}

func newMessage(t testing.TB) (*capnp.Message, *capnp.Segment) {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	return msg, seg
}

func marshal(t testing.TB, msg *capnp.Message) []byte {
	t.Helper()
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeOp returns o encoded as a message of its own.
func encodeOp(t testing.TB, o *Op) []byte {
	t.Helper()
	msg, seg := newMessage(t)
	dst, err := schema.NewRootOp(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := EncodeOp(dst, o); err != nil {
		t.Fatal(err)
	}
	return marshal(t, msg)
}

func readOp(t testing.TB, b []byte) schema.Op {
	t.Helper()
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	src, err := schema.ReadRootOp(msg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// An operation decodes to what was encoded, down to nil and empty byte
// slices, and re-encodes to the same bytes (a follower forwards a request
// as its client sent it).
func TestOpsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	for range 5000 {
		o := randOp(rng)
		b := encodeOp(t, &o)
		got, err := DecodeOp(readOp(t, b))
		if err != nil || !reflect.DeepEqual(got, o) {
			t.Fatalf("%+v decodes as %+v, %v", o, got, err)
		}
		if again := encodeOp(t, &got); !bytes.Equal(again, b) {
			t.Fatalf("%+v re-encodes as\n%x\nnot\n%x", o, again, b)
		}
	}
}

// A result decodes to what was encoded.
func TestResultsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	for range 5000 {
		kind := Kind(1 + rng.IntN(5))
		r := randResult(rng, kind)
		_, seg := newMessage(t)
		dst, err := schema.NewRootResult(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := EncodeResult(dst, kind, &r); err != nil {
			t.Fatal(err)
		}
		got, err := DecodeResult(dst, kind)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("the %v result %+v decodes as %+v, %v", kind, r, got, err)
		}
	}
}

// A result of another kind than the operation's is malformed.
func TestResultOfAnotherKindIsMalformed(t *testing.T) {
	_, seg := newMessage(t)
	dst, err := schema.NewRootResult(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := EncodeResult(dst, Get, &Result{Found: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeResult(dst, Delete); err == nil || err.Error() != "a get result" {
		t.Fatalf("a get result read as a delete's: %v, want \"a get result\"", err)
	}
	if _, err := DecodeResult(dst, 0); err == nil {
		t.Fatal("a result read for no operation kind: no error")
	}
}

// A range result claiming more entries than its message could hold is
// malformed, however few bytes it is.
func TestRangeOfEmptyStructsIsMalformed(t *testing.T) {
	_, seg := newMessage(t)
	dst, err := schema.NewRootResult(seg)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := dst.NewRange()
	if err != nil {
		t.Fatal(err)
	}
	// A list of a million structs of no size: a handful of words.
	l, err := capnp.NewCompositeList(seg, capnp.ObjectSize{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := capnp.Struct(rr).SetPtr(0, l.ToPtr()); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeResult(dst, Range); err == nil || !strings.Contains(err.Error(), "a list of 1048576 elements") {
		t.Fatalf("a range of a million empty structs: %v, want malformed", err)
	}
}

var testLimits = Limits{MaxKeySize: 8, MaxValueSize: 16, MaxBatchOps: 4, MaxBatchBytes: 40}

// encodeRequest returns a batch of ops; damage, if not nil, changes op
// i's struct after it is encoded.
func encodeRequest(t testing.TB, h Header, ops []Op, damage func(i int, op schema.Op)) schema.KV_batch_Params {
	t.Helper()
	_, seg := newMessage(t)
	p, err := schema.NewRootKV_batch_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewRequest(p, h, len(ops))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ops {
		if err := EncodeOp(l.At(i), &ops[i]); err != nil {
			t.Fatal(err)
		}
		if damage != nil {
			damage(i, l.At(i))
		}
	}
	return p
}

// A request decodes to its header and operations; when every operation
// can run, Errs is nil.
func TestRequestRoundTrip(t *testing.T) {
	h := Header{Session: 7, AckedBelow: 3, Forwarded: true}
	ops := []Op{
		{Kind: Put, Seq: 3, Key: []byte("k"), Value: []byte("v")},
		{Kind: Get, Key: []byte("k"), Serializable: true},
		{Kind: Range, Key: []byte{}, After: []byte("a"), Limit: 2},
	}
	got, err := DecodeRequest(encodeRequest(t, h, ops, nil), testLimits)
	if err != nil || got.Header != h || !reflect.DeepEqual(got.Ops, ops) || got.Errs != nil {
		t.Fatalf("decoded %+v, %v; want %+v and %+v, no errors", got, err, h, ops)
	}
}

// errCode returns err's wire code, or fails the test if it has none.
func errCode(t *testing.T, err error) schema.ErrorCode {
	t.Helper()
	var we *Error
	if !errors.As(err, &we) {
		t.Fatalf("%v (%T) is not an *Error", err, err)
	}
	return we.Code
}

// A malformed operation or one over a size limit is an error of its own;
// the others decode. The messages name the part and the limit.
func TestBadOpsFailAlone(t *testing.T) {
	long := []byte("0123456789abcdefXYZ") // over both limits
	ops := []Op{
		{Kind: Put, Seq: 1, Key: []byte("k"), Value: []byte("v")},
		{Kind: Put, Seq: 2, Key: long[:9]},
		{Kind: Get, Key: []byte("k")},
		{Kind: Put, Seq: 3, Key: []byte("k")}, // damaged below: an unknown operation
	}
	p := encodeRequest(t, Header{Session: 1}, ops, func(i int, op schema.Op) {
		if i == 3 {
			capnp.Struct(op).SetUint16(8, 42) // the union's discriminant
		}
	})
	got, err := DecodeRequest(p, testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Errs) != len(ops) {
		t.Fatalf("errors %v, want one slot per operation", got.Errs)
	}
	for i, want := range []string{"", "put key of 9 bytes is over the key size limit of 8 bytes", "",
		"unknown operation 42 (is the client newer than this node?)"} {
		err := got.Errs[i]
		switch {
		case want == "" && err != nil:
			t.Errorf("op %d: %v, want none", i, err)
		case want != "" && (err == nil || err.Error() != want):
			t.Errorf("op %d: %v, want %q", i, err, want)
		}
	}
	if errCode(t, got.Errs[1]) != schema.ErrorCode_tooLarge || errCode(t, got.Errs[3]) != schema.ErrorCode_invalidArgument {
		t.Errorf("codes %v and %v, want tooLarge and invalidArgument", got.Errs[1], got.Errs[3])
	}
	if !reflect.DeepEqual(got.Ops[0], ops[0]) || !reflect.DeepEqual(got.Ops[2], ops[2]) {
		t.Errorf("good ops decoded as %+v and %+v", got.Ops[0], got.Ops[2])
	}
}

// Each part of an operation is checked against its limit, with the
// messages the node has always answered.
func TestSizeLimitsNameThePart(t *testing.T) {
	long := []byte("0123456789abcdefXYZ")
	for _, tc := range []struct {
		op   Op
		part string
		want string
	}{
		{Op{Kind: Get, Key: long[:9]}, "key", "get key of 9 bytes is over the key size limit of 8 bytes"},
		{Op{Kind: Range, After: long[:9]}, "range start key", "range start key (after) of 9 bytes is over the key size limit of 8 bytes"},
		{Op{Kind: Put, Value: long[:17]}, "value", "put value of 17 bytes is over the value size limit of 16 bytes"},
		{Op{Kind: CAS, Compare: CompareValue, CompareValue: long[:17]}, "expected value", "cas expected value of 17 bytes is over the value size limit of 16 bytes"},
		{Op{Kind: CAS, Key: long[:8], Value: long[:16], CompareValue: long[:16]}, "", ""},
	} {
		se := tc.op.OverLimit(testLimits)
		err := tc.op.CheckSize(testLimits)
		if tc.want == "" {
			if se != nil || err != nil {
				t.Errorf("%+v: %v, %v; want within the limits", tc.op, se, err)
			}
			continue
		}
		if se == nil || se.Part != tc.part || se.Error() != tc.want || err == nil || err.Error() != tc.want || errCode(t, err) != schema.ErrorCode_tooLarge {
			t.Errorf("%+v: %+v, %v; want %s: %q", tc.op, se, err, tc.part, tc.want)
		}
	}
}

// A batch whose keys and values add up to more than the batch limit
// refuses every operation that had no error of its own.
func TestBatchOverTheByteLimitRefusesEveryOp(t *testing.T) {
	ops := []Op{
		{Kind: Put, Seq: 1, Key: []byte("k1"), Value: []byte("0123456789abcdef")},
		{Kind: Put, Seq: 2, Key: []byte("k2"), Value: []byte("0123456789abcdef")},
		{Kind: Put, Seq: 3, Key: []byte("key over 8"), Value: []byte("v")},
	}
	got, err := DecodeRequest(encodeRequest(t, Header{Session: 1}, ops, nil), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range got.Errs {
		want := "batch of 47 bytes of keys and values is over the batch size limit of 40 bytes: split it"
		if i == 2 {
			want = "put key of 10 bytes is over the key size limit of 8 bytes"
		}
		if err == nil || err.Error() != want {
			t.Errorf("op %d: %v, want %q", i, err, want)
		}
	}
}

// A batch of more operations than the limit fails as a whole, before its
// operations are read.
func TestBatchOverTheOpLimitFailsTheCall(t *testing.T) {
	ops := make([]Op, testLimits.MaxBatchOps+1)
	for i := range ops {
		ops[i] = Op{Kind: Get, Key: []byte("k")}
	}
	_, err := DecodeRequest(encodeRequest(t, Header{}, ops, nil), testLimits)
	if err == nil || err.Error() != "tooLarge: batch of 5 operations is over the limit of 4 operations per batch: split it" || errCode(t, err) != schema.ErrorCode_tooLarge {
		t.Fatalf("a batch of 5 operations: %v, want tooLarge naming the limit", err)
	}
}

// A batch's answer must hold one result per operation.
func TestResultsOfTheWrongCountAreRefused(t *testing.T) {
	_, seg := newMessage(t)
	res, err := schema.NewRootKV_batch_Results(seg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.NewResults(2); err != nil {
		t.Fatal(err)
	}
	if _, err := Results(res, 2); err != nil {
		t.Fatalf("2 results for 2 operations: %v", err)
	}
	if _, err := Results(res, 3); err == nil || err.Error() != "2 results answered for 3 operations" {
		t.Fatalf("2 results for 3 operations: %v", err)
	}
}

// The single-operation methods read their session, sequence number and
// operation; reads carry no session.
func TestSingleCallsDecode(t *testing.T) {
	_, seg := newMessage(t)
	put, err := schema.NewRootKV_put_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	put.SetSession(5)
	put.SetSeq(9)
	op, err := put.NewOp()
	if err != nil {
		t.Fatal(err)
	}
	if err := op.SetKey([]byte("k")); err != nil {
		t.Fatal(err)
	}
	session, o, err := DecodePutCall(put)
	if err != nil || session != 5 || !reflect.DeepEqual(o, Op{Kind: Put, Seq: 9, Key: []byte("k")}) {
		t.Fatalf("put decoded as %d %+v %v", session, o, err)
	}

	_, seg = newMessage(t)
	get, err := schema.NewRootKV_get_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	// No op at all: a get of the empty key (a null struct reads as its
	// defaults).
	session, o, err = DecodeGetCall(get)
	if err != nil || session != 0 || o.Kind != Get || len(o.Key) != 0 {
		t.Fatalf("get without an op decoded as %d %+v %v", session, o, err)
	}
}
