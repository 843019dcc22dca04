package kvwire

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// The decoders read what clients and peers send: whatever the bytes, they
// return an error rather than panic or allocate beyond the message's
// worth, and what they accept re-encodes to itself.

// fuzzLimits are small, so that fuzzed inputs reach them.
var fuzzLimits = Limits{MaxKeySize: 64, MaxValueSize: 256, MaxBatchOps: 16, MaxBatchBytes: 1024}

// seedRequests adds encoded batches of random operations to f's corpus.
func seedRequests(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 6 {
		ops := make([]Op, n)
		for i := range ops {
			ops[i] = randOp(rng)
			if i%2 == 1 {
				ops[i] = randTxn(rng)
			}
		}
		msg, seg := newMessage(f)
		p, err := schema.NewRootKV_batch_Params(seg)
		if err != nil {
			f.Fatal(err)
		}
		l, err := NewRequest(p, Header{Session: uint64(n), AckedBelow: 1}, len(ops))
		if err != nil {
			f.Fatal(err)
		}
		for i := range ops {
			if err := EncodeOp(l.At(i), &ops[i]); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(marshal(f, msg))
	}
	for range 3 {
		o := randTxn(rng)
		msg, seg := newMessage(f)
		p, err := schema.NewRootKV_txn_Params(seg)
		if err != nil {
			f.Fatal(err)
		}
		dst, err := p.NewOp()
		if err != nil {
			f.Fatal(err)
		}
		if err := encodeTxn(dst, &o); err != nil {
			f.Fatal(err)
		}
		f.Add(marshal(f, msg))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 8))
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
}

// checkReencodes fails t unless o encodes and decodes back to itself.
func checkReencodes(t *testing.T, o Op) {
	t.Helper()
	b := encodeOp(t, &o)
	got, err := DecodeOp(readOp(t, b))
	if err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("decoded %+v re-encodes and decodes as %+v, %v", o, got, err)
	}
}

func isWireError(err error) bool {
	var we *Error
	return errors.As(err, &we)
}

func FuzzDecodeRequest(f *testing.F) {
	seedRequests(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := capnp.Unmarshal(data)
		if err != nil {
			return
		}
		p, err := schema.ReadRootKV_batch_Params(msg)
		if err != nil {
			return
		}
		req, err := DecodeRequest(p, fuzzLimits)
		if err != nil {
			if !isWireError(err) {
				t.Fatalf("request refused with %v (%T), not an *Error", err, err)
			}
			return
		}
		if len(req.Ops) > fuzzLimits.MaxBatchOps || req.Errs != nil && len(req.Errs) != len(req.Ops) {
			t.Fatalf("%d operations, %d errors", len(req.Ops), len(req.Errs))
		}
		count := 0 // operations accepted, a txn's compares and operations each
		for i, o := range req.Ops {
			if req.Errs != nil && req.Errs[i] != nil {
				if !isWireError(req.Errs[i]) {
					t.Fatalf("op %d refused with %v (%T), not an *Error", i, req.Errs[i], req.Errs[i])
				}
				continue
			}
			if o.OverLimit(fuzzLimits) != nil {
				t.Fatalf("op %d over the limits accepted: %+v", i, o)
			}
			if o.Txn != nil {
				if err := o.Txn.Check(); err != nil {
					t.Fatalf("op %d: a txn that fails its check accepted: %v", i, err)
				}
			}
			count += o.Count()
			checkReencodes(t, o)
		}
		if count > fuzzLimits.MaxBatchOps {
			t.Fatalf("%d operations accepted, over the limit of %d", count, fuzzLimits.MaxBatchOps)
		}
	})
}

func FuzzDecodeCall(f *testing.F) {
	seedRequests(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := capnp.Unmarshal(data)
		if err != nil {
			return
		}
		root, err := msg.Root()
		if err != nil {
			return
		}
		st := root.Struct()
		for _, decode := range []func(capnp.Struct) (uint64, Op, error){
			func(s capnp.Struct) (uint64, Op, error) { return DecodePutCall(schema.KV_put_Params(s)) },
			func(s capnp.Struct) (uint64, Op, error) { return DecodeGetCall(schema.KV_get_Params(s)) },
			func(s capnp.Struct) (uint64, Op, error) { return DecodeDeleteCall(schema.KV_delete_Params(s)) },
			func(s capnp.Struct) (uint64, Op, error) { return DecodeCASCall(schema.KV_cas_Params(s)) },
			func(s capnp.Struct) (uint64, Op, error) { return DecodeRangeCall(schema.KV_range_Params(s)) },
			func(s capnp.Struct) (uint64, Op, error) { return DecodeTxnCall(schema.KV_txn_Params(s), fuzzLimits) },
		} {
			_, o, err := decode(st)
			if err != nil {
				if !isWireError(err) {
					t.Fatalf("call refused with %v (%T), not an *Error", err, err)
				}
				continue
			}
			checkReencodes(t, o)
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 14 {
		kind := Kind(1 + rng.IntN(5))
		r := randResult(rng, kind)
		if i >= 10 {
			kind, r = Txn, randTxnResult(rng)
		}
		msg, seg := newMessage(f)
		dst, err := schema.NewRootResult(seg)
		if err != nil {
			f.Fatal(err)
		}
		if err := EncodeResult(dst, kind, &r); err != nil {
			f.Fatal(err)
		}
		f.Add(marshal(f, msg), uint8(kind))
	}
	f.Add([]byte{}, uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, k uint8) {
		msg, err := capnp.Unmarshal(data)
		if err != nil {
			return
		}
		src, err := schema.ReadRootResult(msg)
		if err != nil {
			return
		}
		kind := Kind(k % 7)
		r, err := DecodeResult(src, kind)
		if err != nil {
			return
		}
		_, seg := newMessage(t)
		dst, err := schema.NewRootResult(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := EncodeResult(dst, kind, &r); err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		again, err := DecodeResult(dst, kind)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("decoded %+v re-encodes and decodes as %+v, %v", r, again, err)
		}
	})
}
