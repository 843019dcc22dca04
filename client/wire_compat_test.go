package client

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/schema"
)

// The client's requests and its reading of results went through kvwire
// when the client and the node came to share it. These tests pin the wire
// to what the client did before: the legacy* functions are frozen copies
// of the client's own codec as of c332de0 (client/batch.go), kept only to
// compare against.

// legacyRequest is the client's request as it was.
type legacyRequest struct {
	kind         kvwire.Kind
	key          []byte
	value        []byte
	cmpKind      kvwire.CompareKind
	cmpValue     []byte
	cmpRev       uint64
	casDelete    bool
	serializable bool
	after        []byte
	limit        uint32
}

// legacyEncodeOp is the client's encodeOp as it was.
func legacyEncodeOp(op schema.Op, r *legacyRequest, seq uint64) error {
	op.SetSeq(seq)
	consistency := schema.Consistency_linearizable
	if r.serializable {
		consistency = schema.Consistency_serializable
	}
	switch r.kind {
	case kvwire.Put:
		p, err := op.NewPut()
		if err != nil {
			return err
		}
		if err := p.SetKey(r.key); err != nil {
			return err
		}
		return p.SetValue(r.value)
	case kvwire.Get:
		g, err := op.NewGet()
		if err != nil {
			return err
		}
		g.SetConsistency(consistency)
		return g.SetKey(r.key)
	case kvwire.Delete:
		d, err := op.NewDelete()
		if err != nil {
			return err
		}
		return d.SetKey(r.key)
	case kvwire.CAS:
		cs, err := op.NewCas()
		if err != nil {
			return err
		}
		if err := cs.SetKey(r.key); err != nil {
			return err
		}
		switch r.cmpKind {
		case kvwire.CompareValue:
			if err := cs.Expected().SetValue(r.cmpValue); err != nil {
				return err
			}
		case kvwire.CompareModRevision:
			cs.Expected().SetModRevision(r.cmpRev)
		default:
			cs.Expected().SetAbsent()
		}
		cs.SetDelete(r.casDelete)
		if r.casDelete {
			return nil
		}
		return cs.SetNewValue(r.value)
	case kvwire.Range:
		rg, err := op.NewRange()
		if err != nil {
			return err
		}
		if err := rg.SetPrefix(r.key); err != nil {
			return err
		}
		if len(r.after) > 0 {
			if err := rg.SetAfter(r.after); err != nil {
				return err
			}
		}
		rg.SetLimit(r.limit)
		rg.SetConsistency(consistency)
		return nil
	}
	return fmt.Errorf("unknown operation kind %d", r.kind)
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

func randString(rng *rand.Rand) string {
	if rng.IntN(5) == 0 {
		return ""
	}
	return string(randBytes(rng))
}

// randCall makes one operation through the client's request constructors
// and the same operation as the client used to hold it.
func randCall(rng *rand.Rand) (*request, *legacyRequest) {
	key := randString(rng)
	value := randBytes(rng)
	serial, after := rng.IntN(2) == 0, randString(rng)
	var opts []ReadOption
	old := &legacyRequest{key: []byte(key)}
	if serial {
		opts = append(opts, Serializable())
		old.serializable = true
	}
	if rng.IntN(2) == 0 {
		opts = append(opts, After(after))
		old.after = []byte(after)
	}
	switch kvwire.Kind(1 + rng.IntN(5)) {
	case kvwire.Put:
		old.kind, old.value, old.serializable, old.after = kvwire.Put, value, false, nil
		return putRequest(key, value), old
	case kvwire.Get:
		old.kind = kvwire.Get
		return getRequest(key, opts), old
	case kvwire.Delete:
		old.kind, old.serializable, old.after = kvwire.Delete, false, nil
		return deleteRequest(key), old
	case kvwire.CAS:
		var cmp Compare
		switch rng.IntN(3) {
		case 0:
			cmp = IfValue(randBytes(rng))
		case 1:
			cmp = IfModRevision(rng.Uint64())
		default:
			cmp = IfAbsent()
		}
		del := rng.IntN(2) == 0
		*old = legacyRequest{kind: kvwire.CAS, key: []byte(key), cmpKind: cmp.kind, cmpValue: cmp.value, cmpRev: cmp.rev, casDelete: del}
		if !del {
			old.value = value
		}
		return casRequest(key, cmp, value, del), old
	default:
		limit := rng.Uint32()
		old.kind, old.limit = kvwire.Range, limit
		return rangeRequest(key, limit, opts), old
	}
}

// encodeBatch encodes a batch of ops as the client sends it now (legacy
// false) or as it did before.
func encodeBatch(t *testing.T, session, acked uint64, reqs []*request, olds []*legacyRequest, seqs []uint64, legacy bool) []byte {
	t.Helper()
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := schema.NewRootKV_batch_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	if legacy {
		req, err := p.NewReq()
		if err != nil {
			t.Fatal(err)
		}
		req.SetSession(session)
		req.SetAckedBelow(acked)
		ops, err := req.NewOps(int32(len(olds)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range olds {
			if err := legacyEncodeOp(ops.At(i), olds[i], seqs[i]); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		ops, err := kvwire.NewRequest(p, kvwire.Header{Session: session, AckedBelow: acked}, len(reqs))
		if err != nil {
			t.Fatal(err)
		}
		for i := range reqs {
			op := reqs[i].op
			op.Seq = seqs[i]
			if err := kvwire.EncodeOp(ops.At(i), &op); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := msg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every request the client makes is the same bytes on the wire as before
// the shared codec.
func TestClientRequestsAreTheSameBytesAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(wireSeed(t), 1))
	for range 2000 {
		n := 1 + rng.IntN(4)
		reqs, olds, seqs := make([]*request, n), make([]*legacyRequest, n), make([]uint64, n)
		for i := range reqs {
			reqs[i], olds[i] = randCall(rng)
			if reqs[i].write() {
				seqs[i] = 1 + rng.Uint64N(1000)
			}
		}
		session, acked := rng.Uint64N(10), rng.Uint64N(10)
		now := encodeBatch(t, session, acked, reqs, olds, seqs, false)
		before := encodeBatch(t, session, acked, reqs, olds, seqs, true)
		if !bytes.Equal(now, before) {
			t.Fatalf("batch of %+v encodes as\n%x\nwas\n%x", olds, now, before)
		}
	}
}

// legacyResult is the client's reading of a result as it was.
func legacyDecodeResult(r schema.Result, kind kvwire.Kind, addr string) (result, error) {
	out := result{revision: r.Revision()}
	bad := func(err error) (result, error) {
		return result{}, &ServerError{Code: CodeInternal, Addr: addr,
			Message: fmt.Sprintf("malformed answer to %s: %v (a bug in the node)", kind, err)}
	}
	decodeKV := func(kv schema.KeyValue) KeyValue {
		k, _ := kv.Key()
		v, _ := kv.Value()
		return KeyValue{Key: string(k), Value: append([]byte{}, v...),
			CreateRevision: kv.CreateRevision(), ModRevision: kv.ModRevision(), Version: kv.Version()}
	}
	resultWhich := [...]schema.Result_Which{
		kvwire.Put: schema.Result_Which_put, kvwire.Get: schema.Result_Which_get, kvwire.Delete: schema.Result_Which_delete,
		kvwire.CAS: schema.Result_Which_cas, kvwire.Range: schema.Result_Which_range,
	}
	which := r.Which()
	if which == schema.Result_Which_error {
		e, err := r.Error()
		if err != nil {
			return bad(err)
		}
		msg, _ := e.Message_()
		out.failed, out.code, out.hint = true, ErrorCode(e.Code()), e.LeaderHint()
		out.message = trimCode(out.code, msg)
		return out, nil
	}
	if which != resultWhich[kind] {
		return bad(fmt.Errorf("a %v result", which))
	}
	switch kind {
	case kvwire.Put:
		p, err := r.Put()
		if err != nil {
			return bad(err)
		}
		out.found = p.HadPrev()
		if out.found {
			prev, err := p.Prev()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(prev)
		}
	case kvwire.Get:
		g, err := r.Get()
		if err != nil {
			return bad(err)
		}
		out.found = g.Found()
		if out.found {
			kv, err := g.Kv()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(kv)
		}
	case kvwire.Delete:
		d, err := r.Delete()
		if err != nil {
			return bad(err)
		}
		out.found = d.Deleted()
		if out.found && d.HasPrev() {
			prev, err := d.Prev()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(prev)
		}
	case kvwire.CAS:
		cs, err := r.Cas()
		if err != nil {
			return bad(err)
		}
		out.succeeded, out.found = cs.Succeeded(), cs.Found()
		if !out.succeeded && out.found {
			cur, err := cs.Current()
			if err != nil {
				return bad(err)
			}
			out.kv = decodeKV(cur)
		}
	case kvwire.Range:
		rg, err := r.Range()
		if err != nil {
			return bad(err)
		}
		list, err := rg.Kvs()
		if err != nil {
			return bad(err)
		}
		out.kvs = make([]KeyValue, list.Len())
		for i := range out.kvs {
			out.kvs[i] = decodeKV(list.At(i))
		}
		out.more = rg.More()
	}
	return out, nil
}

func randKV(rng *rand.Rand) kvwire.KeyValue {
	return kvwire.KeyValue{Key: randBytes(rng), Value: randBytes(rng),
		CreateRevision: rng.Uint64N(100), ModRevision: rng.Uint64N(100), Version: rng.Uint64N(100)}
}

// randResult returns a result a node may answer an operation of kind
// with.
func randResult(rng *rand.Rand, kind kvwire.Kind) kvwire.Result {
	r := kvwire.Result{Revision: rng.Uint64N(1000)}
	if rng.IntN(5) == 0 {
		code := schema.ErrorCode(rng.IntN(10))
		msg := randString(rng)
		if code == schema.ErrorCode_permissionDenied && rng.IntN(2) == 0 {
			msg = "permissionDenied: " + msg
		}
		r.Err = &kvwire.Error{Code: code, Message: msg, LeaderHint: rng.Uint64N(4)}
		return r
	}
	r.Succeeded, r.Found, r.More = rng.IntN(2) == 0, rng.IntN(2) == 0, rng.IntN(2) == 0
	if r.Found {
		r.KV = randKV(rng)
	}
	if kind == kvwire.Range {
		r.KVs = make([]kvwire.KeyValue, rng.IntN(4))
		for i := range r.KVs {
			r.KVs[i] = randKV(rng)
		}
	}
	return r
}

// The client reads every result a node sends as it did before the shared
// codec, a result of the wrong kind included.
func TestClientReadsResultsAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(wireSeed(t), 2))
	for range 5000 {
		sent := kvwire.Kind(1 + rng.IntN(5))
		asked := sent
		if rng.IntN(8) == 0 {
			asked = kvwire.Kind(1 + rng.IntN(5))
		}
		want := randResult(rng, sent)
		_, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := schema.NewRootResult(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := kvwire.EncodeResult(dst, sent, &want); err != nil {
			t.Fatal(err)
		}
		got, gotErr := decodeResult(dst, asked, "node")
		was, wasErr := legacyDecodeResult(dst, asked, "node")
		if asked == kvwire.Delete && sent == kvwire.Delete && gotErr == nil && !got.failed {
			// The one field added since: the number of keys deleted
			// (1 for a deleted key whose node sent no count).
			count := want.Count
			if count == 0 && got.found {
				count = 1
			}
			if got.count != count {
				t.Fatalf("a delete result %+v read with count %d, want %d", want, got.count, count)
			}
			was.count = got.count
		}
		if fmt.Sprint(gotErr) != fmt.Sprint(wasErr) || !reflect.DeepEqual(got, was) {
			t.Fatalf("a %v result %+v read for a %v: %+v, %v; was %+v, %v", sent, want, asked, got, gotErr, was, wasErr)
		}
	}
}

// BenchmarkPutCodec measures the client's codec work for one Put: encode
// a batch of one put, read a result that names the previous value. before
// runs the frozen copy of the client's own codec, now kvwire.
func BenchmarkPutCodec(b *testing.B) {
	value := make([]byte, 256)
	req := putRequest("some/key", value)
	old := &legacyRequest{kind: kvwire.Put, key: []byte("some/key"), value: value}
	answerMsg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		b.Fatal(err)
	}
	answer, err := schema.NewRootResult(seg)
	if err != nil {
		b.Fatal(err)
	}
	prev := kvwire.Result{Revision: 9, Found: true, KV: kvwire.KeyValue{Key: []byte("some/key"), Value: value, ModRevision: 8}}
	if err := kvwire.EncodeResult(answer, kvwire.Put, &prev); err != nil {
		b.Fatal(err)
	}
	for _, legacy := range []bool{true, false} {
		name := "now"
		if legacy {
			name = "before"
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				answerMsg.ResetReadLimit(1 << 20) // each read counts against it
				msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
				if err != nil {
					b.Fatal(err)
				}
				p, err := schema.NewRootKV_batch_Params(seg)
				if err != nil {
					b.Fatal(err)
				}
				var r result
				if legacy {
					rq, _ := p.NewReq()
					rq.SetSession(1)
					ops, _ := rq.NewOps(1)
					err = legacyEncodeOp(ops.At(0), old, 5)
					if err == nil {
						r, err = legacyDecodeResult(answer, kvwire.Put, "node")
					}
				} else {
					ops, _ := kvwire.NewRequest(p, kvwire.Header{Session: 1}, 1)
					op := req.op
					op.Seq = 5
					err = kvwire.EncodeOp(ops.At(0), &op)
					if err == nil {
						r, err = decodeResult(answer, kvwire.Put, "node")
					}
				}
				if err != nil || !r.found {
					b.Fatal(err)
				}
				msg.Release()
			}
		})
	}
}
