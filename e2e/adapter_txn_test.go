package e2e

// The client API the fault checks of transactions and watches need
// beyond kvClient (adapter_test.go): general transactions, deletes,
// whole-prefix ranges, watches with or without a linearizable start, and
// leadership transfer. Like adapter_test.go, this file names the client
// package; the tests use faultClient.

import (
	"context"
	"fmt"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/e2e/history"
)

// faultClient is a kvClient with the operations of the fault checks.
type faultClient interface {
	kvClient
	// Txn commits a transaction.
	Txn(ctx context.Context, t txnRequest) (txnReply, error)
	// Delete deletes key; existed says whether it existed, rev is the
	// store's revision after.
	Delete(ctx context.Context, key string) (existed bool, rev uint64, err error)
	// RangeAll reads every key with prefix, page by page; rev is the
	// revision of the last page.
	RangeAll(ctx context.Context, prefix string) (kvs []keyValue, rev uint64, err error)
	// WatchWith watches prefix from revision from (0: now, after a read
	// index if linearizable), as Watch does.
	WatchWith(ctx context.Context, prefix string, from uint64, linearizable bool) <-chan watchBatch
	// TransferLeadership asks the leader to hand its role to node to.
	TransferLeadership(ctx context.Context, to uint64) error
}

// txnRequest is a transaction: compares, then and else branches.
type txnRequest struct {
	compares  []txnCompare
	then, els []txnOp
}

// txnCompare compares key's target with value (CmpValue) or number.
type txnCompare struct {
	key    string
	target history.TxnTarget
	op     history.TxnOperator
	value  string
	number uint64
}

// txnOp is a branch operation; a range's key is its prefix.
type txnOp struct {
	kind       history.TxnOpKind
	key, value string
}

type txnReply struct {
	succeeded bool
	revision  uint64
	replayed  bool // the answer came from the session's record: no results
	results   []txnOpResult
}

type txnOpResult struct {
	found bool
	kv    keyValue // get: the key's state; put, delete: its previous state
	kvs   []keyValue
}

// faultClient returns a faultClient for endpoints, closed when the
// test ends.
func (e *env) faultClient(endpoints ...string) faultClient {
	e.t.Helper()
	cl, ok := e.client(endpoints...).(faultClient)
	if !ok {
		e.t.Fatal("the e2e client does not implement faultClient")
	}
	return cl
}

func fromClientKV(kv client.KeyValue) keyValue {
	return keyValue{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}
}

func (r realClient) Txn(ctx context.Context, t txnRequest) (txnReply, error) {
	var cmps []client.Cmp
	for _, c := range t.compares {
		switch c.target {
		case history.CmpValue:
			v := client.Value(c.key)
			f := [...]func([]byte) client.Cmp{v.Equal, v.NotEqual, v.Less, v.Greater}[c.op]
			cmps = append(cmps, f([]byte(c.value)))
		case history.CmpVersion, history.CmpCreateRevision, history.CmpModRevision:
			n := map[history.TxnTarget]func(string) client.NumberCmp{
				history.CmpVersion: client.Version, history.CmpCreateRevision: client.CreateRevision, history.CmpModRevision: client.ModRevision,
			}[c.target](c.key)
			f := [...]func(uint64) client.Cmp{n.Equal, n.NotEqual, n.Less, n.Greater}[c.op]
			cmps = append(cmps, f(c.number))
		case history.CmpAbsent:
			if c.op == history.OpEqual {
				cmps = append(cmps, client.Absent(c.key))
			} else {
				cmps = append(cmps, client.Present(c.key))
			}
		default:
			return txnReply{}, fmt.Errorf("txn compare target %d unknown to the adapter", c.target)
		}
	}
	ops := func(in []txnOp) ([]client.Op, error) {
		var out []client.Op
		for _, o := range in {
			switch o.kind {
			case history.TxnPut:
				out = append(out, client.OpPut(o.key, []byte(o.value)))
			case history.TxnDelete:
				out = append(out, client.OpDelete(o.key))
			case history.TxnGet:
				out = append(out, client.OpGet(o.key))
			case history.TxnRange:
				out = append(out, client.OpRange(o.key, 0))
			default:
				return nil, fmt.Errorf("txn op kind %d unknown to the adapter", o.kind)
			}
		}
		return out, nil
	}
	then, err := ops(t.then)
	if err != nil {
		return txnReply{}, err
	}
	els, err := ops(t.els)
	if err != nil {
		return txnReply{}, err
	}
	resp, err := r.c.Txn(ctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		return txnReply{}, err
	}
	out := txnReply{succeeded: resp.Succeeded, revision: resp.Revision, replayed: resp.Replayed}
	for _, res := range resp.Results {
		if res.Err != nil {
			return txnReply{}, fmt.Errorf("txn operation: %w", res.Err)
		}
		or := txnOpResult{found: res.Found, kv: fromClientKV(res.KV)}
		if res.Page.KVs != nil {
			or.kvs = []keyValue{}
			for _, kv := range res.Page.KVs {
				or.kvs = append(or.kvs, fromClientKV(kv))
			}
		}
		out.results = append(out.results, or)
	}
	return out, nil
}

func (r realClient) Delete(ctx context.Context, key string) (bool, uint64, error) {
	return r.c.Delete(ctx, key)
}

func (r realClient) RangeAll(ctx context.Context, prefix string) ([]keyValue, uint64, error) {
	var out []keyValue
	var rev uint64
	after := ""
	for page := 0; page < 10000; page++ {
		var opts []client.ReadOption
		if after != "" {
			opts = append(opts, client.After(after))
		}
		p, err := r.c.Range(ctx, prefix, 0, opts...)
		if err != nil {
			return nil, 0, err
		}
		rev = p.Revision
		for _, kv := range p.KVs {
			out = append(out, fromClientKV(kv))
		}
		if !p.More || len(p.KVs) == 0 {
			return out, rev, nil
		}
		after = p.KVs[len(p.KVs)-1].Key
	}
	return nil, 0, fmt.Errorf("range %q: more than 10000 pages", prefix)
}

func (r realClient) WatchWith(ctx context.Context, prefix string, from uint64, linearizable bool) <-chan watchBatch {
	opts := []client.WatchOption{client.WithRevision(from), client.WithProgressInterval(50 * time.Millisecond)}
	if linearizable {
		opts = append(opts, client.WithLinearizableStart())
	}
	return watchBatches(ctx, r.c.Watch(ctx, prefix, opts...))
}

// watchBatches turns a client watch channel into watchBatches.
func watchBatches(ctx context.Context, in <-chan client.WatchResponse) <-chan watchBatch {
	out := make(chan watchBatch)
	go func() {
		defer close(out)
		for resp := range in {
			b := watchBatch{upTo: resp.Revision, err: resp.Err}
			for _, e := range resp.Events {
				b.events = append(b.events, watchEvent{del: e.Type == client.EventDelete, key: e.KV.Key, value: string(e.KV.Value), rev: e.KV.ModRevision})
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (r realClient) TransferLeadership(ctx context.Context, to uint64) error {
	return r.c.TransferLeadership(ctx, to)
}
