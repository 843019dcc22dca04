package nodesim

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capraft/capraft/e2e/history"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
)

// checker collects what the checks need: the result of every applied
// index, the puts the clients proposed, the reads and the history.
type checker struct {
	// byIndex is the result applied at each index (the first replica to
	// apply it); every other application must match it.
	byIndex map[uint64]appliedAt
	// once maps a session write (session, seq) to its result: a retry
	// applied again must return the same (exactly-once).
	once map[[2]uint64]kv.Result
	// opApplied maps a client operation to the session write (session,
	// seq) that applied it: one operation is applied once, under one
	// sequence number.
	opApplied map[uint64][2]uint64
	puts      map[uint64]putInfo // by command id
	// terms is, for each applied index, the term of its entry (as a
	// replica's log had it when it applied the entry: 0 until known)
	// and the lowest term any replica was in when it applied it: the
	// entry was committed in that term or an earlier one.
	terms   map[uint64]entryTerms
	reads   []readCheck
	history []porcupine.Operation
}

type entryTerms struct{ entry, committedBy uint64 }

type appliedAt struct {
	digest uint64
	node   uint64
	a      *kv.Applied
}

type putInfo struct {
	// op is the client operation (whose attempts may use several
	// sequence numbers: see notApplied).
	op           uint64
	session, seq uint64
	key, value   string
	cas          bool
}

// readCheck is a read of key at a replica that had applied applied.
type readCheck struct {
	node    uint64
	key     string
	applied uint64
	found   bool
	value   string
}

func newChecker() checker {
	return checker{byIndex: map[uint64]appliedAt{}, once: map[[2]uint64]kv.Result{}, opApplied: map[uint64][2]uint64{}, terms: map[uint64]entryTerms{}, puts: map[uint64]putInfo{}}
}

// applied sees every result a node's state machine returns (OnApplied).
func (ch *checker) applied(c *cluster, n *node, index uint64, res any) {
	node := n.id
	if st, err := n.d.Status(context.Background()); err == nil {
		et, ok := ch.terms[index]
		if !ok || st.Term < et.committedBy {
			et.committedBy = st.Term
		}
		if et.entry == 0 {
			// A leader applies before its own write: its log may not
			// have the entry yet, a follower's will.
			if t, err := n.store.Term(index); err == nil {
				et.entry = t
			}
		}
		ch.terms[index] = et
	}
	a, ok := res.(*kv.Applied)
	if !ok || a == nil {
		c.failf("node %d: index %d applied with result %T", node, index, res)
		return
	}
	c.stats.MaxApplied = max(c.stats.MaxApplied, index)
	dg := digest(a)
	if prev, ok := ch.byIndex[index]; ok {
		if prev.digest != dg {
			c.failf("replicas diverge: index %d applied by node %d as %+v, by node %d as %+v", index, prev.node, *prev.a, node, *a)
		}
		return
	}
	ch.byIndex[index] = appliedAt{digest: dg, node: node, a: a}
	if a.Kind != kv.CmdBatch {
		return
	}
	p, ok := ch.puts[a.ID]
	if !ok || len(a.Results) != 1 {
		return
	}
	k := [2]uint64{p.session, p.seq}
	if prev, ok := ch.once[k]; ok {
		// A retry answered with the saved result, or refused (its
		// session expired or forgot the result: nothing applied);
		// never applied again.
		if r := a.Results[0]; r.Code == kv.OK && !resultsEqual(prev, r) {
			c.failf("exactly-once: session %d seq %d (%s=%s) applied again at index %d with result %+v, first %+v",
				p.session, p.seq, p.key, p.value, index, a.Results[0], prev)
		}
		return
	}
	if a.Results[0].Code == kv.OK {
		ch.once[k] = a.Results[0]
		if prev, ok := ch.opApplied[p.op]; ok && prev != k {
			c.failf("exactly-once: the client's write %s=%s applied twice, as session %d seq %d and then seq %d at index %d",
				p.key, p.value, p.session, prev[1], p.seq, index)
			return
		}
		ch.opApplied[p.op] = k
	}
}

func resultsEqual(a, b kv.Result) bool {
	return a.Code == b.Code && a.Revision == b.Revision && a.Succeeded == b.Succeeded && a.Found == b.Found &&
		bytes.Equal(a.Prev.Key, b.Prev.Key) && bytes.Equal(a.Prev.Value, b.Prev.Value) &&
		a.Prev.ModRevision == b.Prev.ModRevision && a.Prev.Version == b.Prev.Version
}

// digest hashes what an applied entry returned.
func digest(a *kv.Applied) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d %d %d %v|", a.ID, a.Kind, a.Session, a.Err)
	for _, r := range a.Results {
		fmt.Fprintf(h, "%d %d %v %v %q %q %d %d %d|", r.Code, r.Revision, r.Succeeded, r.Found,
			r.Prev.Key, r.Prev.Value, r.Prev.CreateRevision, r.Prev.ModRevision, r.Prev.Version)
	}
	return h.Sum64()
}

// finalChecks waits until every replica applied the same log, then
// checks that they hold the same state, that this state keeps every
// acknowledged write (final reads at every replica join the history),
// that the history is linearizable and that every read saw a prefix.
func (c *cluster) finalChecks() error {
	converged := func() bool {
		if !c.restored() {
			return false
		}
		var want uint64
		for i, n := range c.nodes {
			if !n.up {
				return false
			}
			if i == 0 {
				want = n.kv.AppliedIndex()
			} else if n.kv.AppliedIndex() != want {
				return false
			}
		}
		return true
	}
	if !c.runUntil(c.now.Add(c.opts.Liveness), converged) {
		if c.err != nil {
			return c.err
		}
		return fmt.Errorf("liveness: the replicas do not converge, or those that lost their disk are not restored, after healing")
	}
	// Replicas equal at equal applied index.
	ref := c.nodes[0]
	refState := dumpStore(ref.kv)
	c.event("final state at %d: %s", ref.kv.AppliedIndex(), refState)
	for _, n := range c.nodes[1:] {
		if st := dumpStore(n.kv); st != refState {
			return fmt.Errorf("replicas %d and %d applied through %d but differ:\n%s\n%s", ref.id, n.id, ref.kv.AppliedIndex(), refState, st)
		}
	}
	if err := c.checkWatches(); err != nil {
		return err
	}
	// Final reads of every key at every replica.
	for _, n := range c.nodes {
		for k := range c.opts.Keys {
			key := fmt.Sprintf("k%d", k)
			call := c.historyTick()
			found, value := c.read(n, key)
			c.checker.history = append(c.checker.history, porcupine.Operation{ClientId: c.opts.Clients + int(n.id),
				Input: history.Input{Kind: history.Get, Key: key}, Call: call,
				Output: history.Output{Found: found, Value: value}, Return: c.historyTick()})
		}
	}
	if err := c.checker.checkReads(); err != nil {
		return err
	}
	return c.checker.checkLinearizable(c.hclock)
}

// dumpStore renders a store's keys and revision.
func dumpStore(s *kv.Store) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rev %d:", s.Revision())
	kvs, _, _ := s.Range(nil, nil, math.MaxInt32)
	for _, e := range kvs {
		fmt.Fprintf(&b, " %s=%s@%d/%d/%d", e.Key, e.Value, e.CreateRevision, e.ModRevision, e.Version)
	}
	return b.String()
}

// checkReads checks that every read returned the state of the log prefix
// its replica had applied: the value of the last write to its key at or
// below that index.
func (ch *checker) checkReads() error {
	type write struct {
		index uint64
		value string
	}
	timeline := map[string][]write{}
	seen := map[[2]uint64]bool{}
	for _, idx := range slices.Sorted(maps.Keys(ch.byIndex)) {
		a := ch.byIndex[idx].a
		p, ok := ch.puts[a.ID]
		if a.Kind != kv.CmdBatch || !ok || len(a.Results) != 1 || a.Results[0].Code != kv.OK || (p.cas && !a.Results[0].Succeeded) {
			continue
		}
		k := [2]uint64{p.session, p.seq}
		if seen[k] {
			continue // a retry: the saved result, nothing written
		}
		seen[k] = true
		timeline[p.key] = append(timeline[p.key], write{idx, p.value})
	}
	for _, r := range ch.reads {
		ws := timeline[r.key]
		i, _ := slices.BinarySearchFunc(ws, r.applied+1, func(w write, t uint64) int {
			switch {
			case w.index < t:
				return -1
			case w.index > t:
				return 1
			}
			return 0
		})
		wantFound, want := i > 0, ""
		if wantFound {
			want = ws[i-1].value
		}
		if r.found != wantFound || r.value != want {
			return fmt.Errorf("read of %s at node %d (applied %d) returned %v %q; the log up to there says %v %q",
				r.key, r.node, r.applied, r.found, r.value, wantFound, want)
		}
	}
	return nil
}

// checkLinearizable checks the history with porcupine, one key at a
// time (so a failure names its key); writes pending forever return after
// everything else.
func (ch *checker) checkLinearizable(end int64) error {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range ch.history {
		if op.Return == math.MaxInt64 {
			op.Return = end + 1
		}
		k := op.Input.(history.Input).Key
		byKey[k] = append(byKey[k], op)
	}
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		ops := byKey[k]
		// A generous bound, not a deadline: a history checks in about a
		// second on an idle core, and one check starved of CPU on a busy
		// machine must not fail the run (the test's -timeout bounds it).
		switch porcupine.CheckOperationsTimeout(history.Model, ops, 10*time.Minute) {
		case porcupine.Illegal:
			return fmt.Errorf("linearizability: the history of key %s (%d operations) is not linearizable:\n%s", k, len(ops), describeHistory(ops))
		case porcupine.Unknown:
			return fmt.Errorf("linearizability: porcupine timed out on key %s (%d operations):\n%s", k, len(ops), describeHistory(ops))
		}
	}
	return nil
}

// describeHistory lists operations in call order: [call, return] (an
// unknown write returns after everything).
func describeHistory(ops []porcupine.Operation) string {
	sorted := slices.Clone(ops)
	slices.SortFunc(sorted, func(a, b porcupine.Operation) int { return int(a.Call - b.Call) })
	var b strings.Builder
	for _, op := range sorted {
		fmt.Fprintf(&b, "  [%d, %d] client %d: %s\n", op.Call, op.Return, op.ClientId, history.Describe(op.Input.(history.Input), op.Output.(history.Output)))
	}
	return b.String()
}

// replicaCheckEvery is how often the replicas' states are compared.
const replicaCheckEvery = 50 * time.Millisecond

// checkReplicas checks that replicas that applied the same log prefix
// hold the same state.
func (c *cluster) checkReplicas() {
	byApplied := map[uint64]*node{}
	for _, n := range c.nodes {
		if !n.up {
			continue
		}
		a := n.kv.AppliedIndex()
		o, ok := byApplied[a]
		if !ok {
			byApplied[a] = n
			continue
		}
		if x, y := dumpStore(o.kv), dumpStore(n.kv); x != y {
			c.failf("replicas %d and %d applied through %d but differ:\n%s\n%s", o.id, n.id, a, x, y)
			return
		}
	}
}

// leading records that n leads its current term, as the driver's
// OnLeading says the moment it does: election safety is at most one
// leader per term, and leader completeness that its log reaches every
// index applied anywhere.
func (c *cluster) leading(n *node) {
	st, err := n.d.Status(context.Background())
	if err != nil || st.Role != raft.StateLeader {
		return
	}
	if prev, ok := c.leaders[st.Term]; ok {
		if prev != n.id {
			c.failf("election safety: nodes %d and %d both lead term %d", prev, n.id, st.Term)
		}
		return
	}
	c.leaders[st.Term] = n.id
	c.stats.Leaders++
	c.checkCompleteness(n, st.Term, st.LastIndex)
	c.event("node %d leads term %d (commit %d, applied %d)", n.id, st.Term, st.Commit, st.Applied)
}

// checkCompleteness checks leader completeness as n starts leading
// term: every entry some replica applied was committed, by the term that
// replica was in at the latest, so a leader of a later term holds it (the
// same entry: the same term at its index). A leader of an earlier term
// (one elected late, say after its process was frozen with the votes in
// its queue) need not.
func (c *cluster) checkCompleteness(n *node, term, last uint64) {
	for _, idx := range slices.Sorted(maps.Keys(c.checker.terms)) { // in order: a replay fails alike
		et := c.checker.terms[idx]
		t := et.entry
		if et.committedBy >= term {
			continue // maybe committed in this term or a later one
		}
		if idx > last {
			c.failf("leader completeness: node %d leads term %d with a log up to %d, but index %d (term %d) was applied",
				n.id, term, last, idx, t)
			return
		}
		if lt, err := n.store.Term(idx); err == nil && t != 0 && lt != t {
			c.failf("leader completeness: node %d leads term %d with term %d at index %d, but the entry applied there has term %d",
				n.id, term, lt, idx, t)
			return
		}
	}
}

// awaitLiveness: once healed, a write commits within Options.Liveness,
// and every node applies it.
func (c *cluster) awaitLiveness() error {
	start := c.now
	limit := c.now.Add(c.opts.Liveness)
	var done bool
	var index uint64
	var attempt int
	var retryAt time.Time
	ok := c.runUntil(limit, func() bool {
		if done {
			for _, n := range c.nodes {
				if !n.up || n.kv.AppliedIndex() < index {
					return false
				}
			}
			return true
		}
		if c.now.Before(retryAt) {
			return false
		}
		l := c.leader()
		if l == nil {
			return false
		}
		attempt++
		a := attempt
		retryAt = c.now.Add(requestTimeout)
		c.dirty = true
		c.event("liveness write %d to node %d", a, l.id)
		cmd := kv.Command{Kind: kv.CmdOpenSession, ID: 1<<63 | uint64(a), Time: c.now.UnixNano()}
		l.d.Propose(cmd.AppendBinary(nil), func(r driver.Result) {
			if a != attempt || done || r.Err != nil {
				return
			}
			if ap, ok := r.Value.(*kv.Applied); ok {
				done, index = true, ap.Session
			}
		})
		return false
	})
	if c.err != nil {
		return c.err
	}
	if !ok {
		var st []string
		for _, n := range c.nodes {
			if !n.up {
				st = append(st, fmt.Sprintf("%d: down", n.id))
				continue
			}
			s, err := n.d.Status(context.Background())
			if err != nil {
				st = append(st, fmt.Sprintf("%d: %v", n.id, err))
				continue
			}
			st = append(st, fmt.Sprintf("%d: role %d term %d lead %d commit %d applied %d", n.id, s.Role, s.Term, s.Lead, s.Commit, s.Applied))
		}
		return fmt.Errorf("liveness: no write committed and applied everywhere within %v of healing (committed: %v): %s",
			c.opts.Liveness, done, strings.Join(st, "; "))
	}
	c.event("liveness: write applied everywhere at index %d after %v", index, c.now.Sub(start))
	return nil
}
