package raft

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// Simulation checkers: the safety properties of Raft, linearizability of
// the client history, and liveness after healing.

func (c *simCluster) checkNewLeader(n *simNode) {
	term := n.core.term
	if prev, ok := c.leaders[term]; ok && prev != n.id {
		c.failf("election safety: nodes %d and %d both leader in term %d", prev, n.id, term)
		return
	}
	c.leaders[term] = n.id
	// Leader completeness: every applied entry is in the new leader's log.
	first := n.core.log.firstIndex()
	for idx, e := range c.applied {
		if idx < first {
			continue
		}
		t, err := n.core.log.term(idx)
		if err != nil || t != e.Term {
			c.failf("leader completeness: leader %d of term %d lacks applied entry %d/%d (has term %d, %v)", n.id, term, idx, e.Term, t, err)
			return
		}
	}
}

// awaitLiveness: once healed, a leader must emerge and a new proposal
// must be applied by every member within the bound.
func (c *simCluster) awaitLiveness() error {
	deadline := c.now + c.opts.livenessTick
	marker := fmt.Sprintf("m|%d", c.seed)
	var propID, propTerm uint64
	for c.now < deadline && c.err == nil {
		// (Re)propose whenever the leader we proposed to is gone.
		if l := c.leader(); l != nil && (l.id != propID || l.core.term != propTerm) {
			if l.core.Propose([]byte(marker)) == nil {
				propID, propTerm = l.id, l.core.term
				c.process(l)
			}
		}
		c.step()
		if c.allApplied(marker) {
			return c.err
		}
	}
	if c.err != nil {
		return c.err
	}
	var st []string
	for _, n := range c.upNodes() {
		s := n.core.Status()
		st = append(st, fmt.Sprintf("%d:%s t%d lead=%d commit=%d applied=%d last=%d", n.id, s.Role, s.Term, s.Lead, s.Commit, s.Applied, s.LastIndex))
	}
	return fmt.Errorf("liveness: no progress within %d ticks of healing: %s", c.opts.livenessTick, strings.Join(st, "; "))
}

func (c *simCluster) allApplied(marker string) bool {
	l := c.leader()
	if l == nil {
		return false
	}
	// The marker may be applied at several indexes (re-proposed after a
	// leader change); take the first, so the result does not depend on
	// map order and a seed replays tick for tick.
	var idx uint64
	for i, e := range c.applied {
		if string(e.Data) == marker && (idx == 0 || i < idx) {
			idx = i
		}
	}
	if idx == 0 {
		return false
	}
	for id := range l.core.trk.Progress {
		n := c.nodes[id]
		if n == nil || !n.up || n.applied < idx {
			return false
		}
	}
	return true
}

// checkLogMatching: if two logs hold an entry with the same index and
// term, they are identical up to it (Log Matching Property).
func (c *simCluster) checkLogMatching() {
	type logView map[uint64]Entry
	views := map[uint64]logView{}
	for _, n := range c.upNodes() {
		v := logView{}
		first, last := n.core.log.firstIndex(), n.core.log.lastIndex()
		if last >= first {
			ents, err := n.core.log.entries(first, last+1, 1<<62)
			if err != nil {
				c.failf("node %d log unreadable: %v", n.id, err)
				return
			}
			for _, e := range ents {
				v[e.Index] = e
			}
		}
		views[n.id] = v
	}
	ids := make([]uint64, 0, len(views))
	for id := range views {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for i, a := range ids {
		for _, b := range ids[i+1:] {
			va, vb := views[a], views[b]
			var top uint64
			for idx, e := range va {
				if f, ok := vb[idx]; ok && f.Term == e.Term && idx > top {
					top = idx
				}
			}
			for idx, e := range va {
				if f, ok := vb[idx]; ok && idx <= top {
					if f.Term != e.Term || string(f.Data) != string(e.Data) {
						c.failf("log matching: nodes %d and %d agree at %d but differ at %d", a, b, top, idx)
						return
					}
				}
			}
		}
	}
}

var kvModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(kvInput).Key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.Get {
			return output.(string) == state.(string), state
		}
		return true, in.Value
	},
}

func (c *simCluster) checkLinearizable() error {
	for id := range c.ops {
		c.abandon(id)
	}
	res := porcupine.CheckOperationsTimeout(kvModel, c.history, 20*time.Second)
	switch res {
	case porcupine.Illegal:
		return fmt.Errorf("linearizability: client history of %d ops is not linearizable", len(c.history))
	case porcupine.Unknown:
		return errors.New("linearizability: checker timed out")
	}
	return nil
}

// checkReplicasAgree: nodes that applied the same prefix hold the same
// state, however they got there (entries, snapshots, restarts).
func (c *simCluster) checkReplicasAgree() {
	byApplied := map[uint64]*simNode{}
	for _, n := range c.upNodes() {
		if o, ok := byApplied[n.applied]; ok {
			if fmt.Sprint(o.kv) != fmt.Sprint(n.kv) {
				c.failf("replicas %d and %d applied through %d but hold %v and %v", o.id, n.id, n.applied, o.kv, n.kv)
				return
			}
			continue
		}
		byApplied[n.applied] = n
	}
}
