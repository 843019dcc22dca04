package e2e

// This file and adapter_txn_test.go (transactions, deletes, ranges and
// watches for the fault checks) are the only ones that name the client
// package's key-value API; the tests use the small interfaces they
// implement.

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"github.com/capraft/capraft/client"
)

// newKVClient returns a client for endpoints that logs in with token (if
// any) and speaks TLS with tlsCfg (if not nil).
func newKVClient(endpoints []string, token string, tlsCfg *tls.Config) (kvClient, error) {
	return newKVClientWith(endpoints, token, tlsCfg)
}

// newSpreadingKVClient is newKVClient with the client's read spreading
// on: its reads go to every endpoint.
func newSpreadingKVClient(endpoints []string, token string, tlsCfg *tls.Config) (kvClient, error) {
	return newKVClientWith(endpoints, token, tlsCfg, client.WithReadSpreading(true))
}

func newKVClientWith(endpoints []string, token string, tlsCfg *tls.Config, extra ...client.Option) (kvClient, error) {
	opts := []client.Option{client.WithDialTimeout(time.Second)}
	if token != "" {
		opts = append(opts, client.WithToken(token))
	}
	if tlsCfg != nil {
		opts = append(opts, client.WithTLS(tlsCfg))
	}
	c, err := client.New(endpoints, append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	return realClient{c}, nil
}

type realClient struct{ c *client.Client }

func (r realClient) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return r.c.Put(ctx, key, value)
}

func (r realClient) Get(ctx context.Context, key string, serializable bool) (keyValue, error) {
	var opts []client.ReadOption
	if serializable {
		opts = append(opts, client.Serializable())
	}
	kv, err := r.c.Get(ctx, key, opts...)
	if err != nil {
		return keyValue{}, err
	}
	return keyValue{Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version}, nil
}

func (r realClient) CAS(ctx context.Context, key string, expect []byte, value []byte) (uint64, error) {
	cmp := client.IfAbsent()
	if expect != nil {
		cmp = client.IfValue(expect)
	}
	return r.c.CompareAndSwap(ctx, key, cmp, value)
}

func (r realClient) Status(ctx context.Context, endpoint string) (nodeStatus, error) {
	s, err := r.c.Status(ctx, endpoint)
	if err != nil {
		return nodeStatus{}, err
	}
	return nodeStatus{
		ID: s.ID, Role: string(s.Role), Term: s.Term, Leader: s.Leader, Commit: s.Commit, Applied: s.Applied,
		LastIndex: s.LastIndex, SnapshotIndex: s.SnapshotIndex, Revision: s.Revision, ClusterID: s.ClusterID,
	}, nil
}

func (r realClient) AddMember(ctx context.Context, id uint64, addr string, learner bool) error {
	return r.c.AddMember(ctx, id, addr, learner)
}

func (r realClient) PromoteMember(ctx context.Context, id uint64) error {
	return r.c.PromoteMember(ctx, id)
}

func (r realClient) RemoveMember(ctx context.Context, id uint64) error {
	return r.c.RemoveMember(ctx, id)
}

func (r realClient) Members(ctx context.Context) (uint64, map[uint64]bool, error) {
	leader, ms, err := r.c.Members(ctx)
	if err != nil {
		return 0, nil, err
	}
	out := make(map[uint64]bool, len(ms))
	for _, m := range ms {
		out[m.ID] = m.Learner
	}
	return leader, out, nil
}

func (r realClient) CreateToken(ctx context.Context, prefix string, readOnly bool) (string, string, error) {
	return r.c.CreateToken(ctx, client.TokenSpec{RestrictPrefix: true, Prefix: prefix, ReadOnly: readOnly})
}

func (r realClient) RevokeToken(ctx context.Context, id string) error {
	return r.c.RevokeToken(ctx, id, time.Time{})
}

func (r realClient) Close() error { return r.c.Close() }

func (r realClient) Grant(ctx context.Context, ttl time.Duration) (uint64, error) {
	l, err := r.c.Grant(ctx, ttl)
	return l.ID, err
}

func (r realClient) KeepAlive(ctx context.Context, id uint64) error {
	_, err := r.c.KeepAlive(ctx, id)
	return err
}

func (r realClient) PutLeased(ctx context.Context, key string, value []byte, lease uint64) (uint64, error) {
	return r.c.Put(ctx, key, value, client.WithLease(lease))
}

func (r realClient) LeaseRemaining(ctx context.Context, id uint64) (time.Duration, error) {
	l, err := r.c.TimeToLive(ctx, id)
	return l.Remaining, err
}

func isLeaseNotFound(err error) bool { return errors.Is(err, client.ErrLeaseNotFound) }

func isNotFound(err error) bool         { return errors.Is(err, client.ErrNotFound) }
func isCompareFailed(err error) bool    { return errors.Is(err, client.ErrCompareFailed) }
func isPermissionDenied(err error) bool { return errors.Is(err, client.ErrPermissionDenied) }

func (r realClient) TxnSet(ctx context.Context, key string, modRev uint64, value []byte) (bool, error) {
	resp, err := r.c.Txn(ctx).If(client.ModRevision(key).Equal(modRev)).Then(client.OpPut(key, value)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// Watch watches prefix from revision from (0: from now, after a read
// index) and delivers each batch's events and the revision it brings the
// watch up to; err is set on the last response of a watch that ended
// for good.
func (r realClient) Watch(ctx context.Context, prefix string, from uint64) <-chan watchBatch {
	out := make(chan watchBatch)
	in := r.c.Watch(ctx, prefix, client.WithRevision(from), client.WithLinearizableStart(), client.WithProgressInterval(50*time.Millisecond))
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
