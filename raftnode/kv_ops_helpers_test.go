package raftnode_test

import (
	"context"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// testOp is one KV operation as the tests build it.
type testOp struct {
	kind   string // put, get, delete, cas, range
	key    string // range: the prefix
	value  string // put; cas: the new value
	seq    uint64 // writes
	after  string // range
	limit  uint32 // range
	serial bool   // reads: serializable
	// cas: expect "absent" or the key's value to be expected; del
	// deletes on success.
	absent   bool
	expected string
	del      bool
}

func (o testOp) isWrite() bool { return o.kind == "put" || o.kind == "delete" || o.kind == "cas" }

func (o testOp) String() string {
	switch o.kind {
	case "range":
		return fmt.Sprintf("range(prefix %q after %q limit %d serial %v)", o.key, o.after, o.limit, o.serial)
	case "cas":
		return fmt.Sprintf("cas(%q absent %v expected %q del %v seq %d)", o.key, o.absent, o.expected, o.del, o.seq)
	case "get":
		return fmt.Sprintf("get(%q serial %v)", o.key, o.serial)
	}
	return fmt.Sprintf("%s(%q seq %d)", o.kind, o.key, o.seq)
}

// testResult is one operation's answer, copied out of the message.
type testResult struct {
	err       error // a *codeError, or nil
	found     bool  // get: found; put, delete, cas: the key had a state (prev)
	value     string
	prev      string
	prevKey   string
	succeeded bool // cas: the compare matched; delete: the key existed
	keys      []string
	values    []string
	more      bool
}

func consistencyOf(serial bool) schema.Consistency {
	if serial {
		return schema.Consistency_serializable
	}
	return schema.Consistency_linearizable
}

func setPut(p schema.PutOp, o testOp) error {
	if err := p.SetKey([]byte(o.key)); err != nil {
		return err
	}
	return p.SetValue([]byte(o.value))
}

func setGet(g schema.GetOp, o testOp) error {
	g.SetConsistency(consistencyOf(o.serial))
	return g.SetKey([]byte(o.key))
}

func setDelete(d schema.DeleteOp, o testOp) error { return d.SetKey([]byte(o.key)) }

func setCAS(c schema.CasOp, o testOp) error {
	if err := c.SetKey([]byte(o.key)); err != nil {
		return err
	}
	if err := c.SetNewValue([]byte(o.value)); err != nil {
		return err
	}
	c.SetDelete(o.del)
	if o.absent {
		c.Expected().SetAbsent()
		return nil
	}
	return c.Expected().SetValue([]byte(o.expected))
}

func setRange(r schema.RangeOp, o testOp) error {
	r.SetLimit(o.limit)
	r.SetConsistency(consistencyOf(o.serial))
	if err := r.SetPrefix([]byte(o.key)); err != nil {
		return err
	}
	return r.SetAfter([]byte(o.after))
}

// newOp allocates an operation struct with alloc and fills it from o.
func newOp[O any](alloc func() (O, error), o testOp, set func(O, testOp) error) error {
	op, err := alloc()
	if err != nil {
		return err
	}
	return set(op, o)
}

func fillOp(dst schema.Op, o testOp) error {
	dst.SetSeq(o.seq)
	switch o.kind {
	case "put":
		return newOp(dst.NewPut, o, setPut)
	case "get":
		return newOp(dst.NewGet, o, setGet)
	case "delete":
		return newOp(dst.NewDelete, o, setDelete)
	case "cas":
		return newOp(dst.NewCas, o, setCAS)
	case "range":
		return newOp(dst.NewRange, o, setRange)
	}
	return fmt.Errorf("unknown op kind %q", o.kind)
}

func readPrev(res *testResult, kv schema.KeyValue, err error) {
	if err != nil {
		res.err = err
		return
	}
	k, _ := kv.Key()
	v, _ := kv.Value()
	res.prevKey, res.prev = string(k), string(v)
}

// readResult copies a Result out of its message.
func readResult(r schema.Result) testResult {
	var res testResult
	switch r.Which() {
	case schema.Result_Which_error:
		res.err = toCodeError(r)
	case schema.Result_Which_put:
		p, _ := r.Put()
		if res.found = p.HadPrev(); res.found {
			kv, err := p.Prev()
			readPrev(&res, kv, err)
		}
	case schema.Result_Which_delete:
		d, _ := r.Delete()
		res.succeeded = d.Deleted()
		if res.found = d.HasPrev(); res.found {
			kv, err := d.Prev()
			readPrev(&res, kv, err)
		}
	case schema.Result_Which_cas:
		c, _ := r.Cas()
		res.succeeded = c.Succeeded()
		if res.found = c.Found(); res.found {
			kv, err := c.Current()
			readPrev(&res, kv, err)
		}
	case schema.Result_Which_get:
		g, _ := r.Get()
		if res.found = g.Found(); res.found {
			kv, _ := g.Kv()
			v, _ := kv.Value()
			res.value = string(v)
		}
	case schema.Result_Which_range:
		rr, _ := r.Range()
		res.more = rr.More()
		l, _ := rr.Kvs()
		for i := 0; i < l.Len(); i++ {
			k, _ := l.At(i).Key()
			v, _ := l.At(i).Value()
			res.keys = append(res.keys, string(k))
			res.values = append(res.values, string(v))
		}
	default:
		res.err = fmt.Errorf("unknown result kind %d", r.Which())
	}
	return res
}

// batchOps sends ops as one KV.batch with k's session; the error is the
// call's own (an exception), the results answer ops in order.
func (k *kvClient) batchOps(ctx context.Context, ops []testOp) ([]testResult, error) {
	f, rel := k.kv.Batch(ctx, func(p schema.KV_batch_Params) error {
		req, err := p.NewReq()
		if err != nil {
			return err
		}
		req.SetSession(k.session)
		l, err := req.NewOps(int32(len(ops)))
		if err != nil {
			return err
		}
		for i, o := range ops {
			if err := fillOp(l.At(i), o); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, err
	}
	l, err := res.Results()
	if err != nil {
		return nil, err
	}
	if l.Len() != len(ops) {
		return nil, fmt.Errorf("batch of %d ops answered %d results", len(ops), l.Len())
	}
	out := make([]testResult, len(ops))
	for i := range out {
		out[i] = readResult(l.At(i))
	}
	return out, nil
}

// resultOf waits for a single-operation call and reads its result.
func resultOf[R interface{ Result() (schema.Result, error) }](f interface{ Struct() (R, error) }, rel capnp.ReleaseFunc) (testResult, error) {
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return testResult{}, err
	}
	res, err := r.Result()
	if err != nil {
		return testResult{}, err
	}
	return readResult(res), nil
}

// single runs o through its own KV method (put, get, ...) with k's
// session.
func (k *kvClient) single(ctx context.Context, o testOp) (testResult, error) {
	switch o.kind {
	case "put":
		return resultOf(k.kv.Put(ctx, func(p schema.KV_put_Params) error {
			p.SetSession(k.session)
			p.SetSeq(o.seq)
			return newOp(p.NewOp, o, setPut)
		}))
	case "get":
		return resultOf(k.kv.Get(ctx, func(p schema.KV_get_Params) error { return newOp(p.NewOp, o, setGet) }))
	case "delete":
		return resultOf(k.kv.Delete(ctx, func(p schema.KV_delete_Params) error {
			p.SetSession(k.session)
			p.SetSeq(o.seq)
			return newOp(p.NewOp, o, setDelete)
		}))
	case "cas":
		return resultOf(k.kv.Cas(ctx, func(p schema.KV_cas_Params) error {
			p.SetSession(k.session)
			p.SetSeq(o.seq)
			return newOp(p.NewOp, o, setCAS)
		}))
	case "range":
		return resultOf(k.kv.Range(ctx, func(p schema.KV_range_Params) error { return newOp(p.NewOp, o, setRange) }))
	}
	return testResult{}, fmt.Errorf("unknown op kind %q", o.kind)
}

// restrict derives a restricted KV from k (released when the test ends);
// it shares k's session.
func (k *kvClient) restrict(ctx context.Context, prefix string, restrictPrefix, readOnly bool) (*kvClient, error) {
	f, rel := k.kv.Restrict(ctx, func(p schema.KV_restrict_Params) error {
		p.SetRestrictPrefix(restrictPrefix)
		p.SetReadOnly(readOnly)
		return p.SetPrefix([]byte(prefix))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return nil, err
	}
	kv := res.Kv().AddRef()
	k.t.Cleanup(kv.Release)
	return &kvClient{t: k.t, kv: kv, session: k.session}, nil
}

// sessionMethod calls openSession, keepAlive or closeSession (on k's
// session) and returns its error field or the call's error.
func (k *kvClient) sessionMethod(ctx context.Context, method string) error {
	switch method {
	case "openSession":
		return k.openCode(ctx)
	case "keepAlive":
		return k.keepAlive(ctx)
	case "closeSession":
		f, rel := k.kv.CloseSession(ctx, func(p schema.KV_closeSession_Params) error { p.SetSession(k.session); return nil })
		defer rel()
		return resultErr(f.Struct())
	}
	return fmt.Errorf("unknown session method %q", method)
}
