package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Disk loss on real processes (issue 12): a node restarted with an empty
// data directory and its usual flags must neither count as the voter it
// was nor start a cluster of its own; the leader restores it by itself.

// logSinceStart is node id's log from its latest start on.
func (e *env) logSinceStart(id uint64) string {
	log := e.c.Log(id)
	if i := strings.LastIndex(log, "=== cluster: start #"); i >= 0 {
		return log[i:]
	}
	return log
}

// wipeAndRestart kills node id, deletes its data directory and starts it
// again with the same flags.
func (e *env) wipeAndRestart(id uint64) {
	e.t.Helper()
	if e.c.Running(id) {
		if err := e.c.Kill(id); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.c.Wipe(id); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.StartNode(ctx, id); err != nil {
		e.t.Fatalf("restart node %d with an empty data directory: %v", id, err)
	}
	e.t.Logf("node %d restarted with an empty data directory", id)
}

// restartRestored starts node id again after it lost or damaged its disk
// and waits until it is a voter again: until then the cluster has a
// voter fewer, and a second disk fault could be a majority's.
func (e *env) restartRestored(id uint64) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Restart(ctx, id); err != nil {
		e.t.Fatal(err)
	}
	e.waitAllVoters(e.c.IDs(), 30*time.Second)
	e.t.Logf("node %d is a voter again", id)
}

// waitAllVoters waits until the cluster's configuration has every node of
// ids as a voter and nobody left to promote.
func (e *env) waitAllVoters(ids []uint64, timeout time.Duration) {
	e.t.Helper()
	e.waitFor(timeout, "every node a voter again", func() (bool, string) {
		ctx, cancel := opCtx()
		defer cancel()
		leader, learner, err := e.admin.Members(ctx)
		if err != nil {
			return false, err.Error()
		}
		if len(learner) != len(ids) {
			return false, fmt.Sprintf("leader %d, members %v", leader, learner)
		}
		for _, id := range ids {
			if l, ok := learner[id]; !ok || l {
				return false, fmt.Sprintf("leader %d, members %v (true: learner)", leader, learner)
			}
		}
		return true, ""
	})
}

// TestWipedFollowerDoesNotLoseAcknowledgedWrites is issue 12's data-loss
// scenario: pause one follower, write 60 keys, wipe the other follower and
// restart it, kill the leader, resume the paused follower. The two
// survivors must not elect a leader without the writes (the wiped node's
// vote does not count), and say why; once the old leader is back, nothing
// is lost and all three are voters again, with no operator step.
func TestWipedFollowerDoesNotLoseAcknowledgedWrites(t *testing.T) {
	e := newEnv(t, envConfig{})
	lead := e.waitLeader(e.c.IDs(), 10*time.Second)
	others := e.others(lead)
	e.rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	paused, wiped := others[0], others[1]
	all := e.client(e.c.Addrs()...)
	ctx, cancel := opCtx()
	if _, err := all.Put(ctx, "first", []byte("everyone has it")); err != nil {
		t.Fatal(err)
	}
	cancel()
	e.waitConverged(e.c.IDs(), 10*time.Second)

	if err := e.c.Pause(paused); err != nil {
		t.Fatal(err)
	}
	toLeader := e.clientFor(lead)
	for i := range 60 {
		ctx, cancel := opCtx()
		_, err := toLeader.Put(ctx, fmt.Sprintf("acked/%02d", i), []byte("v"))
		cancel()
		if err != nil {
			t.Fatalf("write %d with node %d paused: %v", i, paused, err)
		}
	}
	e.wipeAndRestart(wiped)
	if err := e.c.Kill(lead); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Resume(paused); err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %d killed, node %d wiped, node %d resumed", lead, wiped, paused)

	e.waitFor(30*time.Second, "the survivors say why they cannot elect", func() (bool, string) {
		return strings.Contains(e.logSinceStart(paused), "voters that lost their data are not counted") &&
			strings.Contains(e.logSinceStart(wiped), "this node lost its data"), describe(e.statuses([]uint64{paused, wiped}))
	})
	for id, st := range e.statuses([]uint64{paused, wiped}) {
		if st.isLeader() {
			t.Fatalf("node %d leads term %d without the writes only the killed leader holds", id, st.Term)
		}
	}

	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.StartNode(ctx, lead); err != nil {
		t.Fatal(err)
	}
	e.waitLeader(e.c.IDs(), 20*time.Second)
	e.waitAllVoters(e.c.IDs(), 30*time.Second)
	for i := range 60 {
		ctx, cancel := opCtx()
		kv, err := all.Get(ctx, fmt.Sprintf("acked/%02d", i), false)
		cancel()
		if err != nil || string(kv.Value) != "v" {
			t.Fatalf("acknowledged write acked/%02d: %q %v", i, kv.Value, err)
		}
	}
	// The restored node serves them from its own state.
	e.waitConverged(e.c.IDs(), 20*time.Second)
	ctx, cancel = opCtx()
	defer cancel()
	if kv, err := e.clientFor(wiped).Get(ctx, "acked/59", true); err != nil || string(kv.Value) != "v" {
		t.Fatalf("restored node %d serves acked/59 as %q: %v", wiped, kv.Value, err)
	}
}

// TestWipingANodeUnderLoadLosesNothing: a node (follower or leader, drawn
// from the seed) is wiped and restarted in the middle of a write load;
// writes go on, every acknowledged one survives, none is applied twice,
// and the wiped node is a voter again by itself.
func TestWipingANodeUnderLoadLosesNothing(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.waitLeader(e.c.IDs(), 10*time.Second)
	clients := []kvClient{e.client(e.c.Addrs()...), e.client(e.c.Addrs()...)}
	w := e.startWrites(clients, "wipe-load", 4, 3000)
	e.waitAcked(w, 100, 15*time.Second, "writes before the wipe")
	victim := e.c.IDs()[e.rng.Intn(len(e.c.IDs()))]
	e.wipeAndRestart(victim)
	e.waitAcked(w, 200, 20*time.Second, "writes after the wipe")
	e.waitAllVoters(e.c.IDs(), 30*time.Second)
	w.stop()
	e.verifyWrites(clients[0], w, 20*time.Second)
	e.waitConverged(e.c.IDs(), 20*time.Second)
}

// TestWipedMajorityRefusesToElect: when two of three nodes come back with
// empty data directories, the one that kept its data must not count
// them, so no leader is elected (electing one would forget everything the
// cluster acknowledged); every node says what happened, and the data on
// the survivor is intact.
func TestWipedMajorityRefusesToElect(t *testing.T) {
	e := newEnv(t, envConfig{})
	lead := e.waitLeader(e.c.IDs(), 10*time.Second)
	all := e.client(e.c.Addrs()...)
	for i := range 20 {
		ctx, cancel := opCtx()
		_, err := all.Put(ctx, fmt.Sprintf("kept/%02d", i), []byte("v"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	e.waitConverged(e.c.IDs(), 10*time.Second)
	survivor := e.others(lead)[e.rng.Intn(2)]
	for _, id := range e.c.IDs() {
		if err := e.c.Kill(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range e.others(survivor) {
		e.wipeAndRestart(id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.StartNode(ctx, survivor); err != nil {
		t.Fatal(err)
	}
	e.waitFor(30*time.Second, "every node says why no leader comes", func() (bool, string) {
		ok := strings.Contains(e.logSinceStart(survivor), "voters that lost their data are not counted")
		for _, id := range e.others(survivor) {
			ok = ok && strings.Contains(e.logSinceStart(id), "this node lost its data")
		}
		return ok, describe(e.statuses(e.c.IDs()))
	})
	for id, st := range e.statuses(e.c.IDs()) {
		if st.isLeader() {
			t.Fatalf("node %d leads term %d with a majority that lost its data", id, st.Term)
		}
	}
	for _, id := range e.others(survivor) {
		if strings.Contains(e.logSinceStart(id), "bootstrapped a new cluster") {
			t.Fatalf("wiped node %d bootstrapped a new cluster", id)
		}
	}
	st := e.statuses([]uint64{survivor})[survivor]
	if st.Applied < 20 {
		t.Fatalf("survivor %d holds applied index %d, want its data intact", survivor, st.Applied)
	}
}

// flipLastRecordByte flips a byte inside the last record of node id's
// newest log segment (the node must be stopped): the last non-zero byte
// of the segment ends that record, the zeros after it are unwritten
// space.
func (e *env) flipLastRecordByte(id uint64) string {
	e.t.Helper()
	dir := filepath.Join(e.c.Node(id).DataDir, "wal")
	names, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil || len(names) == 0 {
		e.t.Fatalf("node %d's log segments: %v %v", id, names, err)
	}
	sort.Strings(names) // hex sequence numbers of one width: newest last
	newest := names[len(names)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		e.t.Fatal(err)
	}
	end := len(b) - 1
	for end >= 0 && b[end] == 0 {
		end--
	}
	if end < 16 {
		e.t.Fatalf("%s holds no record to damage", newest)
	}
	at := int64(end - 4)
	f, err := os.OpenFile(newest, os.O_RDWR, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{b[at] ^ 0x40}, at); err != nil {
		e.t.Fatal(err)
	}
	return fmt.Sprintf("%s at offset %d", filepath.Base(newest), at)
}

// TestCorruptLogAfterCleanStopIsRepairedFromPeers: a byte flipped inside
// the last record of a cleanly stopped node's log is corruption, not a
// torn write (nothing can be torn after a clean stop). The node says so,
// naming the file and offset, repairs its log from the valid prefix with a
// new storage incarnation (it no longer counts as the voter that
// acknowledged what it lost), and the leader restores it with no operator
// step; nothing acknowledged is lost.
func TestCorruptLogAfterCleanStopIsRepairedFromPeers(t *testing.T) {
	e := newEnv(t, envConfig{})
	lead := e.waitLeader(e.c.IDs(), 10*time.Second)
	all := e.client(e.c.Addrs()...)
	for i := range 50 {
		ctx, cancel := opCtx()
		_, err := all.Put(ctx, fmt.Sprintf("c/%02d", i), []byte("v"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	e.waitConverged(e.c.IDs(), 10*time.Second)
	f := e.others(lead)[e.rng.Intn(2)]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.c.Stop(ctx, f); err != nil {
		t.Fatal(err)
	}
	where := e.flipLastRecordByte(f)
	t.Logf("node %d stopped cleanly; flipped a byte in %s", f, where)
	if err := e.c.StartNode(ctx, f); err != nil {
		t.Fatal(err)
	}
	log := e.logSinceStart(f)
	if !strings.Contains(log, "repaired") || !strings.Contains(log, "offset") {
		t.Fatalf("node %d does not report the damage it repaired:\n%s", f, log)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "repaired") {
			t.Logf("node %d: %s", f, line)
		}
	}
	if strings.Contains(log, "truncating torn write") {
		t.Fatalf("node %d took corruption after a clean stop for a torn write", f)
	}
	e.waitAllVoters(e.c.IDs(), 30*time.Second)
	e.waitConverged(e.c.IDs(), 20*time.Second)
	for i := range 50 {
		ctx, cancel := opCtx()
		kv, err := e.clientFor(f).Get(ctx, fmt.Sprintf("c/%02d", i), true)
		cancel()
		if err != nil || string(kv.Value) != "v" {
			t.Fatalf("repaired node %d serves c/%02d as %q: %v", f, i, kv.Value, err)
		}
	}
}
