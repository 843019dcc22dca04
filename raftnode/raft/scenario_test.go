package raft

import (
	"fmt"
	"testing"
)

// Scenarios of the MIT 6.5840 Raft lab, replayed on simulated clusters.
// Time: ElectionTick 10, HeartbeatTick 2; read "one tick" as ~50 ms to
// compare with the lab's wall-clock bounds.

func newScenario(t *testing.T, n int, unreliable bool) *simCluster {
	t.Helper()
	c := newScripted(t, n, func(o *simOptions) {
		o.preVote, o.checkQuorum = true, true
		o.crashP = 0
		o.dropP, o.dupP, o.maxDelay = 0.1, 0.05, 3
		o.maxEntries = 8
	})
	c.lossy = unreliable
	return c
}

func (c *simCluster) mustOK(t *testing.T) {
	t.Helper()
	if c.err != nil {
		t.Fatalf("safety violation: %v", c.err)
	}
}

// nApplied counts up nodes that applied data at idx.
func (c *simCluster) nApplied(idx uint64, data string) int {
	e, ok := c.applied[idx]
	if !ok || string(e.Data) != data {
		return 0
	}
	k := 0
	for _, n := range c.upNodes() {
		if n.applied >= idx {
			k++
		}
	}
	return k
}

// one proposes data through whoever leads and waits until at least want
// nodes applied it, retrying like the lab's one(); it returns the index.
func (c *simCluster) one(t *testing.T, data string, want int) uint64 {
	t.Helper()
	for attempt := 0; attempt < 40; attempt++ {
		l := c.leader()
		if l == nil || l.core.Propose([]byte(data)) != nil {
			c.ticks(5)
			continue
		}
		idx := l.core.log.lastIndex()
		c.process(l)
		for i := 0; i < 60; i++ {
			c.step()
			c.mustOK(t)
			if c.nApplied(idx, data) >= want {
				return idx
			}
		}
	}
	t.Fatalf("one(%q): fewer than %d nodes applied it", data, want)
	return 0
}

// disconnect cuts id from everyone; connect restores its links to all
// nodes that are not themselves disconnected.
func (c *simCluster) disconnect(id uint64) {
	if c.down == nil {
		c.down = map[uint64]bool{}
	}
	c.down[id] = true
	for _, o := range c.sortedIDs() {
		c.cut[[2]uint64{id, o}] = true
		c.cut[[2]uint64{o, id}] = true
	}
}

func (c *simCluster) connect(id uint64) {
	delete(c.down, id)
	for _, o := range c.sortedIDs() {
		if !c.down[o] {
			delete(c.cut, [2]uint64{id, o})
			delete(c.cut, [2]uint64{o, id})
		}
	}
}

func TestInitialElection(t *testing.T) {
	c := newScenario(t, 3, false)
	l := c.waitLeader(t, 40)
	term := l.core.term
	c.ticks(100)
	c.mustOK(t)
	if l2 := c.leader(); l2 != l || l2.core.term != term {
		t.Fatalf("term changed without failures: %d -> %d", term, c.leader().core.term)
	}
}

func TestReElection(t *testing.T) {
	c := newScenario(t, 3, false)
	l1 := c.waitLeader(t, 40)
	c.disconnect(l1.id)
	l2 := c.waitLeaderExcept(t, 60, l1.id)
	// The old leader rejoins and must not disturb the new one.
	c.connect(l1.id)
	c.ticks(30)
	if l := c.leader(); l == nil || l.id == l1.id && l.core.term <= l2.core.term {
		t.Fatalf("old leader did not yield")
	}
	// No quorum, no leader.
	l3 := c.leader()
	other := c.otherThan(l3.id)
	c.disconnect(l3.id)
	c.disconnect(other)
	c.ticks(60)
	for _, n := range c.upNodes() {
		if n.id != l3.id && n.core.state == StateLeader {
			t.Fatalf("node %d leads without a quorum", n.id)
		}
	}
	c.connect(other)
	c.waitLeaderExcept(t, 60, l3.id)
	c.connect(l3.id)
	c.waitLeader(t, 60)
	c.mustOK(t)
}

func (c *simCluster) otherThan(ids ...uint64) uint64 {
	for _, id := range c.sortedIDs() {
		skip := false
		for _, x := range ids {
			skip = skip || x == id
		}
		if !skip {
			return id
		}
	}
	return 0
}

// waitLeaderExcept waits for a leader that is not id (id may be a stale,
// partitioned leader).
func (c *simCluster) waitLeaderExcept(t *testing.T, bound int, id uint64) *simNode {
	t.Helper()
	for i := 0; i < bound; i++ {
		for _, n := range c.upNodes() {
			if n.id != id && n.core.state == StateLeader {
				return n
			}
		}
		c.step()
	}
	t.Fatalf("no new leader within %d ticks", bound)
	return nil
}

func TestManyElections(t *testing.T) {
	c := newScenario(t, 7, false)
	c.waitLeader(t, 40)
	for round := 0; round < 10; round++ {
		ids := c.sortedIDs()
		c.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		for _, id := range ids[:3] {
			c.disconnect(id)
		}
		c.ticks(60)
		c.mustOK(t)
		var leaders int
		for _, id := range ids[3:] {
			if n := c.nodes[id]; n.core.state == StateLeader {
				leaders++
			}
		}
		if leaders != 1 {
			t.Fatalf("round %d: %d leaders among the connected majority", round, leaders)
		}
		clear(c.cut)
	}
}

func TestBasicAgree(t *testing.T) {
	c := newScenario(t, 3, false)
	c.waitLeader(t, 40)
	for i := 0; i < 3; i++ {
		before := len(c.applied)
		c.one(t, fmt.Sprintf("p|b%d|k|%d", i, i), 3)
		if len(c.applied) <= before {
			t.Fatal("nothing new applied")
		}
	}
}

func TestFollowerFailure(t *testing.T) {
	c := newScenario(t, 3, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|f1|k|1", 3)
	f1 := c.otherThan(l.id)
	c.disconnect(f1)
	c.one(t, "p|f2|k|2", 2)
	f2 := c.otherThan(l.id, f1)
	c.disconnect(f2)
	l = c.leader()
	if l == nil {
		return // leader stepped down (check-quorum): nothing can commit
	}
	before := l.core.log.committed
	_ = l.core.Propose([]byte("p|f3|k|3"))
	c.process(l)
	c.ticks(40)
	c.mustOK(t)
	if l.core.log.committed > before {
		t.Fatal("committed without a quorum")
	}
}

func TestLeaderFailure(t *testing.T) {
	c := newScenario(t, 3, false)
	l1 := c.waitLeader(t, 40)
	c.one(t, "p|l1|k|1", 3)
	c.disconnect(l1.id)
	c.one(t, "p|l2|k|2", 2)
	l2 := c.waitLeaderExcept(t, 60, l1.id)
	c.disconnect(l2.id)
	idx := uint64(0)
	for _, n := range c.upNodes() {
		if n.core.state == StateLeader && n.core.Propose([]byte("p|l3|k|3")) == nil {
			idx = n.core.log.lastIndex()
			c.process(n)
		}
	}
	c.ticks(60)
	c.mustOK(t)
	if idx != 0 && c.nApplied(idx, "p|l3|k|3") > 0 {
		t.Fatal("committed with two of three disconnected")
	}
}

func TestFailAgree(t *testing.T) {
	c := newScenario(t, 3, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|a1|k|1", 3)
	f := c.otherThan(l.id)
	c.disconnect(f)
	for i := 0; i < 5; i++ {
		c.one(t, fmt.Sprintf("p|a%d|k|x", i+2), 2)
	}
	c.connect(f)
	c.one(t, "p|a9|k|9", 3) // the follower caught up
}

func TestFailNoAgree(t *testing.T) {
	c := newScenario(t, 5, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|n1|k|1", 5)
	var out []uint64
	for _, id := range c.sortedIDs() {
		if id != l.id && len(out) < 3 {
			out = append(out, id)
			c.disconnect(id)
		}
	}
	if l.core.Propose([]byte("p|n2|k|2")) != nil {
		t.Fatal("leader refused")
	}
	idx := l.core.log.lastIndex()
	c.process(l)
	c.ticks(40)
	if c.nApplied(idx, "p|n2|k|2") > 0 {
		t.Fatal("committed with 3 of 5 disconnected")
	}
	clear(c.cut)
	c.one(t, "p|n3|k|3", 5)
}

func TestConcurrentStarts(t *testing.T) {
	c := newScenario(t, 3, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|c0|k|0", 3)
	term := l.core.term
	var idxs []uint64
	for i := 0; i < 5; i++ {
		if err := l.core.Propose([]byte(fmt.Sprintf("p|c%d|k|%d", i+1, i))); err != nil {
			t.Fatal(err)
		}
		idxs = append(idxs, l.core.log.lastIndex())
	}
	c.process(l)
	c.ticks(20)
	if l.core.term != term {
		t.Skip("term changed; the lab retries in that case")
	}
	for i, idx := range idxs {
		if c.nApplied(idx, fmt.Sprintf("p|c%d|k|%d", i+1, i)) != 3 {
			t.Fatalf("start %d at %d not applied everywhere", i, idx)
		}
	}
}

// TestRejoin: a partitioned leader's uncommitted entries are discarded
// when it rejoins (§5.3: the new leader's log wins).
func TestRejoin(t *testing.T) {
	c := newScenario(t, 3, false)
	l1 := c.waitLeader(t, 40)
	c.one(t, "p|r1|k|1", 3)
	c.disconnect(l1.id)
	for i := 0; i < 3; i++ {
		_ = l1.core.Propose([]byte(fmt.Sprintf("p|lost%d|k|x", i)))
	}
	c.process(l1)
	c.one(t, "p|r2|k|2", 2)
	l2 := c.waitLeaderExcept(t, 40, l1.id)
	c.disconnect(l2.id)
	c.connect(l1.id)
	c.one(t, "p|r3|k|3", 2)
	c.connect(l2.id)
	c.one(t, "p|r4|k|4", 3)
	for _, e := range c.applied {
		if len(e.Data) > 6 && string(e.Data[:6]) == "p|lost" {
			t.Fatalf("uncommitted entry of the partitioned leader applied: %q", e.Data)
		}
	}
}

// TestBackup: the leader backs up over 50+ conflicting entries quickly,
// using the follower's conflict hints rather than one index per round
// trip (§5.3 optimization).
func TestBackup(t *testing.T) {
	c := newScenario(t, 5, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|b0|k|0", 5)
	// Leader and one follower partitioned with 50 doomed entries.
	f := c.otherThan(l.id)
	c.partition(l.id, f)
	for i := 0; i < 50; i++ {
		_ = l.core.Propose([]byte(fmt.Sprintf("p|doomed%d|k|x", i)))
	}
	c.process(l)
	c.ticks(5)
	// The other three elect a leader and commit 50 entries.
	clear(c.cut)
	c.partition(l.id, f)
	for i := 0; i < 50; i++ {
		c.one(t, fmt.Sprintf("p|good%d|k|%d", i, i), 3)
	}
	// Everyone together again: the two must converge quickly.
	clear(c.cut)
	before := c.msgCount
	c.one(t, "p|b1|k|1", 5)
	if msgs := c.msgCount - before; msgs > 400 {
		t.Fatalf("catching up took %d messages", msgs)
	}
	for _, e := range c.applied {
		if len(e.Data) > 8 && string(e.Data[:8]) == "p|doomed" {
			t.Fatalf("doomed entry applied: %q", e.Data)
		}
	}
}

// TestCount: message budget (the lab's RPC counts): an election needs few
// messages, each entry is sent once per follower in the steady state, and
// an idle cluster sends at most ~60 messages per 20 ticks (one "second").
func TestCount(t *testing.T) {
	c := newScenario(t, 3, false)
	before := c.msgCount
	c.waitLeader(t, 40)
	c.ticks(1)
	if n := c.msgCount - before; n > 30 {
		t.Fatalf("election took %d messages", n)
	}
	c.one(t, "p|warm|k|0", 3)
	c.ticks(5)
	before = c.msgCount
	l := c.leader()
	for i := 0; i < 10; i++ {
		if err := l.core.Propose([]byte(fmt.Sprintf("p|cnt%d|k|%d", i, i))); err != nil {
			t.Fatal(err)
		}
		c.process(l)
	}
	c.ticks(4)
	if n := c.msgCount - before; n > (10+1+3)*3*2 {
		t.Fatalf("10 entries took %d messages", n)
	}
	c.ticks(20)
	before = c.msgCount
	c.ticks(20)
	if n := c.msgCount - before; n > 60 {
		t.Fatalf("idle cluster sent %d messages in 20 ticks", n)
	}
}

// TestPersist: committed state survives whole-cluster and single-node
// crashes (term, vote and log are persisted before acknowledging).
func TestPersist(t *testing.T) {
	c := newScenario(t, 3, false)
	c.waitLeader(t, 40)
	c.one(t, "p|s1|k|1", 3)
	for _, n := range c.upNodes() {
		c.crash(n)
	}
	for _, id := range c.sortedIDs() {
		c.start(c.nodes[id])
	}
	c.one(t, "p|s2|k|2", 3)
	l := c.leader()
	c.crash(l)
	c.one(t, "p|s3|k|3", 2)
	c.start(l)
	c.one(t, "p|s4|k|4", 3)
}

// TestPersist2: five nodes, repeated crashes of a minority and restarts
// in odd order.
func TestPersist2(t *testing.T) {
	c := newScenario(t, 5, false)
	c.waitLeader(t, 40)
	for iter := 0; iter < 5; iter++ {
		c.one(t, fmt.Sprintf("p|q%d|k|%d", iter, iter), 5)
		ids := c.sortedIDs()
		c.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		c.crash(c.nodes[ids[0]])
		c.crash(c.nodes[ids[1]])
		c.one(t, fmt.Sprintf("p|q%d'|k|x", iter), 3)
		c.start(c.nodes[ids[1]])
		c.start(c.nodes[ids[0]])
	}
	c.one(t, "p|qend|k|e", 5)
}

// TestFigure8Crashes: the lab's Figure 8 tests. Leaders crash right after
// proposing, over and over, on a reliable and on a lossy network; nothing
// applied may ever change and the cluster must recover at the end.
func TestFigure8Crashes(t *testing.T) {
	for _, unreliable := range []bool{false, true} {
		t.Run(fmt.Sprintf("unreliable=%v", unreliable), func(t *testing.T) {
			figure8Crashes(t, unreliable)
		})
	}
}

func figure8Crashes(t *testing.T, unreliable bool) {
	c := newScenario(t, 5, unreliable)
	c.waitLeader(t, 60)
	for iter := 0; iter < 500; iter++ {
		if l := c.leader(); l != nil {
			_ = l.core.Propose([]byte(fmt.Sprintf("p|f8-%d|k|%d", iter, iter)))
			c.process(l)
			if c.rng.IntN(2) == 0 {
				c.crash(l)
			}
		}
		c.ticks(1 + c.rng.IntN(12))
		if up := len(c.upNodes()); up < 3 {
			for _, id := range c.sortedIDs() {
				if n := c.nodes[id]; !n.up {
					c.start(n)
					break
				}
			}
		}
		c.mustOK(t)
	}
	c.lossy = false
	for _, id := range c.sortedIDs() {
		if n := c.nodes[id]; !n.up {
			c.start(n)
		}
	}
	c.one(t, "p|f8end|k|e", 5)
}

// TestUnreliableAgree: lossy network, many concurrent proposals commit.
func TestUnreliableAgree(t *testing.T) {
	c := newScenario(t, 5, true)
	c.waitLeader(t, 60)
	for i := 0; i < 30; i++ {
		c.one(t, fmt.Sprintf("p|u%d|k|%d", i, i), 1)
	}
	c.lossy = false
	c.one(t, "p|uend|k|e", 5)
}

// TestChurn: clients propose while nodes crash, restart and disconnect;
// every value a client saw applied remains (state machine safety and the
// linearizability check run as in the simulation).
func TestChurn(t *testing.T) {
	for _, unreliable := range []bool{false, true} {
		opts := defaultSimOptions(5)
		opts.crashP, opts.partitionP, opts.confChangeP, opts.transferP = 0.03, 0.05, 0, 0
		if !unreliable {
			opts.dropP, opts.dupP, opts.maxDelay = 0, 0, 0
		}
		for seed := int64(0); seed < 20; seed++ {
			if err := runSim(seed, opts); err != nil {
				t.Fatalf("unreliable=%v seed %d: %v", unreliable, seed, err)
			}
		}
	}
}

// TestSnapshotInstall: a follower cut off while the others snapshot and
// compact must be caught up with a chunked InstallSnapshot (reliable,
// unreliable, and with a crash instead of a disconnect).
func TestSnapshotInstall(t *testing.T) {
	for _, tc := range []struct {
		name              string
		unreliable, crash bool
	}{{"reliable", false, false}, {"unreliable", true, false}, {"crash", false, true}, {"unreliable-crash", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newScenario(t, 3, tc.unreliable)
			c.opts.snapEvery = 5
			l := c.waitLeader(t, 60)
			c.one(t, "p|i0|k|0", 3)
			victim := c.nodes[c.otherThan(l.id)]
			if tc.crash {
				c.crash(victim)
			} else {
				c.disconnect(victim.id)
			}
			for i := 0; i < 30; i++ {
				c.one(t, fmt.Sprintf("p|i%d|k|%d", i+1, i), 2)
			}
			snapsBefore := c.countMsgs(MsgSnap)
			if tc.crash {
				c.start(victim)
			} else {
				clear(c.cut)
			}
			c.lossy = false
			c.one(t, "p|iend|k|e", 3)
			if c.countMsgs(MsgSnap) == snapsBefore {
				t.Fatal("follower caught up without InstallSnapshot")
			}
			if victim.kv["k"] == "" {
				t.Fatal("restored state machine is empty")
			}
		})
	}
}

// TestSnapshotAllCrash: every node crashes and restarts from its snapshot
// plus log tail; the applied index never goes backwards.
func TestSnapshotAllCrash(t *testing.T) {
	c := newScenario(t, 3, false)
	c.opts.snapEvery = 5
	c.waitLeader(t, 60)
	var last uint64
	for iter := 0; iter < 5; iter++ {
		for i := 0; i < 8; i++ {
			c.one(t, fmt.Sprintf("p|ac%d-%d|k|%d", iter, i, i), 3)
		}
		for _, n := range c.upNodes() {
			c.crash(n)
		}
		for _, id := range c.sortedIDs() {
			c.start(c.nodes[id])
		}
		idx := c.one(t, fmt.Sprintf("p|ac%d|k|x", iter), 3)
		if idx <= last {
			t.Fatalf("index went backwards: %d after %d", idx, last)
		}
		last = idx
		for _, n := range c.upNodes() {
			if s, _ := n.disk.Snapshot(); s.Meta.Index <= 1 {
				t.Fatalf("node %d never snapshotted", n.id)
			}
		}
	}
}

// TestSnapshotBasic: with regular snapshots the retained log stays short.
func TestSnapshotBasic(t *testing.T) {
	c := newScenario(t, 3, false)
	c.opts.snapEvery = 10
	c.waitLeader(t, 60)
	for i := 0; i < 100; i++ {
		c.one(t, fmt.Sprintf("p|sb%d|k|%d", i, i), 3)
	}
	for _, n := range c.upNodes() {
		first, _ := n.disk.FirstIndex()
		last, _ := n.disk.LastIndex()
		if last-first > 2*10+5 {
			t.Fatalf("node %d retains %d entries despite snapshots", n.id, last-first+1)
		}
	}
}

// TestPersist3: a partitioned leader and a crashed follower; the leader
// restarts and the cluster makes progress again.
func TestPersist3(t *testing.T) {
	c := newScenario(t, 3, false)
	l := c.waitLeader(t, 40)
	c.one(t, "p|p3a|k|1", 3)
	f := c.nodes[c.otherThan(l.id)]
	c.disconnect(f.id)
	c.one(t, "p|p3b|k|2", 2)
	c.crash(l)
	c.connect(f.id)
	c.start(l)
	c.one(t, "p|p3c|k|3", 2)
	c.one(t, "p|p3d|k|4", 3)
}

// TestRPCBytes: each entry's payload crosses the network about once per
// follower in the steady state (no resending of acknowledged entries).
func TestRPCBytes(t *testing.T) {
	c := newScenario(t, 3, false)
	c.waitLeader(t, 40)
	c.one(t, "p|warm|k|0", 3)
	before := c.payloadBytes
	var total uint64
	for i := 0; i < 10; i++ {
		v := make([]byte, 5000)
		for j := range v {
			v[j] = 'a' + byte((i+j)%26)
		}
		data := fmt.Sprintf("p|big%d|k|%s", i, v)
		total += uint64(len(data))
		c.one(t, data, 3)
	}
	sent := c.payloadBytes - before
	if limit := 3*total + 50000; sent > limit {
		t.Fatalf("sent %d payload bytes for %d bytes of commands (limit %d)", sent, total, limit)
	}
	if sent < 2*total {
		t.Fatalf("sent %d bytes: followers cannot have received %d each", sent, total)
	}
}
