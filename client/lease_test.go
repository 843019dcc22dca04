package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/capraft/capraft/client"
)

// waitFor polls cond until it holds or the deadline passes (bounded).
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A granted lease shows with its keys; revoking it deletes them at one
// revision, and it is then unknown to puts, keepalives and revokes.
func TestLeaseGrantAttachRevoke(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newKVClient(t, []string{addr})
	ctx := ctx(t)
	l, err := c.Grant(ctx, 10*time.Second)
	if err != nil || l.ID == 0 || l.TTL != 10*time.Second || l.Keys != 0 {
		t.Fatalf("Grant = %+v, %v", l, err)
	}
	for _, k := range []string{"a", "b"} {
		if _, err := c.Put(ctx, k, []byte("v"), client.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Txn(ctx).Then(client.OpPut("c", []byte("v"), client.WithLease(l.ID))).Commit(); err != nil {
		t.Fatal(err)
	}
	if kv, err := c.Get(ctx, "a"); err != nil || kv.Lease != l.ID {
		t.Fatalf("Get a = %+v, %v", kv, err)
	}
	if got, err := c.TimeToLive(ctx, l.ID); err != nil || got.Keys != 3 || got.Remaining <= 0 {
		t.Fatalf("TimeToLive = %+v, %v", got, err)
	}
	if ls, err := c.Leases(ctx); err != nil || len(ls) != 1 || ls[0].ID != l.ID {
		t.Fatalf("Leases = %+v, %v", ls, err)
	}
	before, err := c.Put(ctx, "unleased", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := c.Revoke(ctx, l.ID)
	if err != nil || rev != before+1 {
		t.Fatalf("Revoke = %d, %v; want revision %d", rev, err, before+1)
	}
	for _, k := range []string{"a", "b", "c"} {
		if _, err := c.Get(ctx, k); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("Get %s after the revoke: %v", k, err)
		}
	}
	if _, err := c.Put(ctx, "d", []byte("v"), client.WithLease(l.ID)); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("Put with a revoked lease: %v", err)
	}
	if _, err := c.KeepAlive(ctx, l.ID); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("KeepAlive of a revoked lease: %v", err)
	}
	if _, err := c.Revoke(ctx, l.ID); !errors.Is(err, client.ErrLeaseNotFound) {
		t.Fatalf("second Revoke: %v", err)
	}
	var se *client.ServerError
	if _, err := c.Grant(ctx, time.Millisecond); !errors.As(err, &se) || se.Code != client.CodeInvalidArgument {
		t.Fatalf("Grant of 1 ms: %v", err)
	}
}

// A lease nobody keeps alive expires by itself, with no write arriving,
// and its key goes; a lease kept alive stays, with its key, until its
// keeper's context ends. Keeping many leases alive costs one log entry
// per interval, not one per lease.
func TestLeaseExpiresUnlessKeptAlive(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newKVClient(t, []string{addr})
	ctx := ctx(t)
	const ttl = time.Second
	idle, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	// At once: granting the kept leases below can take longer than the
	// TTL on a loaded machine.
	if _, err := c.Put(ctx, "idle", []byte("v"), client.WithLease(idle.ID)); err != nil {
		t.Fatal(err)
	}
	const n = 100
	kept := make([]client.Lease, n)
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	var chans []<-chan client.Lease
	for i := range kept {
		if kept[i], err = c.Grant(ctx, ttl); err != nil {
			t.Fatal(err)
		}
		ch, err := c.KeepAlive(kctx, kept[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	if _, err := c.Put(ctx, "kept", []byte("v"), client.WithLease(kept[0].ID)); err != nil {
		t.Fatal(err)
	}
	st0, err := c.Status(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The grace after the node's election (TTL + election timeout) and the
	// TTL itself pass before the idle lease can go.
	waitFor(t, "the idle lease's key deleted", 30*time.Second, func() bool {
		_, err := c.Get(ctx, "idle")
		return errors.Is(err, client.ErrNotFound)
	})
	// Let a few more intervals pass with the kept leases due in between.
	time.Sleep(3 * ttl)
	st1, err := c.Status(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	entries := st1.Applied - st0.Applied
	intervals := int(elapsed / (ttl / 3))
	t.Logf("%d leases kept alive for %v: %d log entries (%d keepalive intervals of %v)", n, elapsed.Round(time.Millisecond), entries, intervals, ttl/3)
	if entries > uint64(3*intervals+10) {
		t.Errorf("%d leases kept alive cost %d entries in %d intervals: more than one keepalive entry an interval", n, entries, intervals)
	}
	if _, err := c.Get(ctx, "kept"); err != nil {
		t.Fatalf("the kept lease's key: %v", err)
	}
	for i, ch := range chans {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("keepalive channel %d closed while kept", i)
			}
			if l.ID != kept[i].ID {
				t.Fatalf("channel %d: lease %d", i, l.ID)
			}
		default:
		}
	}
	stop()
	for i, ch := range chans {
		waitFor(t, fmt.Sprint("keepalive channel ", i, " closed"), 10*time.Second, func() bool {
			select {
			case _, ok := <-ch:
				return !ok
			default:
				return false
			}
		})
	}
	waitFor(t, "the formerly kept lease's key deleted", 30*time.Second, func() bool {
		_, err := c.Get(ctx, "kept")
		return errors.Is(err, client.ErrNotFound)
	})
}
