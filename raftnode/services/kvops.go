package services

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// The key-value service works on kvwire's operations (the codec the
// client shares) and on kvResult, an operation's outcome as the node
// produces it; results are converted to kvwire's form at the edge, when
// they are encoded, and back when a forwarded call's answer is read.

// kvResult is one operation's outcome.
type kvResult struct {
	err        error // a *requestError or *kvwire.Error, or nil
	leaderHint uint64
	rev        uint64
	w          kv.Result // writes
	found      bool      // get
	kv         kv.KeyValue
	kvs        []kv.KeyValue // range
	more       bool
	txn        *kvwire.TxnResult // txn: the branch's results (w.Succeeded: which branch)
}

func invalid(format string, args ...any) error {
	return &requestError{schema.ErrorCode_invalidArgument, fmt.Sprintf(format, args...)}
}

// writeOp converts a write to the state machine's form.
func writeOp(o *kvwire.Op) kv.WriteOp {
	w := kv.WriteOp{Seq: o.Seq, Key: o.Key}
	switch o.Kind {
	case kvwire.Txn:
		w.Type, w.Key, w.Txn = kv.OpTxn, nil, kvTxn(o)
	case kvwire.Put:
		w.Type, w.Value, w.Lease = kv.OpPut, o.Value, o.Lease
	case kvwire.Delete:
		w.Type, w.Prefix = kv.OpDelete, o.Prefix
	case kvwire.CAS:
		w.Type, w.Value = kv.OpCAS, o.Value
		w.CompareValue, w.CompareRevision = o.CompareValue, o.CompareRevision
		w.DeleteOnSuccess = o.DeleteOnSuccess
		switch o.Compare {
		case kvwire.CompareValue:
			w.Compare = kv.CompareValue
		case kvwire.CompareModRevision:
			w.Compare = kv.CompareModRevision
		case kvwire.CompareAbsent:
			w.Compare = kv.CompareAbsent
		}
	}
	return w
}

// wireError is err as the client sees it, with the leader hint hint.
func wireError(err error, hint uint64) *kvwire.Error {
	var we *kvwire.Error
	if errors.As(err, &we) {
		if we.LeaderHint == hint {
			return we
		}
		return &kvwire.Error{Code: we.Code, Message: we.Message, LeaderHint: hint}
	}
	code, msg := errorCode(err)
	return &kvwire.Error{Code: code, Message: msg, LeaderHint: hint}
}

// wireResult is r, the result of o, in the codec's form. It aliases r's
// byte slices.
func wireResult(o *kvwire.Op, r *kvResult) kvwire.Result {
	out := kvwire.Result{Revision: r.rev}
	err := r.err
	if err == nil && (o.IsWrite() || o.Kind == kvwire.Txn) && r.w.Code != kv.OK {
		err = kvCodeError(r.w)
	}
	if err != nil {
		out.Err = wireError(err, r.leaderHint)
		return out
	}
	switch o.Kind {
	case kvwire.Put, kvwire.Delete, kvwire.CAS:
		out.Succeeded, out.Found, out.KV = r.w.Succeeded, r.w.Found, kvwire.KeyValue(r.w.Prev)
		if o.Kind == kvwire.Delete {
			out.Count = deleteCount(r.w.Deleted, r.w.Succeeded)
		}
	case kvwire.Get:
		out.Found, out.KV = r.found, kvwire.KeyValue(r.kv)
	case kvwire.Range:
		out.More = r.more
		out.KVs = make([]kvwire.KeyValue, len(r.kvs))
		for i := range r.kvs {
			out.KVs[i] = kvwire.KeyValue(r.kvs[i])
		}
	case kvwire.Txn:
		out.Succeeded, out.Txn = r.w.Succeeded, r.txn
		if out.Txn == nil {
			out.Txn = &kvwire.TxnResult{Replayed: true}
		}
	}
	return out
}

// encodeResult writes r, the result of o, into dst.
func encodeResult(dst schema.Result, o *kvwire.Op, r *kvResult) error {
	wr := wireResult(o, r)
	return kvwire.EncodeResult(dst, o.Kind, &wr)
}

// forwardedResult reads a forwarded call's result for o, copying every
// byte out of the response message (it dies when the call is released).
func forwardedResult(src schema.Result, o *kvwire.Op) kvResult {
	wr, err := kvwire.DecodeResult(src, o.Kind)
	if err != nil {
		return kvResult{err: &requestError{schema.ErrorCode_internal, fmt.Sprintf("malformed result from the leader: %v", err)}}
	}
	r := kvResult{rev: wr.Revision}
	if wr.Err != nil {
		r.err, r.leaderHint = &requestError{wr.Err.Code, wr.Err.Message}, wr.Err.LeaderHint
		return r
	}
	switch o.Kind {
	case kvwire.Put, kvwire.Delete, kvwire.CAS:
		r.w.Succeeded, r.w.Found = wr.Succeeded, wr.Found
		if wr.Found {
			r.w.Prev = cloneKeyValue(&wr.KV)
		}
		if o.Kind == kvwire.Delete && o.Prefix {
			r.w.Deleted = wr.Count
		}
	case kvwire.Get:
		r.found = wr.Found
		if wr.Found {
			r.kv = cloneKeyValue(&wr.KV)
		}
	case kvwire.Range:
		r.more = wr.More
		r.kvs = make([]kv.KeyValue, len(wr.KVs))
		for i := range wr.KVs {
			r.kvs[i] = cloneKeyValue(&wr.KVs[i])
		}
	case kvwire.Txn:
		r.w.Succeeded, r.txn = wr.Succeeded, cloneTxnResult(wr.Txn)
	}
	return r
}

// deleteCount is a delete's number of keys deleted as the client reads
// it: a prefix delete's count, else 1 for a key that was deleted.
func deleteCount(prefixDeleted uint64, deleted bool) uint64 {
	if prefixDeleted == 0 && deleted {
		return 1
	}
	return prefixDeleted
}

func cloneKeyValue(src *kvwire.KeyValue) kv.KeyValue {
	return kv.KeyValue{
		Key: bytes.Clone(src.Key), Value: bytes.Clone(src.Value),
		CreateRevision: src.CreateRevision, ModRevision: src.ModRevision, Version: src.Version,
	}
}

// fillError writes err, with the leader hint hint, into e: the error
// field of the session and admin methods' results.
func fillError(e schema.Error, err error, hint uint64) error {
	code, msg := errorCode(err)
	e.SetCode(code)
	e.SetLeaderHint(hint)
	return e.SetMessage_(msg)
}
