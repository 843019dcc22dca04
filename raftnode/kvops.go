package raftnode

import (
	"bytes"
	"fmt"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// The key-value service works on these plain types; the schema's structs
// are decoded into them at the edge and encoded back from them, so the
// same code serves batches, single calls and forwarded calls.

type opKind uint8

const (
	opPut opKind = iota + 1
	opGet
	opDelete
	opCAS
	opRange
)

// kvOp is one operation of a request. Byte slices may alias the request
// message and are valid only while the call runs.
type kvOp struct {
	kind         opKind
	seq          uint64
	key, value   []byte // range: key is the prefix
	cmp          kv.CompareKind
	cmpValue     []byte
	cmpRev       uint64
	del          bool   // cas: delete on success
	after        []byte // range: page start (exclusive)
	limit        int
	serializable bool
}

func (o *kvOp) isWrite() bool { return o.kind == opPut || o.kind == opDelete || o.kind == opCAS }

// kvResult is one operation's outcome.
type kvResult struct {
	err        error // a *requestError, or nil
	leaderHint uint64
	rev        uint64
	w          kv.Result // writes
	found      bool      // get
	kv         kv.KeyValue
	kvs        []kv.KeyValue // range
	more       bool
}

// writeOp converts a write to the state machine's form.
func (o *kvOp) writeOp() kv.WriteOp {
	w := kv.WriteOp{Seq: o.seq, Key: o.key}
	switch o.kind {
	case opPut:
		w.Type, w.Value = kv.OpPut, o.value
	case opDelete:
		w.Type = kv.OpDelete
	case opCAS:
		w.Type, w.Value = kv.OpCAS, o.value
		w.Compare, w.CompareValue, w.CompareRevision = o.cmp, o.cmpValue, o.cmpRev
		w.DeleteOnSuccess = o.del
	}
	return w
}

func invalid(format string, args ...any) error {
	return &requestError{schema.ErrorCode_invalidArgument, fmt.Sprintf(format, args...)}
}

// decodeOp reads one schema Op.
func decodeOp(op schema.Op) (kvOp, error) {
	o := kvOp{seq: op.Seq()}
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

func decodePut(p schema.PutOp) (kvOp, error) {
	k, err := p.Key()
	if err != nil {
		return kvOp{}, invalid("put key: %v", err)
	}
	v, err := p.Value()
	if err != nil {
		return kvOp{}, invalid("put value: %v", err)
	}
	return kvOp{kind: opPut, key: k, value: v}, nil
}

func decodeGet(g schema.GetOp) (kvOp, error) {
	k, err := g.Key()
	if err != nil {
		return kvOp{}, invalid("get key: %v", err)
	}
	return kvOp{kind: opGet, key: k, serializable: g.Consistency() == schema.Consistency_serializable}, nil
}

func decodeDelete(d schema.DeleteOp) (kvOp, error) {
	k, err := d.Key()
	if err != nil {
		return kvOp{}, invalid("delete key: %v", err)
	}
	return kvOp{kind: opDelete, key: k}, nil
}

func decodeCAS(c schema.CasOp) (kvOp, error) {
	k, err := c.Key()
	if err != nil {
		return kvOp{}, invalid("cas key: %v", err)
	}
	v, err := c.NewValue()
	if err != nil {
		return kvOp{}, invalid("cas new value: %v", err)
	}
	o := kvOp{kind: opCAS, key: k, value: v, del: c.Delete()}
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

func decodeRange(r schema.RangeOp) (kvOp, error) {
	p, err := r.Prefix()
	if err != nil {
		return kvOp{}, invalid("range prefix: %v", err)
	}
	a, err := r.After()
	if err != nil {
		return kvOp{}, invalid("range after: %v", err)
	}
	return kvOp{kind: opRange, key: p, after: a, limit: int(r.Limit()), serializable: r.Consistency() == schema.Consistency_serializable}, nil
}

// encodeOp writes o into a schema Op (used to forward a request).
func encodeOp(dst schema.Op, o *kvOp) error {
	dst.SetSeq(o.seq)
	switch o.kind {
	case opPut:
		p, err := dst.NewPut()
		if err != nil {
			return err
		}
		if err := p.SetKey(o.key); err != nil {
			return err
		}
		return p.SetValue(o.value)
	case opGet:
		g, err := dst.NewGet()
		if err != nil {
			return err
		}
		g.SetConsistency(consistency(o.serializable))
		return g.SetKey(o.key)
	case opDelete:
		d, err := dst.NewDelete()
		if err != nil {
			return err
		}
		return d.SetKey(o.key)
	case opCAS:
		c, err := dst.NewCas()
		if err != nil {
			return err
		}
		if err := c.SetKey(o.key); err != nil {
			return err
		}
		if err := c.SetNewValue(o.value); err != nil {
			return err
		}
		c.SetDelete(o.del)
		switch o.cmp {
		case kv.CompareValue:
			return c.Expected().SetValue(o.cmpValue)
		case kv.CompareModRevision:
			c.Expected().SetModRevision(o.cmpRev)
		default:
			c.Expected().SetAbsent()
		}
		return nil
	case opRange:
		r, err := dst.NewRange()
		if err != nil {
			return err
		}
		r.SetLimit(uint32(o.limit))
		r.SetConsistency(consistency(o.serializable))
		if err := r.SetPrefix(o.key); err != nil {
			return err
		}
		return r.SetAfter(o.after)
	}
	return fmt.Errorf("encode op: unknown kind %d", o.kind)
}

func consistency(serializable bool) schema.Consistency {
	if serializable {
		return schema.Consistency_serializable
	}
	return schema.Consistency_linearizable
}

// encodeResult writes r, the result of o, into dst.
func encodeResult(dst schema.Result, o *kvOp, r *kvResult) error {
	dst.SetRevision(r.rev)
	if r.err != nil {
		return encodeError(dst, r.err, r.leaderHint)
	}
	if o.isWrite() && r.w.Code != kv.OK {
		return encodeError(dst, kvCodeError(r.w), r.leaderHint)
	}
	switch o.kind {
	case opPut:
		p, err := dst.NewPut()
		if err != nil {
			return err
		}
		p.SetHadPrev(r.w.Found)
		if r.w.Found {
			return setKeyValue(p.NewPrev, r.w.Prev)
		}
	case opDelete:
		d, err := dst.NewDelete()
		if err != nil {
			return err
		}
		d.SetDeleted(r.w.Succeeded)
		if r.w.Found {
			return setKeyValue(d.NewPrev, r.w.Prev)
		}
	case opCAS:
		c, err := dst.NewCas()
		if err != nil {
			return err
		}
		c.SetSucceeded(r.w.Succeeded)
		c.SetFound(r.w.Found)
		if r.w.Found {
			return setKeyValue(c.NewCurrent, r.w.Prev)
		}
	case opGet:
		g, err := dst.NewGet()
		if err != nil {
			return err
		}
		g.SetFound(r.found)
		if r.found {
			return setKeyValue(g.NewKv, r.kv)
		}
	case opRange:
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

func setKeyValue(alloc func() (schema.KeyValue, error), kvp kv.KeyValue) error {
	dst, err := alloc()
	if err != nil {
		return err
	}
	return fillKeyValue(dst, kvp)
}

func fillKeyValue(dst schema.KeyValue, kvp kv.KeyValue) error {
	dst.SetCreateRevision(kvp.CreateRevision)
	dst.SetModRevision(kvp.ModRevision)
	dst.SetVersion(kvp.Version)
	if err := dst.SetKey(kvp.Key); err != nil {
		return err
	}
	return dst.SetValue(kvp.Value)
}

func encodeError(dst schema.Result, err error, hint uint64) error {
	e, aerr := dst.NewError()
	if aerr != nil {
		return aerr
	}
	return fillError(e, err, hint)
}

func fillError(e schema.Error, err error, hint uint64) error {
	code, msg := errorCode(err)
	e.SetCode(code)
	e.SetLeaderHint(hint)
	return e.SetMessage_(msg)
}

// kvCodeError turns a state machine's refusal into a request error.
func kvCodeError(r kv.Result) error {
	code := schema.ErrorCode_internal
	switch r.Code {
	case kv.SessionExpired:
		code = schema.ErrorCode_sessionExpired
	case kv.StaleSequence:
		code = schema.ErrorCode_staleSequence
	case kv.InvalidArgument:
		code = schema.ErrorCode_invalidArgument
	case kv.TooLarge:
		code = schema.ErrorCode_tooLarge
	}
	msg := r.Message
	if msg == "" {
		msg = r.Code.String()
	}
	return &requestError{code, msg}
}

// decodeResult reads a forwarded call's result for o, copying every byte
// out of the response message (it dies when the call is released).
func decodeResult(src schema.Result, o *kvOp) kvResult {
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
			// Keep the state machine's codes for writes as kv codes so
			// encodeResult reproduces them exactly.
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

func readKeyValue(src schema.KeyValue, err error) (kv.KeyValue, error) {
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
	return kv.KeyValue{
		Key: bytes.Clone(k), Value: bytes.Clone(v),
		CreateRevision: src.CreateRevision(), ModRevision: src.ModRevision(), Version: src.Version(),
	}, nil
}
