package raftnode_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// leaseGrant grants a lease of ttl with prefix through k.
func (k *kvClient) leaseGrant(ctx context.Context, ttl time.Duration, prefix string) (uint64, []byte, error) {
	f, rel := k.kv.LeaseGrant(ctx, func(p schema.KV_leaseGrant_Params) error {
		p.SetTtlMillis(uint64(ttl / time.Millisecond))
		return p.SetPrefix([]byte(prefix))
	})
	defer rel()
	res, err := f.Struct()
	if err := resultErr(res, err); err != nil {
		return 0, nil, err
	}
	l, err := res.Lease()
	if err != nil {
		return 0, nil, err
	}
	p, _ := l.Prefix()
	return l.Id(), append([]byte(nil), p...), nil
}

// leaseKeepAlive renews ids through k and returns which were found.
func (k *kvClient) leaseKeepAlive(ctx context.Context, ids ...uint64) ([]bool, error) {
	f, rel := k.kv.LeaseKeepAlive(ctx, func(p schema.KV_leaseKeepAlive_Params) error {
		l, err := p.NewLeases(int32(len(ids)))
		for i, id := range ids {
			l.Set(i, id)
		}
		return err
	})
	defer rel()
	res, err := f.Struct()
	if err := resultErr(res, err); err != nil {
		return nil, err
	}
	sl, err := res.Statuses()
	if err != nil {
		return nil, err
	}
	found := make([]bool, sl.Len())
	for i := range found {
		found[i] = sl.At(i).Found()
	}
	return found, nil
}

func (k *kvClient) leaseRevoke(ctx context.Context, id uint64) (uint64, error) {
	f, rel := k.kv.LeaseRevoke(ctx, func(p schema.KV_leaseRevoke_Params) error { p.SetLease(id); return nil })
	defer rel()
	res, err := f.Struct()
	if err := resultErr(res, err); err != nil {
		return 0, err
	}
	return res.Revision(), nil
}

func (k *kvClient) leaseList(ctx context.Context) ([]uint64, error) {
	f, rel := k.kv.LeaseList(ctx, nil)
	defer rel()
	res, err := f.Struct()
	if err := resultErr(res, err); err != nil {
		return nil, err
	}
	l, err := res.Leases()
	if err != nil {
		return nil, err
	}
	ids := make([]uint64, l.Len())
	for i := range ids {
		ids[i] = l.At(i).Id()
	}
	return ids, nil
}

// putLeased writes key=value attached to lease with the next seq.
func (k *kvClient) putLeased(ctx context.Context, key, value string, lease uint64) error {
	k.seq++
	f, rel := k.kv.Put(ctx, func(p schema.KV_put_Params) error {
		p.SetSession(k.session)
		p.SetSeq(k.seq)
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		op.SetLease(lease)
		if err := op.SetKey([]byte(key)); err != nil {
			return err
		}
		return op.SetValue([]byte(value))
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		return err
	}
	r, err := res.Result()
	if err != nil {
		return err
	}
	return toCodeError(r)
}

// A KV restricted to a prefix grants leases confined to it (through a
// follower too), attaches only keys within it, and does not see, keep
// alive or revoke wider leases; a read-only KV cannot grant, keep alive
// or revoke at all.
func TestLeasesThroughRestrictedCapabilities(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	follower := lead%3 + 1
	w := newWriter(t, ctx, c, follower)
	wide, _, err := w.leaseGrant(ctx, time.Minute, "")
	if err != nil {
		t.Fatal(err)
	}
	app := mustRestrict(t, ctx, w.kvClient, "app/", true, false)
	app.openRetry(t, ctx)
	id, prefix, err := app.leaseGrant(ctx, time.Minute, "")
	if err != nil || string(prefix) != "app/" {
		t.Fatalf("grant through app/: %d %q %v", id, prefix, err)
	}
	if _, _, err := app.leaseGrant(ctx, time.Minute, "other/"); err == nil {
		t.Fatal("grant for other/ through app/ succeeded")
	} else {
		wantDenied(t, "grant for other/ through app/", err, "app/")
	}
	if err := app.putLeased(ctx, "app/x", "1", id); err != nil {
		t.Fatalf("put app/x with app's lease: %v", err)
	}
	if err := w.putLeased(ctx, "zzz", "1", id); !isCode(err, schema.ErrorCode_invalidArgument) {
		t.Fatalf("put zzz with app's lease: %v, want invalidArgument", err)
	}
	if err := app.putLeased(ctx, "app/y", "1", id+1000); !isCode(err, schema.ErrorCode_leaseNotFound) {
		t.Fatalf("put with an unknown lease: %v, want leaseNotFound", err)
	}
	if found, err := app.leaseKeepAlive(ctx, wide, id); err != nil || found[0] || !found[1] {
		t.Fatalf("keepalive of the wide and app leases through app/: %v %v", found, err)
	}
	if _, err := app.leaseRevoke(ctx, wide); !isCode(err, schema.ErrorCode_leaseNotFound) {
		t.Fatalf("revoke of the wide lease through app/: %v, want leaseNotFound", err)
	}
	rpctest.Eventually(t, 10*time.Second, "the follower lists app's lease only", func() bool {
		ids, err := app.leaseList(ctx)
		return err == nil && len(ids) == 1 && ids[0] == id
	})
	ro := mustRestrict(t, ctx, app, "", false, true)
	if _, _, err := ro.leaseGrant(ctx, time.Minute, ""); err == nil {
		t.Fatal("grant through a read-only KV succeeded")
	} else {
		wantDenied(t, "grant through a read-only KV", err, "read-only")
	}
	if _, err := ro.leaseKeepAlive(ctx, id); err == nil {
		t.Fatal("keepalive through a read-only KV succeeded")
	}
	if _, err := ro.leaseRevoke(ctx, id); err == nil {
		t.Fatal("revoke through a read-only KV succeeded")
	}
	if ids, err := ro.leaseList(ctx); err != nil || len(ids) != 1 {
		t.Fatalf("list through a read-only KV: %v %v", ids, err)
	}
	if _, err := app.leaseRevoke(ctx, id); err != nil {
		t.Fatalf("revoke of app's lease through app/: %v", err)
	}
	if _, found, err := w.get(ctx, "app/x", false); err != nil || found {
		t.Fatalf("app/x after its lease's revocation: found %v, %v", found, err)
	}
}

// Leases expire exactly once under a leader change: the leader is stopped
// while a lease is due; the new leader expires it after its grace, and its
// keys are deleted at one revision (the store's revision moves by exactly
// one); a lease kept alive across the change survives it; and the
// stopped node, back, agrees.
func TestLeasesExpireOnceAcrossALeaderChange(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	lead := c.leader()
	var eps []string
	for id := uint64(1); id <= 3; id++ {
		eps = append(eps, c.addrs[id])
	}
	cl, err := client.New(eps, client.WithDialTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ttl = time.Second
	idle, err := cl.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	// The kept lease's TTL leaves its keeper (one call a third of it)
	// room to find the new leader under -race on a loaded machine: at 1 s
	// a CI run lost it across the change.
	const keptTTL = 3 * time.Second
	kept, err := cl.Grant(ctx, keptTTL)
	if err != nil {
		t.Fatal(err)
	}
	kctx, stopKeeping := context.WithCancel(ctx)
	defer stopKeeping()
	if _, err := cl.KeepAlive(kctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"idle/1", "idle/2", "idle/3"} {
		if _, err := cl.Put(ctx, k, []byte("v"), client.WithLease(idle.ID)); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := cl.Put(ctx, "kept", []byte("v"), client.WithLease(kept.ID))
	if err != nil {
		t.Fatal(err)
	}
	// Stop the leader once the idle lease is due (its keepalive-free
	// deadline passed), before or after it proposed the expiry.
	rpctest.Eventually(t, 10*time.Second, "the idle lease due", func() bool {
		l, err := cl.TimeToLive(ctx, idle.ID)
		return errors.Is(err, client.ErrLeaseNotFound) || (err == nil && l.Remaining <= 0)
	})
	c.stop(lead)
	rpctest.Eventually(t, 30*time.Second, "the idle lease's keys deleted", func() bool {
		_, err := cl.Get(ctx, "idle/1")
		return errors.Is(err, client.ErrNotFound)
	})
	// Past two of its TTLs (longer than the new leader's grace, TTL plus
	// an election timeout): the kept lease lives on, and nothing else
	// was deleted or written.
	time.Sleep(2 * keptTTL)
	for _, k := range []string{"idle/2", "idle/3"} {
		if _, err := cl.Get(ctx, k); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("%s: %v", k, err)
		}
	}
	kv, err := cl.Get(ctx, "kept")
	if err != nil || kv.Lease != kept.ID {
		t.Fatalf("the kept lease's key: %+v, %v", kv, err)
	}
	newLead := c.leader()
	st, err := cl.Status(ctx, c.addrs[newLead])
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != rev+1 {
		t.Fatalf("revision %d after the expiry, want %d: the idle lease's keys must go at one revision, once", st.Revision, rev+1)
	}
	c.start(lead)
	rpctest.Eventually(t, 30*time.Second, "the restarted node caught up", func() bool {
		s, err := cl.Status(ctx, c.addrs[lead])
		return err == nil && s.Revision == rev+1 && s.Applied >= st.Applied
	})
	if _, err := cl.TimeToLive(ctx, kept.ID); err != nil {
		t.Fatalf("the kept lease after the change: %v", err)
	}
	stopKeeping()
	rpctest.Eventually(t, 30*time.Second, "the kept lease's key deleted once no longer kept", func() bool {
		_, err := cl.Get(ctx, "kept")
		return errors.Is(err, client.ErrNotFound)
	})
}
