package kvwire

import (
	"fmt"

	"github.com/capraft/capraft/schema"
)

// Header is a batch request's fields besides its operations.
type Header struct {
	// Session is the writes' session (0 when the batch only reads).
	Session uint64
	// AckedBelow: the client has seen the results of every seq below it.
	AckedBelow uint64
	// Forwarded marks a batch a follower handed to the leader.
	Forwarded bool
}

// Request is a decoded KV.batch request.
type Request struct {
	Header
	Ops []Op
	// Errs, when not nil, holds why each operation cannot run (nil for
	// those that can): it is malformed, or over a size limit. It is nil
	// when every operation can.
	Errs []error
}

// NewRequest writes h into dst's request and makes room for n operations,
// which the caller fills with EncodeOp.
func NewRequest(dst schema.KV_batch_Params, h Header, n int) (schema.Op_List, error) {
	req, err := dst.NewReq()
	if err != nil {
		return schema.Op_List{}, fmt.Errorf("batch request: %w", err)
	}
	req.SetSession(h.Session)
	req.SetAckedBelow(h.AckedBelow)
	req.SetForwarded(h.Forwarded)
	ops, err := req.NewOps(int32(n))
	if err != nil {
		return schema.Op_List{}, fmt.Errorf("batch of %d operations: %w", n, err)
	}
	return ops, nil
}

// DecodeRequest reads a KV.batch request. A request that cannot be read,
// or holds more than lim.MaxBatchOps operations, is an error of the whole
// call (the answer to an unbounded number of operations could exceed the
// message limit itself). Otherwise each operation that is malformed or
// over lim has its own error in Errs; if the operations' keys and values
// add up to more than lim.MaxBatchBytes, every operation that had no
// error has that one.
func DecodeRequest(src schema.KV_batch_Params, lim Limits) (Request, error) {
	req, err := src.Req()
	if err != nil {
		return Request{}, invalid("batch: %v", err)
	}
	l, err := req.Ops()
	if err != nil {
		return Request{}, invalid("batch ops: %v", err)
	}
	if err := lim.checkBatchOps(l.Len()); err != nil {
		return Request{}, err
	}
	r := Request{
		Header: Header{Session: req.Session(), AckedBelow: req.AckedBelow(), Forwarded: req.Forwarded()},
		Ops:    make([]Op, l.Len()),
	}
	fail := func(i int, err error) {
		if r.Errs == nil {
			r.Errs = make([]error, len(r.Ops))
		}
		r.Errs[i] = err
	}
	total := 0
	// Each operation counts one towards MaxBatchOps, and a transaction's
	// compares and operations one each.
	budget := lim.MaxBatchOps - l.Len()
	for i := range r.Ops {
		o, err := decodeOp(l.At(i), &budget)
		if err == nil {
			err = o.CheckSize(lim)
		}
		if err != nil {
			fail(i, err)
		}
		r.Ops[i] = o
		total += o.Bytes()
	}
	if err := lim.checkBatchBytes(total); err != nil {
		for i := range r.Ops {
			if r.Errs == nil || r.Errs[i] == nil {
				fail(i, err)
			}
		}
	}
	return r, nil
}

// EncodeOp writes o into dst, a new Op.
func EncodeOp(dst schema.Op, o *Op) error {
	dst.SetSeq(o.Seq)
	switch o.Kind {
	case Put:
		p, err := dst.NewPut()
		if err != nil {
			return err
		}
		if err := p.SetKey(o.Key); err != nil {
			return err
		}
		p.SetLease(o.Lease)
		return p.SetValue(o.Value)
	case Get:
		g, err := dst.NewGet()
		if err != nil {
			return err
		}
		g.SetConsistency(consistency(o.Serializable))
		return g.SetKey(o.Key)
	case Delete:
		d, err := dst.NewDelete()
		if err != nil {
			return err
		}
		d.SetPrefix(o.Prefix)
		return d.SetKey(o.Key)
	case CAS:
		c, err := dst.NewCas()
		if err != nil {
			return err
		}
		if err := c.SetKey(o.Key); err != nil {
			return err
		}
		switch o.Compare {
		case CompareValue:
			if err := c.Expected().SetValue(o.CompareValue); err != nil {
				return err
			}
		case CompareModRevision:
			c.Expected().SetModRevision(o.CompareRevision)
		case CompareAbsent:
			c.Expected().SetAbsent()
		default:
			return fmt.Errorf("encode cas: unknown comparison %d", o.Compare)
		}
		c.SetDelete(o.DeleteOnSuccess)
		return c.SetNewValue(o.Value)
	case Txn:
		t, err := dst.NewTxn()
		if err != nil {
			return err
		}
		return encodeTxn(t, o)
	case Range:
		r, err := dst.NewRange()
		if err != nil {
			return err
		}
		if err := r.SetPrefix(o.Key); err != nil {
			return err
		}
		if err := r.SetAfter(o.After); err != nil {
			return err
		}
		r.SetLimit(o.Limit)
		r.SetConsistency(consistency(o.Serializable))
		return nil
	}
	return fmt.Errorf("encode: unknown operation kind %d", o.Kind)
}

func consistency(serializable bool) schema.Consistency {
	if serializable {
		return schema.Consistency_serializable
	}
	return schema.Consistency_linearizable
}

// DecodeOp reads one operation of a batch. Its error is an *Error with
// the code invalidArgument. A transaction's lists are bounded by the
// message only: DecodeRequest and DecodeTxnCall bound them by the limits.
func DecodeOp(src schema.Op) (Op, error) {
	budget := noBudget
	return decodeOp(src, &budget)
}

// decodeOp is DecodeOp, charging a transaction's compares and operations
// to budget (nil: the operation may not be a transaction).
func decodeOp(src schema.Op, budget *int) (Op, error) {
	var (
		o   Op
		err error
	)
	switch src.Which() {
	case schema.Op_Which_put:
		p, e := src.Put()
		if e != nil {
			return Op{}, invalid("put: %v", e)
		}
		o, err = DecodePut(p)
	case schema.Op_Which_get:
		g, e := src.Get()
		if e != nil {
			return Op{}, invalid("get: %v", e)
		}
		o, err = DecodeGet(g)
	case schema.Op_Which_delete:
		d, e := src.Delete()
		if e != nil {
			return Op{}, invalid("delete: %v", e)
		}
		o, err = DecodeDelete(d)
	case schema.Op_Which_cas:
		c, e := src.Cas()
		if e != nil {
			return Op{}, invalid("cas: %v", e)
		}
		o, err = DecodeCAS(c)
	case schema.Op_Which_range:
		r, e := src.Range()
		if e != nil {
			return Op{}, invalid("range: %v", e)
		}
		o, err = DecodeRange(r)
	case schema.Op_Which_txn:
		if budget == nil {
			return Op{}, invalid("a txn inside a txn")
		}
		t, e := src.Txn()
		if e != nil {
			return Op{}, invalid("txn: %v", e)
		}
		if o, err = decodeTxn(t, budget); err == nil {
			err = o.Txn.Check()
		}
	default:
		return Op{}, invalid("unknown operation %d (is the client newer than this node?)", src.Which())
	}
	o.Seq = src.Seq()
	return o, err
}

// DecodePut reads a put.
func DecodePut(p schema.PutOp) (Op, error) {
	k, err := p.Key()
	if err != nil {
		return Op{}, invalid("put key: %v", err)
	}
	v, err := p.Value()
	if err != nil {
		return Op{}, invalid("put value: %v", err)
	}
	return Op{Kind: Put, Key: k, Value: v, Lease: p.Lease()}, nil
}

// DecodeGet reads a get.
func DecodeGet(g schema.GetOp) (Op, error) {
	k, err := g.Key()
	if err != nil {
		return Op{}, invalid("get key: %v", err)
	}
	return Op{Kind: Get, Key: k, Serializable: g.Consistency() == schema.Consistency_serializable}, nil
}

// DecodeDelete reads a delete.
func DecodeDelete(d schema.DeleteOp) (Op, error) {
	k, err := d.Key()
	if err != nil {
		return Op{}, invalid("delete key: %v", err)
	}
	o := Op{Kind: Delete, Key: k, Prefix: d.Prefix()}
	if o.Prefix && len(k) == 0 {
		return o, errEmptyPrefix
	}
	return o, nil
}

// errEmptyPrefix refuses a delete of the empty prefix: deleting every key
// must not be one typo away.
var errEmptyPrefix = invalid("delete of the empty prefix refused: deleting every key must not be one typo away (delete the prefixes in use one by one)")

// DecodeCAS reads a compare-and-swap.
func DecodeCAS(c schema.CasOp) (Op, error) {
	k, err := c.Key()
	if err != nil {
		return Op{}, invalid("cas key: %v", err)
	}
	v, err := c.NewValue()
	if err != nil {
		return Op{}, invalid("cas new value: %v", err)
	}
	o := Op{Kind: CAS, Key: k, Value: v, DeleteOnSuccess: c.Delete()}
	switch e := c.Expected(); e.Which() {
	case schema.CasOp_expected_Which_value:
		o.Compare = CompareValue
		if o.CompareValue, err = e.Value(); err != nil {
			return Op{}, invalid("cas expected value: %v", err)
		}
	case schema.CasOp_expected_Which_modRevision:
		o.Compare, o.CompareRevision = CompareModRevision, e.ModRevision()
	case schema.CasOp_expected_Which_absent:
		o.Compare = CompareAbsent
	default:
		return Op{}, invalid("cas: unknown comparison %d", e.Which())
	}
	return o, nil
}

// DecodeRange reads a range.
func DecodeRange(r schema.RangeOp) (Op, error) {
	p, err := r.Prefix()
	if err != nil {
		return Op{}, invalid("range prefix: %v", err)
	}
	a, err := r.After()
	if err != nil {
		return Op{}, invalid("range after: %v", err)
	}
	return Op{Kind: Range, Key: p, After: a, Limit: r.Limit(),
		Serializable: r.Consistency() == schema.Consistency_serializable}, nil
}

// The single-operation methods (KV.put, get, delete, cas, range) carry
// one operation and, for writes, its session and sequence number. Their
// decoders return the session and the operation (its Seq set).

// DecodePutCall reads KV.put's arguments.
func DecodePutCall(p schema.KV_put_Params) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("put: %v", err)
	}
	o, err = DecodePut(src)
	o.Seq = p.Seq()
	return p.Session(), o, err
}

// DecodeDeleteCall reads KV.delete's arguments.
func DecodeDeleteCall(p schema.KV_delete_Params) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("delete: %v", err)
	}
	o, err = DecodeDelete(src)
	o.Seq = p.Seq()
	return p.Session(), o, err
}

// DecodeCASCall reads KV.cas's arguments.
func DecodeCASCall(p schema.KV_cas_Params) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("cas: %v", err)
	}
	o, err = DecodeCAS(src)
	o.Seq = p.Seq()
	return p.Session(), o, err
}

// DecodeGetCall reads KV.get's arguments (a read has no session).
func DecodeGetCall(p schema.KV_get_Params) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("get: %v", err)
	}
	o, err = DecodeGet(src)
	return 0, o, err
}

// DecodeRangeCall reads KV.range's arguments (a read has no session).
func DecodeRangeCall(p schema.KV_range_Params) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("range: %v", err)
	}
	o, err = DecodeRange(src)
	return 0, o, err
}
