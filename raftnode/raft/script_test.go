package raft

import (
	"fmt"
	"testing"
)

// Scripted clusters: the simulator's cluster with faults switched off and
// every step chosen by the test. Safety checkers stay on.

func newScripted(t *testing.T, n int, mutate func(*simOptions)) *simCluster {
	t.Helper()
	opts := defaultSimOptions(n)
	opts.preVote, opts.checkQuorum = false, false
	opts.snapEvery = 0
	opts.maxEntries = 64
	if mutate != nil {
		mutate(&opts)
	}
	c := newSimCluster(1, opts)
	c.lossy = false
	return c
}

// settle delivers messages (without ticking) until the network is quiet.
func (c *simCluster) settle() {
	for i := 0; i < 1000 && len(c.queue) > 0; i++ {
		c.deliver()
	}
}

// partition cuts every link between the given group and everyone else.
func (c *simCluster) partition(group ...uint64) {
	in := map[uint64]bool{}
	for _, id := range group {
		in[id] = true
	}
	for _, a := range c.sortedIDs() {
		for _, b := range c.sortedIDs() {
			if in[a] != in[b] {
				c.cut[[2]uint64{a, b}] = true
			}
		}
	}
}

func (c *simCluster) healAll() { clear(c.cut) }

// campaign makes id start an election now and lets it play out.
func (c *simCluster) campaign(t *testing.T, id uint64) {
	t.Helper()
	n := c.nodes[id]
	n.core.campaign(campaignElection)
	c.process(n)
	c.settle()
}

func (c *simCluster) mustLead(t *testing.T, id uint64) {
	t.Helper()
	if st := c.nodes[id].core.state; st != StateLeader {
		t.Fatalf("node %d is %s, want leader", id, st)
	}
}

func (c *simCluster) propose(t *testing.T, id uint64, data string) {
	t.Helper()
	n := c.nodes[id]
	if err := n.core.Propose([]byte(data)); err != nil {
		t.Fatalf("propose on %d: %v", id, err)
	}
	c.process(n)
}

// ticks advances time by k ticks with delivery.
func (c *simCluster) ticks(k int) {
	for i := 0; i < k; i++ {
		c.step()
	}
}

// waitLeader ticks until one leader is up (bounded) and returns it.
func (c *simCluster) waitLeader(t *testing.T, bound int) *simNode {
	t.Helper()
	for i := 0; i < bound; i++ {
		if l := c.leader(); l != nil && c.isLeaderAlone(l) {
			return l
		}
		c.step()
	}
	t.Fatalf("no leader within %d ticks", bound)
	return nil
}

// isLeaderAlone: no other up node in l's partition claims a higher term.
func (c *simCluster) isLeaderAlone(l *simNode) bool {
	for _, n := range c.upNodes() {
		if n != l && n.core.state == StateLeader && n.core.term == l.core.term {
			return false
		}
	}
	return true
}

func (c *simCluster) appliedData(id uint64, idx uint64) string {
	if e, ok := c.applied[idx]; ok {
		return string(e.Data)
	}
	return fmt.Sprintf("<index %d not applied>", idx)
}

// deliverUntil delivers queued messages one at a time, in order, until
// cond holds (then the rest stay queued) or the network is quiet.
func (c *simCluster) deliverUntil(cond func() bool) bool {
	for i := 0; i < 10000 && len(c.queue) > 0; i++ {
		if cond() {
			return true
		}
		im := c.queue[0]
		c.queue = c.queue[1:]
		to := c.nodes[im.m.To]
		if to == nil || !to.up || c.cut[[2]uint64{im.m.From, im.m.To}] {
			continue
		}
		_ = to.core.Step(im.m)
		c.process(to)
	}
	return cond()
}

// campaignAlone makes id win an election and cuts it off before its first
// appends are delivered. It campaigns again if the first term was taken.
func (c *simCluster) campaignAlone(t *testing.T, id uint64) {
	t.Helper()
	n := c.nodes[id]
	for try := 0; try < 3 && n.core.state != StateLeader; try++ {
		n.core.campaign(campaignElection)
		c.process(n)
		c.deliverUntil(func() bool { return n.core.state == StateLeader })
	}
	c.mustLead(t, id)
	c.partition(id)
}

// figure8 scripts Figure 8 of the Raft paper on five nodes (one entry
// per message so the steps separate as in the figure) and returns the
// cluster after step (d).
func figure8(t *testing.T, bugs testBugs) *simCluster {
	c := newScripted(t, 5, func(o *simOptions) { o.bugs = bugs; o.maxEntries = 1 })
	// (a) S1 leads term 2 and replicates index 2 only to S2.
	c.campaign(t, 1)
	c.mustLead(t, 1)
	c.partition(1, 2)
	c.propose(t, 1, "p|x|k|from-term-2")
	c.settle()
	idx := c.nodes[1].core.log.lastIndex()
	// (b) S1 crashes; S5 wins term 3 with votes from S3, S4, S5 and
	// appends at the same index; none of it leaves S5.
	c.crash(c.nodes[1])
	c.healAll()
	c.partition(3, 4, 5)
	c.campaignAlone(t, 5)
	c.propose(t, 5, "p|y|k|from-term-3")
	c.settle()
	c.crash(c.nodes[5])
	// (c) S1 restarts and leads term 4 (votes of S1-S4); it gets its
	// term-2 entry to S3, so S1, S2, S3 hold it, and is cut off before
	// anything of term 4 reaches a majority.
	c.healAll()
	c.start(c.nodes[1])
	c.partition(1, 2, 3, 4)
	c.campaignAlone(t, 1)
	c.healAll()
	c.partition(1, 2, 3, 4)
	c.deliverUntil(func() bool {
		return c.nodes[1].core.trk.Progress[3].Match >= idx
	})
	c.partition(1)
	c.settle()
	c.crash(c.nodes[1])
	// (d) S5 restarts and wins with votes from S2, S3, S4: its last
	// entry (term 3) is newer than theirs (term 2). It overwrites idx.
	c.healAll()
	c.start(c.nodes[5])
	c.campaignAlone(t, 5)
	c.healAll()
	c.propose(t, 5, "p|z|k|term-5")
	c.settle()
	c.ticks(5)
	return c
}

// TestFigure8CommitRuleOnlyCountsCurrentTerm: §5.4.2. A leader must not
// commit an entry from an earlier term by counting replicas; Figure 8
// shows such an entry can still be overwritten. With the rule, nothing
// is lost; with the rule broken on purpose, the checkers catch the loss.
func TestFigure8CommitRuleOnlyCountsCurrentTerm(t *testing.T) {
	c := figure8(t, testBugs{})
	if c.err != nil {
		t.Fatalf("correct core violated safety in Figure 8: %v", c.err)
	}
	broken := figure8(t, testBugs{commitOldTerm: true})
	if broken.err == nil {
		t.Fatal("committing an old-term entry by counting went unnoticed in Figure 8")
	}
	t.Logf("broken core caught: %v", broken.err)
}
