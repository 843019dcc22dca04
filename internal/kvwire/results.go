package kvwire

import (
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// EncodeResult writes r, the result of an operation of kind, into dst, a
// new Result.
func EncodeResult(dst schema.Result, kind Kind, r *Result) error {
	dst.SetRevision(r.Revision)
	if r.Err != nil {
		e, err := dst.NewError()
		if err != nil {
			return err
		}
		e.SetCode(r.Err.Code)
		e.SetLeaderHint(r.Err.LeaderHint)
		return e.SetMessage_(r.Err.Message)
	}
	switch kind {
	case Put:
		p, err := dst.NewPut()
		if err != nil {
			return err
		}
		p.SetHadPrev(r.Found)
		if r.Found {
			return newKeyValue(p.NewPrev, &r.KV)
		}
	case Delete:
		d, err := dst.NewDelete()
		if err != nil {
			return err
		}
		d.SetDeleted(r.Succeeded)
		d.SetCount(r.Count)
		if r.Found {
			return newKeyValue(d.NewPrev, &r.KV)
		}
	case CAS:
		c, err := dst.NewCas()
		if err != nil {
			return err
		}
		c.SetSucceeded(r.Succeeded)
		c.SetFound(r.Found)
		if r.Found {
			return newKeyValue(c.NewCurrent, &r.KV)
		}
	case Get:
		g, err := dst.NewGet()
		if err != nil {
			return err
		}
		g.SetFound(r.Found)
		if r.Found {
			return newKeyValue(g.NewKv, &r.KV)
		}
	case Txn:
		return encodeTxnResult(dst, r)
	case Range:
		rr, err := dst.NewRange()
		if err != nil {
			return err
		}
		rr.SetMore(r.More)
		l, err := rr.NewKvs(int32(len(r.KVs)))
		if err != nil {
			return err
		}
		for i := range r.KVs {
			if err := encodeKeyValue(l.At(i), &r.KVs[i]); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("encode result: unknown operation kind %d", kind)
	}
	return nil
}

func newKeyValue(alloc func() (schema.KeyValue, error), kv *KeyValue) error {
	dst, err := alloc()
	if err != nil {
		return err
	}
	return encodeKeyValue(dst, kv)
}

func encodeKeyValue(dst schema.KeyValue, kv *KeyValue) error {
	dst.SetCreateRevision(kv.CreateRevision)
	dst.SetModRevision(kv.ModRevision)
	dst.SetVersion(kv.Version)
	dst.SetLease(kv.Lease)
	if err := dst.SetKey(kv.Key); err != nil {
		return err
	}
	return dst.SetValue(kv.Value)
}

// resultWhich is the result kind that answers each operation kind.
var resultWhich = [...]schema.Result_Which{
	Put: schema.Result_Which_put, Get: schema.Result_Which_get, Delete: schema.Result_Which_delete,
	CAS: schema.Result_Which_cas, Range: schema.Result_Which_range, Txn: schema.Result_Which_txn,
}

// DecodeResult reads the result of an operation of kind. An error result
// is a Result with Err set; the error returned says the result is
// malformed (a bug in the node that sent it), a result of another kind
// included.
func DecodeResult(src schema.Result, kind Kind) (Result, error) {
	r := Result{Revision: src.Revision()}
	which := src.Which()
	if which == schema.Result_Which_error {
		e, err := src.Error()
		if err != nil {
			return Result{}, err
		}
		// The message is for humans: a malformed one does not hide the
		// code.
		msg, _ := e.Message_()
		r.Err = &Error{Code: e.Code(), Message: msg, LeaderHint: e.LeaderHint()}
		return r, nil
	}
	if int(kind) >= len(resultWhich) || kind == 0 {
		return Result{}, fmt.Errorf("a result for an unknown operation kind %d", kind)
	}
	if which != resultWhich[kind] {
		return Result{}, fmt.Errorf("a %v result", which)
	}
	var err error
	switch kind {
	case Put:
		p, perr := src.Put()
		if perr != nil {
			return Result{}, perr
		}
		r.Found = p.HadPrev()
		if r.Found {
			r.KV, err = decodeKeyValue(p.Prev())
		}
	case Delete:
		d, derr := src.Delete()
		if derr != nil {
			return Result{}, derr
		}
		r.Succeeded, r.Found, r.Count = d.Deleted(), d.HasPrev(), d.Count()
		if r.Succeeded && r.Count == 0 {
			r.Count = 1 // a node from before prefix deletes
		}
		if r.Found {
			r.KV, err = decodeKeyValue(d.Prev())
		}
	case CAS:
		c, cerr := src.Cas()
		if cerr != nil {
			return Result{}, cerr
		}
		r.Succeeded, r.Found = c.Succeeded(), c.Found()
		if r.Found {
			r.KV, err = decodeKeyValue(c.Current())
		}
	case Get:
		g, gerr := src.Get()
		if gerr != nil {
			return Result{}, gerr
		}
		r.Found = g.Found()
		if r.Found {
			r.KV, err = decodeKeyValue(g.Kv())
		}
	case Txn:
		err = decodeTxnResult(src, &r)
	case Range:
		rr, rerr := src.Range()
		if rerr != nil {
			return Result{}, rerr
		}
		r.More = rr.More()
		l, lerr := rr.Kvs()
		if lerr != nil {
			return Result{}, lerr
		}
		if err := checkListLen(src.Message(), l.Len()); err != nil {
			return Result{}, err
		}
		r.KVs = make([]KeyValue, l.Len())
		for i := range r.KVs {
			if r.KVs[i], err = decodeKeyValue(l.At(i), nil); err != nil {
				break
			}
		}
	}
	if err != nil {
		return Result{}, err
	}
	return r, nil
}

// checkListLen refuses a list of n elements that could not fit in msg
// with a word each. A list of empty structs takes no room in a message,
// yet the reader allocates a KeyValue for each element: a few bytes must
// not cost hundreds of megabytes. (The traversal limit, 64 MiB by
// default, charges such a list a word per element: up to 8 M elements.)
func checkListLen(msg *capnp.Message, n int) error {
	if n == 0 {
		return nil
	}
	if msg == nil {
		return fmt.Errorf("a list of %d elements outside a message", n)
	}
	size, err := msg.TotalSize()
	if err != nil {
		return err
	}
	if uint64(n) > size/8 {
		return fmt.Errorf("a list of %d elements in a message of %d bytes", n, size)
	}
	return nil
}

func decodeKeyValue(src schema.KeyValue, err error) (KeyValue, error) {
	if err != nil {
		return KeyValue{}, err
	}
	k, err := src.Key()
	if err != nil {
		return KeyValue{}, fmt.Errorf("key: %w", err)
	}
	v, err := src.Value()
	if err != nil {
		return KeyValue{}, fmt.Errorf("value: %w", err)
	}
	return KeyValue{Key: k, Value: v, CreateRevision: src.CreateRevision(),
		ModRevision: src.ModRevision(), Version: src.Version(), Lease: src.Lease()}, nil
}

// Results returns a batch's results, which must answer n operations.
func Results(src schema.KV_batch_Results, n int) (schema.Result_List, error) {
	l, err := src.Results()
	if err != nil {
		return schema.Result_List{}, err
	}
	if l.Len() != n {
		return schema.Result_List{}, fmt.Errorf("%d results answered for %d operations", l.Len(), n)
	}
	return l, nil
}
