package e2e

import (
	"context"
	"strings"
	"time"

	"github.com/capraft/capraft/e2e/faultproxy"
)

// injectFault injects fault f (kill-, restart- (a clean stop), wipe-,
// corrupt-, pause-, partition- with -leader or -follower, or transfer)
// and undoes it; run(d) lets the load run for d. admin is used only for
// transfer. A node that lost or corrupted its disk is restored before
// injectFault returns: two disks lost at once would be a majority of
// three.
func (e *env) injectFault(admin faultClient, f string, run func(time.Duration)) {
	t := e.t
	t.Helper()
	leader := e.waitLeader(e.c.IDs(), 10*time.Second)
	victim := leader
	if strings.HasSuffix(f, "-follower") || f == "transfer" {
		others := e.others(leader)
		victim = others[e.rng.Intn(len(others))]
	}
	switch {
	case strings.HasPrefix(f, "kill-"):
		t.Logf("nemesis: kill -9 node %d (%s)", victim, f)
		if err := e.c.Kill(victim); err != nil {
			t.Fatal(err)
		}
		run(1500 * time.Millisecond)
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := e.c.Restart(rctx, victim)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nemesis: restarted node %d", victim)
	case strings.HasPrefix(f, "wipe-"):
		// Disk loss: the node comes back empty and is restored from its
		// peers (its watch history starts at what it restored).
		t.Logf("nemesis: kill -9 node %d and wipe its data directory (%s)", victim, f)
		if err := e.c.Kill(victim); err != nil {
			t.Fatal(err)
		}
		if err := e.c.Wipe(victim); err != nil {
			t.Fatal(err)
		}
		run(time.Second)
		e.restartRestored(victim)
	case strings.HasPrefix(f, "corrupt-"):
		// A flipped byte in the last record of a cleanly stopped node's
		// log: corruption, repaired from the peers with a new
		// incarnation; the next fault waits for its restoration.
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := e.c.Stop(sctx, victim)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nemesis: stopped node %d, flipped a byte in %s (%s)", victim, e.flipLastRecordByte(victim), f)
		e.restartRestored(victim)
	case strings.HasPrefix(f, "restart-"):
		t.Logf("nemesis: stop node %d (%s)", victim, f)
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := e.c.Stop(sctx, victim)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		run(500 * time.Millisecond)
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = e.c.Restart(rctx, victim)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("nemesis: restarted node %d", victim)
	case strings.HasPrefix(f, "pause-"):
		t.Logf("nemesis: SIGSTOP node %d (%s)", victim, f)
		if err := e.c.Pause(victim); err != nil {
			t.Fatal(err)
		}
		run(1500 * time.Millisecond)
		if err := e.c.Resume(victim); err != nil {
			t.Fatal(err)
		}
		t.Logf("nemesis: SIGCONT node %d", victim)
	case f == "transfer":
		t.Logf("nemesis: transfer leadership from %d to %d", leader, victim)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := admin.TransferLeadership(ctx, victim)
		cancel()
		if err != nil {
			// Under load a transfer may time out; the next fault goes on
			// with whoever leads.
			t.Logf("nemesis: transfer to %d: %v", victim, err)
		}
	default:
		mode := []faultproxy.Mode{faultproxy.Refuse, faultproxy.Blackhole}[e.rng.Intn(2)]
		e.c.Mesh().SetMode(mode)
		t.Logf("nemesis: isolate node %d (%s, %v)", victim, f, mode)
		e.c.Mesh().Isolate(victim)
		run(2 * time.Second)
		e.c.Mesh().Heal()
		t.Logf("nemesis: healed")
	}
}
