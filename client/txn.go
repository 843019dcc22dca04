package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/capraft/capraft/internal/kvwire"
)

// Transactions, in the shape etcd's clientv3 users know:
//
//	resp, err := c.Txn(ctx).
//		If(client.ModRevision("counter").Equal(rev)).
//		Then(client.OpPut("counter", next)).
//		Else(client.OpGet("counter")).
//		Commit()
//
// If every comparison holds, the Then operations run, otherwise the Else
// ones, atomically: a transaction that writes is one log entry whose
// writes all take one revision, and its reads run as it is applied. A
// transaction that only compares and reads needs no session and is
// served by the node the client talks to (linearizably, unless
// Serializable). One branch may write a key once; a retried transaction
// is applied once (see TxnResponse.Replayed).

// Cmp is a transaction's comparison of a key's state with a given value.
// Make one with Value, Version, CreateRevision, ModRevision, Absent or
// Present.
type Cmp struct{ c kvwire.Comparison }

// ValueCmp compares a key's value; build a Cmp with its methods. A key
// that does not exist fails every value comparison.
type ValueCmp struct{ key string }

// Value compares key's value (byte-wise for Less and Greater).
func Value(key string) ValueCmp { return ValueCmp{key} }

func (v ValueCmp) cmp(op kvwire.Operator, value []byte) Cmp {
	return Cmp{kvwire.Comparison{Key: []byte(v.key), Target: kvwire.TargetValue, Operator: op, Value: value}}
}

// Equal holds when the key's value is value.
func (v ValueCmp) Equal(value []byte) Cmp { return v.cmp(kvwire.Equal, value) }

// NotEqual holds when the key exists with another value.
func (v ValueCmp) NotEqual(value []byte) Cmp { return v.cmp(kvwire.NotEqual, value) }

// Less holds when the key's value sorts before value.
func (v ValueCmp) Less(value []byte) Cmp { return v.cmp(kvwire.Less, value) }

// Greater holds when the key's value sorts after value.
func (v ValueCmp) Greater(value []byte) Cmp { return v.cmp(kvwire.Greater, value) }

// NumberCmp compares a key's version or one of its revisions; build a
// Cmp with its methods. A key that does not exist has them all 0.
type NumberCmp struct {
	key    string
	target kvwire.Target
}

// Version compares key's version (KeyValue.Version; 0: absent).
func Version(key string) NumberCmp { return NumberCmp{key, kvwire.TargetVersion} }

// CreateRevision compares the revision that created key.
func CreateRevision(key string) NumberCmp { return NumberCmp{key, kvwire.TargetCreateRevision} }

// ModRevision compares the revision of key's last write: Equal(rev) is the
// usual optimistic-concurrency guard.
func ModRevision(key string) NumberCmp { return NumberCmp{key, kvwire.TargetModRevision} }

func (n NumberCmp) cmp(op kvwire.Operator, v uint64) Cmp {
	return Cmp{kvwire.Comparison{Key: []byte(n.key), Target: n.target, Operator: op, Number: v}}
}

// Equal holds when the number is v.
func (n NumberCmp) Equal(v uint64) Cmp { return n.cmp(kvwire.Equal, v) }

// NotEqual holds when the number is not v.
func (n NumberCmp) NotEqual(v uint64) Cmp { return n.cmp(kvwire.NotEqual, v) }

// Less holds when the number is below v.
func (n NumberCmp) Less(v uint64) Cmp { return n.cmp(kvwire.Less, v) }

// Greater holds when the number is above v.
func (n NumberCmp) Greater(v uint64) Cmp { return n.cmp(kvwire.Greater, v) }

// Absent holds when key does not exist.
func Absent(key string) Cmp {
	return Cmp{kvwire.Comparison{Key: []byte(key), Target: kvwire.TargetAbsent, Operator: kvwire.Equal}}
}

// Present holds when key exists.
func Present(key string) Cmp {
	return Cmp{kvwire.Comparison{Key: []byte(key), Target: kvwire.TargetAbsent, Operator: kvwire.NotEqual}}
}

// Op is an operation of a transaction's branch: OpPut, OpDelete,
// OpDeletePrefix, OpGet or OpRange.
type Op struct{ o kvwire.Op }

// OpPut sets key to value (WithLease attaches it to a lease).
func OpPut(key string, value []byte, opts ...WriteOption) Op {
	op := Op{kvwire.Op{Kind: kvwire.Put, Key: []byte(key), Value: value}}
	applyWrite(&op.o, opts)
	return op
}

// OpDelete deletes key.
func OpDelete(key string) Op { return Op{kvwire.Op{Kind: kvwire.Delete, Key: []byte(key)}} }

// OpDeletePrefix deletes every key that starts with prefix (not empty);
// OpResult.Deleted says how many. As etcd's, a branch may not also write
// a key under the prefix, nor delete an overlapping prefix: Commit
// refuses such a transaction (a *ServerError with CodeInvalidArgument).
func OpDeletePrefix(prefix string) Op {
	return Op{kvwire.Op{Kind: kvwire.Delete, Key: []byte(prefix), Prefix: true}}
}

// OpGet reads key.
func OpGet(key string) Op { return Op{kvwire.Op{Kind: kvwire.Get, Key: []byte(key)}} }

// OpRange reads a page of the keys starting with prefix, at most limit
// (0: the node's maximum); After applies, Serializable does not (the
// transaction decides).
func OpRange(prefix string, limit uint32, opts ...ReadOption) Op {
	r := request{op: kvwire.Op{Kind: kvwire.Range, Key: []byte(prefix), Limit: limit}}
	for _, o := range opts {
		o(&r)
	}
	r.op.Serializable = false
	return Op{r.op}
}

// Txn is a transaction being built; Commit sends it. Its methods add to it
// and return it, so calls chain.
type Txn struct {
	c   *Client
	ctx context.Context
	t   kvwire.Transaction
	ser bool
}

// Txn starts a transaction; ctx bounds its Commit.
func (c *Client) Txn(ctx context.Context) *Txn { return &Txn{c: c, ctx: ctx} }

// If adds comparisons; all must hold for Then to run.
func (t *Txn) If(cmps ...Cmp) *Txn {
	for _, c := range cmps {
		t.t.Compares = append(t.t.Compares, c.c)
	}
	return t
}

// Then adds operations run when every comparison holds.
func (t *Txn) Then(ops ...Op) *Txn {
	for _, o := range ops {
		t.t.Then = append(t.t.Then, o.o)
	}
	return t
}

// Else adds operations run when a comparison does not hold.
func (t *Txn) Else(ops ...Op) *Txn {
	for _, o := range ops {
		t.t.Else = append(t.t.Else, o.o)
	}
	return t
}

// Serializable makes a transaction that only reads be served from the
// receiving node's state as it is (possibly stale). A transaction that
// writes ignores it.
func (t *Txn) Serializable() *Txn { t.ser = true; return t }

// TxnResponse is a committed transaction's outcome.
type TxnResponse struct {
	// Succeeded says every comparison held: Then ran (otherwise Else).
	Succeeded bool
	// Revision is the store's revision after the transaction: that of
	// all its writes, if its branch wrote.
	Revision uint64
	// Results answer the operations of the branch that ran, in order.
	Results []OpResult
	// Replayed: an attempt of this transaction was applied, its answer
	// lost, and the retry was answered from the cluster's record of it,
	// which keeps Succeeded and Revision only: Results is empty (read
	// again what you need).
	Replayed bool
}

// OpResult is one branch operation's outcome.
type OpResult struct {
	// Found: put: the key had a previous state, KV; delete: the key
	// existed, KV was its state; get: the key exists, KV is its state.
	// (A prefix delete: false, see Deleted.)
	Found bool
	KV    KeyValue
	// Deleted is the number of keys a delete removed (OpDeletePrefix:
	// any number; OpDelete: 0 or 1).
	Deleted uint64
	// Page is a range's page.
	Page Page
	// Err is set when the node could not answer this read (the
	// transaction's answer reached the size limit): the rest of the
	// transaction ran.
	Err error
}

// Commit sends the transaction and waits for its outcome, retrying as
// any write (or read, if it only reads) is retried.
func (t *Txn) Commit() (*TxnResponse, error) {
	req := &request{op: kvwire.Op{Kind: kvwire.Txn, Serializable: t.ser, Txn: &t.t}}
	if err := t.t.Check(); err != nil {
		var we *kvwire.Error
		errors.As(err, &we)
		return nil, fmt.Errorf("%s: %w", req.describe(), &ServerError{Code: CodeInvalidArgument, Message: we.Message})
	}
	// The node's limit, not WithMaxBatch's: that one packs batches, and
	// a larger txn goes alone.
	if n := req.op.Count(); n > nodeMaxBatchOps {
		return nil, fmt.Errorf("%s: %w", req.describe(), &ServerError{Code: CodeTooLarge,
			Message: fmt.Sprintf("a txn of %d compares and operations is over the node's limit of %d operations per request (the txn counts as one more)", n-1, nodeMaxBatchOps)})
	}
	r, err := t.c.do(t.ctx, req)
	if err != nil {
		return nil, err
	}
	return r.txn, nil
}

// txnResponse copies a transaction's result out of its message.
func txnResponse(r *kvwire.Result) *TxnResponse {
	resp := &TxnResponse{Succeeded: r.Succeeded, Revision: r.Revision}
	if r.Txn == nil {
		return resp
	}
	resp.Replayed = r.Txn.Replayed
	resp.Results = make([]OpResult, len(r.Txn.Results))
	for i := range r.Txn.Results {
		src, dst := &r.Txn.Results[i], &resp.Results[i]
		if e := src.Err; e != nil {
			code := ErrorCode(e.Code)
			dst.Err = &ServerError{Code: code, Message: trimCode(code, e.Message), LeaderHint: e.LeaderHint}
			continue
		}
		switch src.Kind {
		case kvwire.Put, kvwire.Get, kvwire.Delete:
			dst.Found = src.Found
			if src.Found {
				dst.KV = copyKV(&src.KV)
			}
			if src.Kind == kvwire.Delete {
				dst.Deleted = src.Count
			}
		case kvwire.Range:
			dst.Page = Page{More: src.More, Revision: r.Revision, KVs: make([]KeyValue, len(src.KVs))}
			for j := range src.KVs {
				dst.Page.KVs[j] = copyKV(&src.KVs[j])
			}
		}
	}
	return resp
}
