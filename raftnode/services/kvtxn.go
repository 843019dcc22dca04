package services

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// Transactions ride the one request path as operations of kind Txn: a
// txn that writes is a write (proposed, or handed to the leader, with its
// session and sequence number; its compares and reads run when the entry
// is applied), a txn that only reads is a read (served here, after a read
// barrier unless serializable, by kv.Store.ReadTxn). Their branch
// results reach the client through kvResult.txn, in the codec's form.

// kvTxn converts a transaction to the state machine's form. It aliases
// o's byte slices.
func kvTxn(o *kvwire.Op) *kv.Txn {
	src := o.Txn
	if src == nil {
		return &kv.Txn{}
	}
	t := &kv.Txn{}
	if len(src.Compares) > 0 {
		t.Compares = make([]kv.TxnCompare, len(src.Compares))
	}
	for i := range src.Compares {
		c := &src.Compares[i]
		// The targets and operators are numbered alike in both forms.
		t.Compares[i] = kv.TxnCompare{Key: c.Key, Target: kv.TxnTarget(c.Target), Operator: kv.TxnOperator(c.Operator),
			Value: c.Value, Number: c.Number}
	}
	t.Then, t.Else = kvTxnOps(src.Then), kvTxnOps(src.Else)
	return t
}

// txnOpTypes maps the branch operations' kinds; the rest are refused
// before a request runs (kvwire.Transaction.Check), and the state machine
// refuses the zero type.
var txnOpTypes = map[kvwire.Kind]kv.TxnOpType{kvwire.Put: kv.TxnPut, kvwire.Delete: kv.TxnDelete,
	kvwire.Get: kv.TxnGet, kvwire.Range: kv.TxnRange}

func kvTxnOps(ops []kvwire.Op) []kv.TxnOp {
	if len(ops) == 0 {
		return nil
	}
	out := make([]kv.TxnOp, len(ops))
	for i := range ops {
		o := &ops[i]
		out[i] = kv.TxnOp{Type: txnOpTypes[o.Kind], Key: o.Key, Value: o.Value, After: o.After, Limit: o.Limit}
		switch o.Kind {
		case kvwire.Put:
			out[i].Lease = o.Lease
		case kvwire.Delete:
			out[i].Prefix = o.Prefix
		}
	}
	return out
}

// errTxnReadsFull answers the reads of a transaction beyond what one
// answer may carry.
var errTxnReadsFull = &requestError{schema.ErrorCode_tooLarge,
	"this transaction's answers reached the size limit before this read: read less in one transaction"}

// txnResults converts r, the state machine's outcome of the transaction
// o, into the codec's form, charging the bytes it reads to served (see
// readAll): a range page is cut at maxRangePageBytes, and reads past
// maxBatchReadBytes are answered errTxnReadsFull. A result saved with the
// session (r.Txn nil) is a replay. Only the kinds of o's operations are
// read (their keys may be released).
func txnResults(o *kvwire.Op, r *kv.Result, served *int) *kvwire.TxnResult {
	if r.Txn == nil {
		return &kvwire.TxnResult{Replayed: true}
	}
	var ops []kvwire.Op
	if o.Txn != nil {
		ops = o.Txn.Else
		if r.Succeeded {
			ops = o.Txn.Then
		}
	}
	if len(ops) != len(r.Txn.Results) {
		// Not reachable from a correct state machine; say so rather than
		// answer results that match no operation.
		return &kvwire.TxnResult{Results: []kvwire.Result{{Err: wireError(&requestError{schema.ErrorCode_internal,
			fmt.Sprintf("the state machine answered %d operations of a branch of %d", len(r.Txn.Results), len(ops))}, 0)}}}
	}
	out := &kvwire.TxnResult{Results: make([]kvwire.Result, len(r.Txn.Results))}
	for i := range r.Txn.Results {
		src, dst := &r.Txn.Results[i], &out.Results[i]
		dst.Revision = r.Revision
		kind := ops[i].Kind
		if (kind == kvwire.Get || kind == kvwire.Range) && *served > maxBatchReadBytes {
			dst.Err = wireError(errTxnReadsFull, 0)
			continue
		}
		dst.Kind = kind
		switch kind {
		case kvwire.Put, kvwire.Get:
			dst.Found, dst.KV = src.Found, kvwire.KeyValue(src.KV)
		case kvwire.Delete:
			dst.Succeeded, dst.Found, dst.KV = src.Found || src.Deleted > 0, src.Found, kvwire.KeyValue(src.KV)
			dst.Count = deleteCount(src.Deleted, src.Found)
		case kvwire.Range:
			kvs, more := cutPage(src.KVs, src.More)
			dst.More = more
			dst.KVs = make([]kvwire.KeyValue, len(kvs))
			for j := range kvs {
				dst.KVs[j] = kvwire.KeyValue(kvs[j])
			}
		}
		if kind == kvwire.Get || kind == kvwire.Range {
			*served += wireResultBytes(dst)
		}
	}
	return out
}

func wireResultBytes(r *kvwire.Result) int {
	n := len(r.KV.Key) + len(r.KV.Value)
	for i := range r.KVs {
		n += len(r.KVs[i].Key) + len(r.KVs[i].Value)
	}
	return n
}

// cloneTxnResult copies a forwarded transaction's results out of the
// response message.
func cloneTxnResult(src *kvwire.TxnResult) *kvwire.TxnResult {
	if src == nil {
		return nil
	}
	out := &kvwire.TxnResult{Replayed: src.Replayed, Results: make([]kvwire.Result, len(src.Results))}
	for i := range src.Results {
		s, d := &src.Results[i], &out.Results[i]
		*d = kvwire.Result{Revision: s.Revision, Kind: s.Kind, Succeeded: s.Succeeded, Found: s.Found, More: s.More, Count: s.Count}
		if s.Err != nil {
			e := *s.Err
			d.Err = &e
			continue
		}
		d.KV = kvwire.KeyValue(cloneKeyValue(&s.KV))
		if s.KVs != nil {
			d.KVs = make([]kvwire.KeyValue, len(s.KVs))
			for j := range s.KVs {
				d.KVs[j] = kvwire.KeyValue(cloneKeyValue(&s.KVs[j]))
			}
		}
	}
	return out
}

// confineTxn checks every key o's transaction compares, reads or writes
// against s (see kvScope.confine): a range over a wider prefix is
// narrowed to s's, as KV.range is; anything else outside is refused, and
// with it the whole transaction.
func (s *kvScope) confineTxn(o *kvwire.Op) error {
	if s.readOnly && o.IsWrite() {
		return denied("txn refused: it writes, and this KV is read-only (%s)", s.String())
	}
	if !s.restricted || o.Txn == nil {
		return nil
	}
	t := o.Txn
	for i := range t.Compares {
		if k := t.Compares[i].Key; !bytes.HasPrefix(k, s.prefix) {
			return denied("txn refused: its compare %d names key %s, outside this KV's grant (%s)", i, quoteKey(k), s.String())
		}
	}
	for _, b := range [2]struct {
		name string
		ops  []kvwire.Op
	}{{"then", t.Then}, {"else", t.Else}} {
		for i := range b.ops {
			if err := s.confine(&b.ops[i]); err != nil {
				return denied("txn refused: its %s operation %d: %s", b.name, i, strings.TrimPrefix(err.Error(), "permissionDenied: "))
			}
		}
	}
	return nil
}
