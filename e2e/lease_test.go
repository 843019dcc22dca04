package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestLeasesExpireOnceAcrossALeaderKill: a lease nobody keeps alive, with
// three keys, is due when the leader is killed with -9. The new leader
// expires it (after its grace) even though no write arrives: its keys
// are deleted once, all at one revision (the store's revision moves by
// exactly one over the whole test), and a lease kept alive across the
// kill survives it. The killed node, restarted, agrees.
func TestLeasesExpireOnceAcrossALeaderKill(t *testing.T) {
	e := newEnv(t, envConfig{})
	old := e.waitLeader(e.c.IDs(), 10*time.Second)
	cl := e.client(e.c.Addrs()...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const ttl = 2 * time.Second
	idle, err := cl.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	kept, err := cl.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.KeepAlive(ctx, kept); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cl.PutLeased(ctx, fmt.Sprint("idle/", i), []byte("v"), idle); err != nil {
			t.Fatal(err)
		}
	}
	rev, err := cl.PutLeased(ctx, "kept", []byte("v"), kept)
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(10*time.Second, "the idle lease due", func() (bool, string) {
		left, err := cl.LeaseRemaining(ctx, idle)
		return isLeaseNotFound(err) || (err == nil && left <= 0), fmt.Sprint(left, err)
	})
	if err := e.c.Kill(old); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed leader %d with the idle lease due", old)
	lead := e.waitLeader(e.others(old), 10*time.Second)
	e.waitFor(30*time.Second, "the idle lease's keys deleted", func() (bool, string) {
		_, err := cl.Get(ctx, "idle/0", false)
		return isNotFound(err), fmt.Sprint(err)
	})
	time.Sleep(2 * ttl) // more than the kept lease's TTL, with it due in between
	for i := range 3 {
		if _, err := cl.Get(ctx, fmt.Sprint("idle/", i), false); !isNotFound(err) {
			t.Fatalf("idle/%d after the expiry: %v", i, err)
		}
	}
	if _, err := cl.Get(ctx, "kept", false); err != nil {
		t.Fatalf("the kept lease's key after the kill: %v", err)
	}
	st, err := cl.Status(ctx, e.c.Addr(lead))
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != rev+1 {
		t.Fatalf("revision %d, want %d: the idle lease's keys must be deleted at one revision, once", st.Revision, rev+1)
	}
	if err := e.c.Restart(ctx, old); err != nil {
		t.Fatal(err)
	}
	e.waitFor(30*time.Second, "the restarted node caught up", func() (bool, string) {
		s, err := cl.Status(ctx, e.c.Addr(old))
		return err == nil && s.Revision == rev+1 && s.Applied >= st.Applied, fmt.Sprint(s.Revision, s.Applied, err)
	})
}
