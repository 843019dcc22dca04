package services

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// The node's reading of requests and writing of results went through
// kvwire when the client and the node came to share it. These tests pin
// them to what the node did before: the legacy* functions are frozen
// copies of the node's own codec as of c332de0 (raftnode/kvops.go), kept
// only to compare against.

// legacyOp is the node's operation as it was.
type legacyOp struct {
	kind         kvwire.Kind
	seq          uint64
	key, value   []byte
	cmp          kv.CompareKind
	cmpValue     []byte
	cmpRev       uint64
	del          bool
	after        []byte
	limit        int
	serializable bool
}

func (o *legacyOp) isWrite() bool {
	return o.kind == kvwire.Put || o.kind == kvwire.Delete || o.kind == kvwire.CAS
}

// legacyDecodeOp is the node's decodeOp (and decodePut...) as it was.
func legacyDecodeOp(op schema.Op) (legacyOp, error) {
	decodePut := func(p schema.PutOp) (legacyOp, error) {
		k, err := p.Key()
		if err != nil {
			return legacyOp{}, invalid("put key: %v", err)
		}
		v, err := p.Value()
		if err != nil {
			return legacyOp{}, invalid("put value: %v", err)
		}
		return legacyOp{kind: kvwire.Put, key: k, value: v}, nil
	}
	decodeGet := func(g schema.GetOp) (legacyOp, error) {
		k, err := g.Key()
		if err != nil {
			return legacyOp{}, invalid("get key: %v", err)
		}
		return legacyOp{kind: kvwire.Get, key: k, serializable: g.Consistency() == schema.Consistency_serializable}, nil
	}
	decodeDelete := func(d schema.DeleteOp) (legacyOp, error) {
		k, err := d.Key()
		if err != nil {
			return legacyOp{}, invalid("delete key: %v", err)
		}
		return legacyOp{kind: kvwire.Delete, key: k}, nil
	}
	decodeCAS := func(c schema.CasOp) (legacyOp, error) {
		k, err := c.Key()
		if err != nil {
			return legacyOp{}, invalid("cas key: %v", err)
		}
		v, err := c.NewValue()
		if err != nil {
			return legacyOp{}, invalid("cas new value: %v", err)
		}
		o := legacyOp{kind: kvwire.CAS, key: k, value: v, del: c.Delete()}
		switch e := c.Expected(); e.Which() {
		case schema.CasOp_expected_Which_value:
			o.cmp = kv.CompareValue
			if o.cmpValue, err = e.Value(); err != nil {
				return o, invalid("cas expected value: %v", err)
			}
		case schema.CasOp_expected_Which_modRevision:
			o.cmp, o.cmpRev = kv.CompareModRevision, e.ModRevision()
		case schema.CasOp_expected_Which_absent:
			o.cmp = kv.CompareAbsent
		default:
			return o, invalid("cas: unknown comparison %d", e.Which())
		}
		return o, nil
	}
	decodeRange := func(r schema.RangeOp) (legacyOp, error) {
		p, err := r.Prefix()
		if err != nil {
			return legacyOp{}, invalid("range prefix: %v", err)
		}
		a, err := r.After()
		if err != nil {
			return legacyOp{}, invalid("range after: %v", err)
		}
		return legacyOp{kind: kvwire.Range, key: p, after: a, limit: int(r.Limit()), serializable: r.Consistency() == schema.Consistency_serializable}, nil
	}

	o := legacyOp{seq: op.Seq()}
	var err error
	switch op.Which() {
	case schema.Op_Which_put:
		p, e := op.Put()
		if e != nil {
			return o, invalid("put: %v", e)
		}
		o, err = decodePut(p)
		o.seq = op.Seq()
	case schema.Op_Which_get:
		g, e := op.Get()
		if e != nil {
			return o, invalid("get: %v", e)
		}
		o, err = decodeGet(g)
	case schema.Op_Which_delete:
		d, e := op.Delete()
		if e != nil {
			return o, invalid("delete: %v", e)
		}
		o, err = decodeDelete(d)
		o.seq = op.Seq()
	case schema.Op_Which_cas:
		c, e := op.Cas()
		if e != nil {
			return o, invalid("cas: %v", e)
		}
		o, err = decodeCAS(c)
		o.seq = op.Seq()
	case schema.Op_Which_range:
		r, e := op.Range()
		if e != nil {
			return o, invalid("range: %v", e)
		}
		o, err = decodeRange(r)
	default:
		return o, invalid("unknown operation %d (is the client newer than this node?)", op.Which())
	}
	return o, err
}

// legacyEncodeResult is the node's encodeResult as it was (taking o's
// kind and whether it writes).
func legacyEncodeResult(dst schema.Result, o *legacyOp, r *kvResult) error {
	fillKeyValue := func(dst schema.KeyValue, kvp kv.KeyValue) error {
		dst.SetCreateRevision(kvp.CreateRevision)
		dst.SetModRevision(kvp.ModRevision)
		dst.SetVersion(kvp.Version)
		if err := dst.SetKey(kvp.Key); err != nil {
			return err
		}
		return dst.SetValue(kvp.Value)
	}
	setKeyValue := func(alloc func() (schema.KeyValue, error), kvp kv.KeyValue) error {
		dst, err := alloc()
		if err != nil {
			return err
		}
		return fillKeyValue(dst, kvp)
	}
	encodeError := func(dst schema.Result, err error, hint uint64) error {
		e, aerr := dst.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, hint)
	}

	dst.SetRevision(r.rev)
	if r.err != nil {
		return encodeError(dst, r.err, r.leaderHint)
	}
	if o.isWrite() && r.w.Code != kv.OK {
		return encodeError(dst, kvCodeError(r.w), r.leaderHint)
	}
	switch o.kind {
	case kvwire.Put:
		p, err := dst.NewPut()
		if err != nil {
			return err
		}
		p.SetHadPrev(r.w.Found)
		if r.w.Found {
			return setKeyValue(p.NewPrev, r.w.Prev)
		}
	case kvwire.Delete:
		d, err := dst.NewDelete()
		if err != nil {
			return err
		}
		d.SetDeleted(r.w.Succeeded)
		if r.w.Found {
			return setKeyValue(d.NewPrev, r.w.Prev)
		}
	case kvwire.CAS:
		c, err := dst.NewCas()
		if err != nil {
			return err
		}
		c.SetSucceeded(r.w.Succeeded)
		c.SetFound(r.w.Found)
		if r.w.Found {
			return setKeyValue(c.NewCurrent, r.w.Prev)
		}
	case kvwire.Get:
		g, err := dst.NewGet()
		if err != nil {
			return err
		}
		g.SetFound(r.found)
		if r.found {
			return setKeyValue(g.NewKv, r.kv)
		}
	case kvwire.Range:
		rr, err := dst.NewRange()
		if err != nil {
			return err
		}
		rr.SetMore(r.more)
		l, err := rr.NewKvs(int32(len(r.kvs)))
		if err != nil {
			return err
		}
		for i := range r.kvs {
			if err := fillKeyValue(l.At(i), r.kvs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// legacyForwardedResult is the node's decodeResult (of a forwarded
// call's answer) as it was.
func legacyForwardedResult(src schema.Result, o *legacyOp) kvResult {
	readKeyValue := func(src schema.KeyValue, err error) (kv.KeyValue, error) {
		if err != nil {
			return kv.KeyValue{}, err
		}
		k, err := src.Key()
		if err != nil {
			return kv.KeyValue{}, err
		}
		v, err := src.Value()
		if err != nil {
			return kv.KeyValue{}, err
		}
		return kv.KeyValue{Key: bytes.Clone(k), Value: bytes.Clone(v),
			CreateRevision: src.CreateRevision(), ModRevision: src.ModRevision(), Version: src.Version()}, nil
	}
	r := kvResult{rev: src.Revision()}
	bad := func(err error) kvResult {
		return kvResult{err: &requestError{schema.ErrorCode_internal, fmt.Sprintf("malformed result from the leader: %v", err)}}
	}
	switch src.Which() {
	case schema.Result_Which_error:
		e, err := src.Error()
		if err != nil {
			return bad(err)
		}
		msg, _ := e.Message_()
		r.err = &requestError{e.Code(), msg}
		r.leaderHint = e.LeaderHint()
		if o.isWrite() {
			r.w.Code = kv.OK
		}
	case schema.Result_Which_put:
		p, err := src.Put()
		if err != nil {
			return bad(err)
		}
		r.w.Found = p.HadPrev()
		if r.w.Found {
			if r.w.Prev, err = readKeyValue(p.Prev()); err != nil {
				return bad(err)
			}
		}
	case schema.Result_Which_delete:
		d, err := src.Delete()
		if err != nil {
			return bad(err)
		}
		r.w.Succeeded = d.Deleted()
		if d.HasPrev() {
			r.w.Found = true
			if r.w.Prev, err = readKeyValue(d.Prev()); err != nil {
				return bad(err)
			}
		}
	case schema.Result_Which_cas:
		c, err := src.Cas()
		if err != nil {
			return bad(err)
		}
		r.w.Succeeded, r.w.Found = c.Succeeded(), c.Found()
		if r.w.Found {
			if r.w.Prev, err = readKeyValue(c.Current()); err != nil {
				return bad(err)
			}
		}
	case schema.Result_Which_get:
		g, err := src.Get()
		if err != nil {
			return bad(err)
		}
		r.found = g.Found()
		if r.found {
			if r.kv, err = readKeyValue(g.Kv()); err != nil {
				return bad(err)
			}
		}
	case schema.Result_Which_range:
		rr, err := src.Range()
		if err != nil {
			return bad(err)
		}
		r.more = rr.More()
		l, err := rr.Kvs()
		if err != nil {
			return bad(err)
		}
		r.kvs = make([]kv.KeyValue, l.Len())
		for i := range r.kvs {
			if r.kvs[i], err = readKeyValue(l.At(i), nil); err != nil {
				return bad(err)
			}
		}
	default:
		return bad(fmt.Errorf("unknown result kind %d", src.Which()))
	}
	return r
}

// wireSeed returns a seed for a randomized test, logged if the test fails.
func wireSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	})
	return seed
}

// randBytes returns nil, an empty slice or a few random bytes.
func randBytes(rng *rand.Rand) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, rng.IntN(40))
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

func randOp(rng *rand.Rand) kvwire.Op {
	o := kvwire.Op{Kind: kvwire.Kind(1 + rng.IntN(5)), Seq: rng.Uint64N(100), Key: randBytes(rng), Value: randBytes(rng),
		DeleteOnSuccess: rng.IntN(2) == 0, After: randBytes(rng), Limit: rng.Uint32(), Serializable: rng.IntN(2) == 0}
	o.Compare = kvwire.CompareKind(1 + rng.IntN(3))
	switch o.Compare {
	case kvwire.CompareValue:
		o.CompareValue = randBytes(rng)
	case kvwire.CompareModRevision:
		o.CompareRevision = rng.Uint64()
	}
	return o
}

func randKeyValue(rng *rand.Rand) kv.KeyValue {
	return kv.KeyValue{Key: randBytes(rng), Value: randBytes(rng),
		CreateRevision: rng.Uint64N(100), ModRevision: rng.Uint64N(100), Version: rng.Uint64N(100)}
}

// randKVResult returns an outcome the node may produce for an operation.
func randKVResult(rng *rand.Rand) kvResult {
	r := kvResult{rev: rng.Uint64N(1000), found: rng.IntN(2) == 0, more: rng.IntN(2) == 0}
	switch rng.IntN(6) {
	case 0:
		r.err, r.leaderHint = &requestError{schema.ErrorCode(rng.IntN(10)), string(randBytes(rng))}, rng.Uint64N(4)
	case 1:
		r.err = fmt.Errorf("a plain error %d", rng.IntN(10))
	case 2:
		r.w.Code, r.w.Message = kv.Code(1+rng.IntN(5)), string(randBytes(rng))
	}
	r.w.Found, r.w.Succeeded = rng.IntN(2) == 0, rng.IntN(2) == 0
	if r.w.Found {
		r.w.Prev = randKeyValue(rng)
	}
	if r.found {
		r.kv = randKeyValue(rng)
	}
	r.kvs = make([]kv.KeyValue, rng.IntN(4))
	for i := range r.kvs {
		r.kvs[i] = randKeyValue(rng)
	}
	return r
}

func newRootResult(t *testing.T) (*capnp.Message, schema.Result) {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := schema.NewRootResult(seg)
	if err != nil {
		t.Fatal(err)
	}
	return msg, dst
}

func marshal(t *testing.T, msg *capnp.Message) []byte {
	t.Helper()
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every result the node answers is the same bytes on the wire as before
// the shared codec.
func TestNodeResultsAreTheSameBytesAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(wireSeed(t), 1))
	for range 5000 {
		o := randOp(rng)
		r := randKVResult(rng)
		nowMsg, now := newRootResult(t)
		if err := encodeResult(now, &o, &r); err != nil {
			t.Fatal(err)
		}
		wasMsg, was := newRootResult(t)
		if err := legacyEncodeResult(was, &legacyOp{kind: o.Kind}, &r); err != nil {
			t.Fatal(err)
		}
		if o.Kind == kvwire.Delete && was.Which() == schema.Result_Which_delete {
			// The one field added since: the number of keys deleted.
			d, err := was.Delete()
			if err != nil {
				t.Fatal(err)
			}
			d.SetCount(deleteCount(r.w.Deleted, r.w.Succeeded))
		}
		if a, b := marshal(t, nowMsg), marshal(t, wasMsg); !bytes.Equal(a, b) {
			t.Fatalf("the result %+v of a %v encodes as\n%x\nwas\n%x", r, o.Kind, a, b)
		}
	}
}

// The node reads every operation as it did before the shared codec,
// malformed ones included (their errors are the same), except that a
// read keeps the sequence number it was sent with (the node ignores it).
func TestNodeReadsOperationsAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(wireSeed(t), 2))
	for i := range 20000 {
		o := randOp(rng)
		msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := schema.NewRootOp(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := kvwire.EncodeOp(dst, &o); err != nil {
			t.Fatal(err)
		}
		b := marshal(t, msg)
		if i%2 == 1 {
			// Damage a word past the frame header.
			for range 1 + rng.IntN(3) {
				if len(b) > 8 {
					b[8+rng.IntN(len(b)-8)] = byte(rng.UintN(256))
				}
			}
		}
		// Each decoder reads its own copy: reads count against the
		// message's traversal limit.
		read := func() (schema.Op, bool) {
			m, err := capnp.Unmarshal(bytes.Clone(b))
			if err != nil {
				return schema.Op{}, false
			}
			src, err := schema.ReadRootOp(m)
			return src, err == nil
		}
		src, ok := read()
		if !ok {
			continue
		}
		if src.Which() == schema.Op_Which_txn {
			continue // new since the legacy decoder: unknown to it
		}
		if src.Which() == schema.Op_Which_delete {
			if d, err := src.Delete(); err == nil && d.Prefix() {
				continue // a prefix delete: new since the legacy decoder
			}
		}
		legacySrc, _ := read()
		got, gotErr := kvwire.DecodeOp(src)
		was, wasErr := legacyDecodeOp(legacySrc)
		if fmt.Sprint(gotErr) != fmt.Sprint(wasErr) {
			t.Fatalf("op %x: error %v, was %v", b, gotErr, wasErr)
		}
		if gotErr != nil {
			continue
		}
		w := &got
		now := legacyOp{kind: w.Kind, seq: w.Seq, key: w.Key, value: w.Value, cmp: writeOp(w).Compare, cmpValue: w.CompareValue,
			cmpRev: w.CompareRevision, del: w.DeleteOnSuccess, after: w.After, limit: int(w.Limit), serializable: w.Serializable}
		if !now.isWrite() {
			now.seq = 0
			now.cmp = 0
		}
		if !reflect.DeepEqual(now, was) {
			t.Fatalf("op %x read as %+v, was %+v", b, now, was)
		}
	}
}

// A follower reads the leader's answer to a forwarded batch as it did
// before the shared codec.
func TestForwardedResultsReadAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(wireSeed(t), 3))
	for range 5000 {
		o := randOp(rng)
		r := randKVResult(rng)
		_, dst := newRootResult(t)
		if err := encodeResult(dst, &o, &r); err != nil {
			t.Fatal(err)
		}
		got := forwardedResult(dst, &o)
		was := legacyForwardedResult(dst, &legacyOp{kind: o.Kind})
		if !reflect.DeepEqual(got, was) {
			t.Fatalf("the result %+v of a %v read as %+v, was %+v", r, o.Kind, got, was)
		}
	}
}

// legacyDecodeBatch is what serveBatch did to read a batch before the
// shared codec (with the size checks it made then, in short).
func legacyDecodeBatch(p schema.KV_batch_Params, lim kv.Config) (ops []legacyOp, bad []error, valid []legacyOp, err error) {
	req, err := p.Req()
	if err != nil {
		return nil, nil, nil, invalid("batch: %v", err)
	}
	l, err := req.Ops()
	if err != nil {
		return nil, nil, nil, invalid("batch ops: %v", err)
	}
	if l.Len() > lim.MaxBatchOps {
		return nil, nil, nil, tooLarge("tooLarge: batch of %d operations", l.Len())
	}
	ops = make([]legacyOp, l.Len())
	bad = make([]error, l.Len())
	total := 0
	for i := range ops {
		ops[i], bad[i] = legacyDecodeOp(l.At(i))
		o := &ops[i]
		if bad[i] == nil && (len(o.key) > lim.MaxKeySize || len(o.after) > lim.MaxKeySize ||
			len(o.value) > lim.MaxValueSize || len(o.cmpValue) > lim.MaxValueSize) {
			bad[i] = tooLarge("%v over a limit", o.kind)
		}
		total += len(o.key) + len(o.value) + len(o.cmpValue) + len(o.after)
	}
	if total > lim.MaxBatchBytes {
		for i := range bad {
			if bad[i] == nil {
				bad[i] = tooLarge("batch of %d bytes", total)
			}
		}
	}
	valid = make([]legacyOp, 0, len(ops))
	for i := range ops {
		if bad[i] == nil {
			valid = append(valid, ops[i])
		}
	}
	return ops, bad, valid, nil
}

// BenchmarkPutBatchCodec measures the node's codec work for a batch of
// puts: read the request, write results that name the previous values.
// before runs the frozen copy of the node's own codec, now kvwire.
func BenchmarkPutBatchCodec(b *testing.B) {
	lim := kv.Config{MaxKeySize: kv.DefaultMaxKeySize, MaxValueSize: kv.DefaultMaxValueSize,
		MaxBatchOps: kv.DefaultMaxBatchOps, MaxBatchBytes: kv.DefaultMaxBatchBytes}
	value := make([]byte, 256)
	for _, n := range []int{1, 32} {
		paramsMsg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			b.Fatal(err)
		}
		params, err := schema.NewRootKV_batch_Params(seg)
		if err != nil {
			b.Fatal(err)
		}
		l, err := kvwire.NewRequest(params, kvwire.Header{Session: 1}, n)
		if err != nil {
			b.Fatal(err)
		}
		got := make([]kvResult, n)
		for i := range n {
			key := []byte(fmt.Sprintf("some/key/%d", i))
			if err := kvwire.EncodeOp(l.At(i), &kvwire.Op{Kind: kvwire.Put, Seq: uint64(i + 1), Key: key, Value: value}); err != nil {
				b.Fatal(err)
			}
			got[i] = kvResult{rev: 9, w: kv.Result{Revision: 9, Found: true, Prev: kv.KeyValue{Key: key, Value: value, ModRevision: 8}}}
		}
		for _, legacy := range []bool{true, false} {
			name := fmt.Sprintf("ops=%d/now", n)
			if legacy {
				name = fmt.Sprintf("ops=%d/before", n)
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					paramsMsg.ResetReadLimit(1 << 20) // each read counts against it
					msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
					if err != nil {
						b.Fatal(err)
					}
					res, err := schema.NewRootKV_batch_Results(seg)
					if err != nil {
						b.Fatal(err)
					}
					if legacy {
						ops, bad, valid, err := legacyDecodeBatch(params, lim)
						if err != nil || len(valid) != n {
							b.Fatal(err)
						}
						out, err := res.NewResults(int32(len(ops)))
						if err != nil {
							b.Fatal(err)
						}
						for i := range ops {
							if bad[i] != nil {
								b.Fatal(bad[i])
							}
							if err := legacyEncodeResult(out.At(i), &ops[i], &got[i]); err != nil {
								b.Fatal(err)
							}
						}
					} else {
						req, err := kvwire.DecodeRequest(params, kvLimits(lim))
						if err != nil || req.Errs != nil {
							b.Fatal(err, req.Errs)
						}
						if err := encodeBatch(res, req.Ops, req.Errs, got); err != nil {
							b.Fatal(err)
						}
					}
					msg.Release()
				}
			})
		}
	}
}
