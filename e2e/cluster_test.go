package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestElectsOneLeaderAndServesThroughEveryNode: a 3-node cluster elects one
// leader all nodes agree on; a write through any node is read,
// linearizably, through each of the others.
func TestElectsOneLeaderAndServesThroughEveryNode(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	leader := e.waitLeader(e.c.IDs(), 10*time.Second)
	e.waitFor(5*time.Second, "every node knows the leader", func() (bool, string) {
		st := e.statuses(e.c.IDs())
		leaders := 0
		for _, s := range st {
			if s.isLeader() {
				leaders++
			}
			if s.Leader != leader {
				return false, describe(st)
			}
		}
		return len(st) == 3 && leaders == 1, describe(st)
	})
	t.Logf("leader: node %d", leader)

	for _, a := range e.c.IDs() {
		key := fmt.Sprintf("through/%d", a)
		val := fmt.Sprintf("written-on-%d-%d", a, e.rng.Int63())
		ctx, cancel := opCtx()
		rev, err := e.clientFor(a).Put(ctx, key, []byte(val))
		cancel()
		if err != nil {
			t.Fatalf("put %s through node %d: %v", key, a, err)
		}
		if rev == 0 {
			t.Fatalf("put through node %d returned revision 0", a)
		}
		for _, b := range e.others(a) {
			ctx, cancel := opCtx()
			kv, err := e.clientFor(b).Get(ctx, key, false)
			cancel()
			if err != nil {
				t.Fatalf("linearizable get %s through node %d after the put through %d: %v", key, b, a, err)
			}
			if string(kv.Value) != val || kv.ModRevision != rev || kv.Version != 1 {
				t.Fatalf("get %s through node %d = %q (mod rev %d, version %d); want %q at rev %d, version 1",
					key, b, kv.Value, kv.ModRevision, kv.Version, val, rev)
			}
		}
	}
	ctx, cancel := opCtx()
	defer cancel()
	if _, err := e.clientFor(1).Get(ctx, "never/written", false); !isNotFound(err) {
		t.Fatalf("get of a missing key: %v, want not found", err)
	}

	// A follower stopped with SIGTERM exits 0; the others go on serving;
	// restarted, it rejoins and converges.
	f := e.others(leader)[e.rng.Intn(2)]
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	if err := e.c.Stop(sctx, f); err != nil {
		t.Fatalf("graceful stop of node %d: %v", f, err)
	}
	ctx2, cancel2 := opCtx()
	defer cancel2()
	if _, err := e.client(e.c.Addrs()...).Put(ctx2, "after/stop", []byte("x")); err != nil {
		t.Fatalf("put with node %d stopped: %v", f, err)
	}
	if err := e.c.Restart(sctx, f); err != nil {
		t.Fatal(err)
	}
	e.waitConverged(e.c.IDs(), 10*time.Second)
}

// counter increments key by compare-and-swap loops and counts the
// increments acknowledged and those whose outcome is unknown.
type counter struct {
	acked, unknown atomic.Int64
}

func (e *env) runCounter(ctx context.Context, cl kvClient, key string, maxOps int, c *counter, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; i < maxOps && ctx.Err() == nil; i++ {
		octx, cancel := opCtx()
		kv, err := cl.Get(octx, key, false)
		cancel()
		if err != nil {
			backoff(ctx)
			continue
		}
		n, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			e.t.Errorf("counter %s holds %q", key, kv.Value)
			return
		}
		octx, cancel = opCtx()
		_, err = cl.CAS(octx, key, kv.Value, []byte(strconv.Itoa(n+1)))
		cancel()
		switch {
		case err == nil:
			c.acked.Add(1)
		case isCompareFailed(err):
			// another incrementer won the race; nothing applied
		default:
			c.unknown.Add(1)
			backoff(ctx)
		}
	}
}

// TestLeaderKilledDuringWrites: kill -9 the leader under a write load; a
// new leader takes over and the load makes progress; every acknowledged
// write is readable afterwards and none was applied twice; a counter
// incremented by CAS loops ends between the acknowledged increments and
// those plus the ones with an unknown outcome.
func TestLeaderKilledDuringWrites(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	old := e.waitLeader(e.c.IDs(), 10*time.Second)
	all := e.client(e.c.Addrs()...)
	ctx, cancel := opCtx()
	if _, err := all.Put(ctx, "counter", []byte("0")); err != nil {
		t.Fatalf("init counter: %v", err)
	}
	cancel()

	clients := []kvClient{e.client(e.c.Addrs()...), e.client(e.c.Addrs()...)}
	w := e.startWrites(clients, "kill-leader", 6, 3000)
	var cnt counter
	var cwg sync.WaitGroup
	cctx, stopCounters := context.WithCancel(context.Background())
	defer stopCounters()
	for i := 0; i < 3; i++ {
		cwg.Add(1)
		go e.runCounter(cctx, clients[i%2], "counter", 2000, &cnt, &cwg)
	}
	e.waitAcked(w, 100, 15*time.Second, "writes before the kill")

	if err := e.c.Kill(old); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	t.Logf("killed leader %d", old)
	nl := e.waitLeader(e.others(old), 10*time.Second)
	t.Logf("node %d leads %v after the kill", nl, time.Since(killedAt).Round(time.Millisecond))
	if nl == old {
		t.Fatalf("killed node %d still reported as leader", old)
	}
	e.waitAcked(w, 100, 15*time.Second, "writes after the new leader")
	w.stop()
	stopCounters()
	cwg.Wait()

	e.verifyWrites(all, w, 20*time.Second)
	ctx, cancel = opCtx()
	defer cancel()
	kv, err := all.Get(ctx, "counter", false)
	if err != nil {
		t.Fatalf("read counter: %v", err)
	}
	final, err := strconv.Atoi(string(kv.Value))
	if err != nil {
		t.Fatalf("counter holds %q", kv.Value)
	}
	acked, unknown := int(cnt.acked.Load()), int(cnt.unknown.Load())
	t.Logf("counter %d: %d increments acknowledged, %d unknown", final, acked, unknown)
	if final < acked || final > acked+unknown {
		t.Fatalf("counter = %d, want between %d acknowledged and %d (+ unknown)", final, acked, acked+unknown)
	}
	if acked == 0 {
		t.Fatal("no increment acknowledged: the counter checked nothing")
	}
}

// TestRestartedNodeCatchesUpThroughSnapshot: a follower is killed, the
// cluster writes until the leader's log no longer holds what the follower
// needs next (small --snapshot-entries and --snapshot-catchup-entries), the
// follower restarts and catches up, which it can only do by
// InstallSnapshot.
func TestRestartedNodeCatchesUpThroughSnapshot(t *testing.T) {
	const snapEvery, keep = 200, 50
	e := newEnv(t, envConfig{proxies: true, args: []string{
		"--snapshot-entries", strconv.Itoa(snapEvery), "--snapshot-catchup-entries", strconv.Itoa(keep),
	}})
	leader := e.waitLeader(e.c.IDs(), 10*time.Second)
	follower := e.others(leader)[e.rng.Intn(2)]
	all := e.client(e.c.Addrs()...)
	for i := 0; i < 10; i++ {
		ctx, cancel := opCtx()
		_, err := all.Put(ctx, fmt.Sprintf("early/%d", i), []byte("x"))
		cancel()
		if err != nil {
			t.Fatalf("early put: %v", err)
		}
	}
	e.waitConverged(e.c.IDs(), 10*time.Second)
	before := e.statuses([]uint64{follower})[follower]
	if err := e.c.Kill(follower); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed follower %d at %s", follower, describe(map[uint64]nodeStatus{follower: before}))

	// Sequential writers: each write is its own log entry, so the log
	// grows as fast as the writes.
	w := e.startWrites([]kvClient{all}, "catchup", 4, 5000)
	var lead nodeStatus
	e.waitFor(30*time.Second, "the leader compacted past the follower's log", func() (bool, string) {
		id, st := e.leaderAmong(e.others(follower))
		lead = st[id]
		// The leader keeps entries after SnapshotIndex-keep; the follower
		// needs LastIndex+1.
		return id != 0 && lead.SnapshotIndex > before.LastIndex+keep+1, describe(st)
	})
	w.stop()
	acked, _ := w.counts()
	t.Logf("%d writes while the follower was down; leader now %s", acked, describe(map[uint64]nodeStatus{lead.ID: lead}))

	// The restarted follower never snapshots by itself, so a snapshot
	// index past what it had can only come from InstallSnapshot.
	e.setNodeArgs(follower, "--snapshot-entries", "100000000")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Restart(ctx, follower); err != nil {
		t.Fatal(err)
	}
	target := e.statuses([]uint64{lead.ID})[lead.ID].Commit
	e.waitFor(20*time.Second, "the restarted follower caught up", func() (bool, string) {
		st := e.statuses([]uint64{follower})
		s, ok := st[follower]
		return ok && s.Applied >= target, fmt.Sprintf("want applied >= %d: %s", target, describe(st))
	})
	after := e.statuses([]uint64{follower})[follower]
	if after.SnapshotIndex <= before.LastIndex {
		t.Fatalf("follower caught up from index %d to %d but its snapshot index is %d: no snapshot was installed",
			before.LastIndex, after.Applied, after.SnapshotIndex)
	}
	shown := 0
	for _, line := range strings.Split(e.c.Log(follower), "\n") {
		if shown < 5 && !strings.HasPrefix(line, "===") && strings.Contains(strings.ToLower(line), "snapshot") {
			t.Logf("follower log: %s", line)
			shown++
		}
	}
	// The follower's own state machine has the data, served from its
	// applied state.
	fc := e.clientFor(follower)
	w.mu.Lock()
	var key, val string
	for k, v := range w.acked {
		key, val = k, v
		break
	}
	w.mu.Unlock()
	sctx, scancel := opCtx()
	defer scancel()
	kv, err := fc.Get(sctx, key, true)
	if err != nil || string(kv.Value) != val {
		t.Fatalf("serializable get %s on the caught-up follower = %q, %v; want %q", key, kv.Value, err, val)
	}
	e.verifyWrites(fc, w, 20*time.Second)
}

// TestPartitionedLeaderServesNothingStale: the leader is cut off from the
// others through the proxies. It must not acknowledge writes nor answer
// linearizable reads with data the majority has since overwritten; the
// majority elects a leader and serves. After healing there is one leader
// again and every node converges.
func TestPartitionedLeaderServesNothingStale(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	old := e.waitLeader(e.c.IDs(), 10*time.Second)
	all := e.client(e.c.Addrs()...)
	ctx, cancel := opCtx()
	if _, err := all.Put(ctx, "p", []byte("before")); err != nil {
		t.Fatalf("put before the partition: %v", err)
	}
	cancel()
	e.waitConverged(e.c.IDs(), 10*time.Second)

	e.c.Mesh().Isolate(old)
	t.Logf("isolated leader %d: blocked links %v", old, e.c.Mesh().Blocked())
	rest := e.others(old)
	nl := e.waitLeader(rest, 10*time.Second)
	majority := e.client(e.c.Addr(rest[0]), e.c.Addr(rest[1]))
	ctx, cancel = opCtx()
	rev, err := majority.Put(ctx, "p", []byte("after"))
	cancel()
	if err != nil {
		t.Fatalf("put through the majority (leader %d): %v", nl, err)
	}
	t.Logf("majority leader %d wrote p=after at revision %d", nl, rev)

	isolated := e.clientFor(old)
	for i := 0; i < 2; i++ {
		ctx, cancel := opCtx()
		kv, err := isolated.Get(ctx, "p", false)
		cancel()
		if err == nil {
			t.Fatalf("linearizable get through the isolated old leader returned %q (rev %d); want an error", kv.Value, kv.ModRevision)
		}
		ctx, cancel = opCtx()
		_, err = isolated.Put(ctx, "p", []byte(fmt.Sprintf("isolated-%d", i)))
		cancel()
		if err == nil {
			t.Fatal("the isolated old leader acknowledged a write")
		}
		if i == 0 {
			t.Logf("isolated node answers: %v", err)
		}
	}
	ctx, cancel = opCtx()
	kv, err := majority.Get(ctx, "p", false)
	cancel()
	if err != nil || string(kv.Value) != "after" {
		t.Fatalf("majority get p = %q, %v; want after", kv.Value, err)
	}

	e.c.Mesh().Heal()
	final := e.waitLeader(e.c.IDs(), 15*time.Second)
	e.waitConverged(e.c.IDs(), 15*time.Second)
	t.Logf("healed: leader %d", final)
	ctx, cancel = opCtx()
	kv, err = all.Get(ctx, "p", false)
	cancel()
	if err != nil {
		t.Fatalf("get p after heal: %v", err)
	}
	if v := string(kv.Value); v != "after" && !strings.HasPrefix(v, "isolated-") {
		t.Fatalf("p = %q after heal", v)
	}
	for _, id := range e.c.IDs() {
		ctx, cancel := opCtx()
		got, err := e.clientFor(id).Get(ctx, "p", true)
		cancel()
		if err != nil || string(got.Value) != string(kv.Value) {
			t.Fatalf("node %d has p = %q, %v after converging; the cluster says %q", id, got.Value, err, kv.Value)
		}
	}
}

// TestWholeClusterKilledKeepsAcknowledgedWrites: every node is killed with
// SIGKILL during a write load and restarted; every acknowledged write
// survives, applied once.
func TestWholeClusterKilledKeepsAcknowledgedWrites(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	e.waitLeader(e.c.IDs(), 10*time.Second)
	clients := []kvClient{e.client(e.c.Addrs()...), e.client(e.c.Addrs()...)}
	w := e.startWrites(clients, "crash-all", 8, 3000)
	e.waitAcked(w, 200, 20*time.Second, "writes before the crash")
	order := e.rng.Perm(3)
	for _, i := range order {
		if err := e.c.Kill(uint64(i + 1)); err != nil {
			t.Fatal(err)
		}
	}
	w.stop()
	acked, unknown := w.counts()
	t.Logf("killed nodes in order %v; %d writes acknowledged, %d unknown", order, acked, unknown)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.waitLeader(e.c.IDs(), 15*time.Second)
	e.verifyWrites(e.client(e.c.Addrs()...), w, 20*time.Second)
}

// TestLeaderStoppedGracefullyUnderWrites: SIGTERM to the leader under a
// write load: it exits 0, another node leads, the load goes on, and every
// acknowledged write is there, applied once.
func TestLeaderStoppedGracefullyUnderWrites(t *testing.T) {
	e := newEnv(t, envConfig{proxies: true})
	old := e.waitLeader(e.c.IDs(), 10*time.Second)
	clients := []kvClient{e.client(e.c.Addrs()...), e.client(e.c.Addrs()...)}
	w := e.startWrites(clients, "stop-leader", 6, 3000)
	e.waitAcked(w, 100, 15*time.Second, "writes before the stop")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := e.c.Stop(ctx, old); err != nil {
		t.Fatalf("SIGTERM to leader %d: %v", old, err)
	}
	t.Logf("leader %d exited 0 %v after SIGTERM", old, time.Since(start).Round(time.Millisecond))
	nl := e.waitLeader(e.others(old), 10*time.Second)
	t.Logf("node %d leads %v after the SIGTERM", nl, time.Since(start).Round(time.Millisecond))
	e.waitAcked(w, 100, 15*time.Second, "writes after the stop")
	w.stop()
	if err := e.c.Restart(ctx, old); err != nil {
		t.Fatal(err)
	}
	e.waitConverged(e.c.IDs(), 15*time.Second)
	e.verifyWrites(e.client(e.c.Addrs()...), w, 20*time.Second)
}
