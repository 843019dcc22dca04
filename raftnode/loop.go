package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/transport"
)

// loopState is everything only the loop goroutine touches.
type loopState struct {
	tick  time.Duration
	addrs map[uint64]string // member id -> address, as of the applied log
	// logAtStart is the last log index when the node opened its data
	// directory: entries up to it may have been applied in an earlier
	// run, so their one-time effects (the operator token) are not
	// repeated when they are applied again.
	logAtStart uint64

	role raft.StateType
	lead uint64

	// Proposals waiting for their entry to be applied, by the index the
	// core appended them at (see resolve for how they are matched).
	byIndex map[uint64]*proposal
	newProp []*proposal // pushed since the last Ready

	// applyBatch is applyAll's reused batch for the state machine.
	applyBatch []statemachine.Entry

	// Membership changes waiting for their entry to be applied, by index.
	confWaiters map[uint64]chan error
	confTerm    map[uint64]uint64 // the term each waiter proposed its change in

	// Linearizable reads: newReads wait for a read index to be requested,
	// readsByCtx for the core's ReadState, applyWait for the state
	// machine to reach their index.
	newReads   []*readWaiter
	readsByCtx map[uint64][]*readWaiter
	readsAt    map[uint64]time.Time // when each readsByCtx entry asked
	applyWait  []*readWaiter
	readSeq    uint64

	// Snapshots.
	snapIndex    uint64 // newest snapshot's index
	snapshotting bool
	snapFailed   uint64 // index of the last failed snapshot: retry SnapshotEntries later
	snapWALBytes uint64 // log bytes written when the last snapshot started (SnapshotBytes)
	installed    uint64 // snapshots installed from a leader since start
	// snapWaiters are the Snapshot calls waiting for the snapshot being
	// written (snapDone answers them).
	snapWaiters []chan<- error

	// refusals rate-limits the warnings about peer messages the core
	// refused (refusals.go).
	refusals refusalLog

	// leaderless is when this node last saw no leader begin (zero while
	// it knows one); stallLogged when it last said why (logStall).
	leaderless, stallLogged time.Time

	// discover: the storage holds no configuration and the peers must
	// be asked before bootstrapping (bootstrap.go); bootstrapping: the
	// core was handed the bootstrap snapshot, which the next Ready
	// persists.
	discover, bootstrapping bool

	stopping error // set when the node must stop (removed, disk failure): see fail
	removed  bool  // a removal of this node was applied; see checkRemoved

	// unsavedHS is a commit-only hard state not yet written (see
	// handleReady); the next write carries it.
	unsavedHS *raft.HardState
}

// Events the loop consumes.
type (
	// peerMsgs are the messages of one send call on a peer's stream.
	peerMsgs struct {
		msgs []raft.Message
		// done tells the peer its messages were taken; the loop calls it
		// exactly once. It must not block.
		done func(nm *transport.NotMember, err error)
	}
	// notMember: a peer's configuration does not include this node.
	notMember struct {
		from uint64
		nm   transport.NotMember
	}
	// unreachable: the transport lost a peer.
	unreachable struct{ id uint64 }
	// task runs a function on the loop (admin and status requests).
	task struct{ fn func() }
	// snapDone reports a background snapshot's end.
	snapDone struct {
		index uint64
		err   error
	}
	// snapSent reports how the transfer of the snapshot at index to a
	// follower ended (nil: the follower took it).
	snapSent struct {
		to, index uint64
		err       error
	}
)

func (*peerMsgs) isEvent()   {}
func (notMember) isEvent()   {}
func (unreachable) isEvent() {}
func (task) isEvent()        {}
func (snapDone) isEvent()    {}
func (snapSent) isEvent()    {}
func (*proposal) isEvent()   {}
func (*readWaiter) isEvent() {}

// proposal is one command waiting to be committed and applied.
type proposal struct {
	data []byte
	// index and term are where the core appended it (set by
	// flushProposals): only one entry ever has both.
	index, term uint64
	// reply receives the outcome; the loop calls it exactly once. It
	// must not block (it may encode and queue an RPC answer).
	reply func(proposalResult)
}

// proposalResult is a proposal's outcome: what the state machine returned
// for its entry, or why it was not applied (or may not have been).
type proposalResult struct {
	result statemachine.Result
	err    error
}

// readWaiter is one linearizable read (or a batch of them) waiting until
// the state machine reflects every write committed before it started.
type readWaiter struct {
	index uint64
	// reply receives nil when the read may be served, or why not; the
	// loop calls it exactly once. It must not block.
	reply func(error)
}

// run is the driver loop: it owns the core. See raftnode/raft's package
// documentation for the order of the steps.
func (n *Node) run() {
	defer n.wg.Done()
	defer close(n.done)
	defer n.failEverything()
	defer n.recoverCorePanic()
	ls := &n.loop
	ls.byIndex = make(map[uint64]*proposal)
	ls.confWaiters = make(map[uint64]chan error)
	ls.confTerm = make(map[uint64]uint64)
	ls.readsByCtx = make(map[uint64][]*readWaiter)
	ls.readsAt = make(map[uint64]time.Time)
	ls.role = raft.StateFollower

	if cs := n.core.ConfState(); len(cs.Voters) == 1 && cs.Voters[0] == n.cfg.ID && len(cs.VotersOutgoing) == 0 {
		// Alone in the cluster: nobody else can lead, so skip the wait
		// for an election timeout (2x covers its randomized range).
		for range 2 * int(n.cfg.ElectionTimeout/ls.tick) {
			n.core.Tick()
		}
	}
	ticker := time.NewTicker(ls.tick)
	defer ticker.Stop()
	announce := time.NewTimer(time.Hour)
	announce.Stop()
	defer announce.Stop()
	var announceC <-chan time.Time // armed while a commit index waits
	for {
		// Ticks must not starve while the loop is busy with Readys.
		select {
		case <-ticker.C:
			n.tick()
		default:
		}
		n.drain()
		// Once something failed (a write to disk, say) nothing more is
		// proposed, persisted or answered as done.
		if ls.stopping == nil {
			n.flushProposals()
			n.flushReads()
			if n.core.HasReady() {
				n.handleReady(n.core.Ready())
			}
		}
		if ls.stopping != nil {
			n.setStopped(ls.stopping)
			return
		}
		n.maybeSnapshot()
		if n.core.HasReady() {
			continue
		}
		switch unannounced := n.core.CommitUnannounced(); {
		case unannounced && announceC == nil:
			announce.Reset(n.commitAnnounceDelay())
			announceC = announce.C
		case !unannounced && announceC != nil:
			// A proposal's appends carried it: the quiet period
			// restarts at the next commit.
			announce.Stop()
			announceC = nil
		}
		select {
		case <-announceC:
			// Quiet since the commit: no proposal carried the new
			// index to the followers, so send it on its own.
			announceC = nil
			n.core.AnnounceCommit()
		case <-n.stopc:
			// Handlers must stop waiting for, or handing requests to, a
			// leader: they answer shuttingDown once done is closed.
			n.setLeader(0, false)
			return
		case <-ticker.C:
			n.tick()
		case <-n.q.wake:
		}
	}
}

// commitAnnounceDelay is how long a leader keeps a new commit index for
// the next proposal's appends before sending it on its own: long enough
// for a client's next write to arrive (so a steady load never pays for
// separate announcements), short enough that followers apply, and serve
// serializable reads, within about a millisecond of the leader.
func (n *Node) commitAnnounceDelay() time.Duration {
	return min(time.Millisecond, n.cfg.HeartbeatInterval)
}

// tick advances the core's clock and gives up on read indexes nobody
// answered (a leader that ignored the request, say): their clients have
// been told to retry by now, and the entries would otherwise pile up
// while the leader stays the same.
func (n *Node) tick() {
	n.core.Tick()
	ls := &n.loop
	for seq, at := range ls.readsAt {
		if time.Since(at) > n.cfg.RequestTimeout {
			for _, r := range ls.readsByCtx[seq] {
				r.reply(errTimeout)
			}
			delete(ls.readsByCtx, seq)
			delete(ls.readsAt, seq)
		}
	}
	n.logStall()
}

// stallReport is how long a node goes without a leader before it says
// why it thinks none is elected, and how often it says it again.
func (n *Node) stallReport() time.Duration { return 10 * n.cfg.ElectionTimeout }

// logStall explains, every stallReport while no leader is known, what
// stands in the way of an election: above all voters that lost their
// storage, which a majority must not be (their votes are not counted).
func (n *Node) logStall() {
	ls := &n.loop
	if n.core.Lead() != 0 {
		ls.leaderless = time.Time{}
		return
	}
	now := time.Now()
	if ls.leaderless.IsZero() {
		ls.leaderless = now
		return
	}
	if now.Sub(ls.leaderless) < n.stallReport() || now.Sub(ls.stallLogged) < n.stallReport() {
		return
	}
	ls.stallLogged = now
	st := n.core.Status()
	if len(st.Config.Voters) == 0 {
		return // not configured yet: discovery or --join says why
	}
	waited := now.Sub(ls.leaderless).Round(time.Second).String()
	if rec, ok := st.Config.IncarnationOf(n.cfg.ID); ok && rec != st.Incarnation && slices.Contains(st.Config.Voters, n.cfg.ID) {
		n.log.Warn("no leader: this node lost its data and is not counted as a voter until a leader restores it",
			"for", waited, "incarnation", fmt.Sprintf("%016x", st.Incarnation), "counted_incarnation", fmt.Sprintf("%016x", rec))
		return
	}
	if len(st.UncountedVoters) > 0 {
		lost := slices.Sorted(maps.Keys(st.UncountedVoters))
		n.log.Error("no leader can be elected: voters that lost their data are not counted, and too few voters with "+
			"intact data answer. Start the voters that are down. If a majority of the voters lost their data, writes "+
			"acknowledged by the cluster may exist only on the others: see docs/OPERATIONS.md, \"A majority lost its data\"",
			"for", waited, "lost_data", fmt.Sprint(lost), "voters", fmt.Sprint(st.Config.Voters), "term", st.Term)
		return
	}
	n.log.Warn("no leader elected: a majority of the voters must be up and reach each other",
		"for", waited, "voters", fmt.Sprint(st.Config.Voters), "term", st.Term, "role", roleName(st.Role))
}

// drain handles every queued event.
func (n *Node) drain() {
	evs := n.q.take()
	for i, ev := range evs {
		evs[i] = nil
		switch e := ev.(type) {
		case *peerMsgs:
			n.stepPeer(e)
		case notMember:
			n.notMember(e.from, e.nm)
		case unreachable:
			n.core.ReportUnreachable(e.id)
		case snapSent:
			status := raft.SnapshotFinish
			if e.err != nil {
				status = raft.SnapshotFailure
			}
			n.core.ReportSnapshot(e.to, e.index, status)
		case *proposal:
			n.loop.newProp = append(n.loop.newProp, e)
		case *readWaiter:
			n.loop.newReads = append(n.loop.newReads, e)
		case task:
			e.fn()
		case snapDone:
			n.loop.snapshotting = false
			if e.err != nil {
				n.loop.snapFailed = e.index
				n.log.Error("snapshot failed", "index", e.index, "error", e.err)
			} else if e.index > n.loop.snapIndex {
				n.loop.snapIndex = e.index
				n.log.Debug("snapshot written, log compacted", "index", e.index)
			}
			// One snapshot is written at a time: the waiters asked for
			// this one.
			for _, w := range n.loop.snapWaiters {
				w <- e.err
			}
			n.loop.snapWaiters = nil
		}
	}
}

// stepPeer steps the messages of one send call from a peer, then tells
// the peer they were taken, and whether the core ignored one because its
// sender is not a member of this node's configuration: a removed node
// learns so that way (see notMember).
func (n *Node) stepPeer(p *peerMsgs) {
	var nm *transport.NotMember
	for _, m := range p.msgs {
		if m.Type == raft.MsgSnap {
			// Only the snapshot receiver, holding the data, hands the
			// core a snapshot (the transport refuses one among
			// messages, too).
			n.log.Debug("ignored a snapshot among a peer's messages", "from", m.From)
			continue
		}
		err := n.core.Step(m)
		if err == nil {
			continue
		}
		n.stepRefused(m, err)
		if errors.Is(err, raft.ErrNotMember) && nm == nil {
			nm = &transport.NotMember{Index: n.core.Status().Applied, Term: n.core.Term()}
		}
	}
	clear(p.msgs)
	p.done(nm, nil)
}

// notMember handles a peer's word that its configuration, as of its
// applied index, does not include this node. The configurations a
// cluster goes through are one history, in the log: if this node counts
// itself a member as of its own applied index and the peer's index is
// past it, a change between the two removed this node, and it stops as
// checkRemoved would have, had it received that entry (a removed node
// no longer gets the log). Otherwise the word is stale (the peer has not
// yet applied this node's addition) or checkRemoved decides.
func (n *Node) notMember(from uint64, nm transport.NotMember) {
	st := n.core.Status()
	cs := st.Config
	member := false
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		member = member || slices.Contains(ids, n.cfg.ID)
	}
	if member && nm.Index > st.Applied {
		n.log.Error("removed from the cluster: a peer's configuration no longer includes this node; stopping",
			"peer", from, "peer_applied", nm.Index, "peer_term", nm.Term, "applied", st.Applied)
		n.loop.stopping = errRemoved
		return
	}
	if ok, _ := n.loop.refusals.allow(from, time.Now()); ok {
		n.log.Info("a peer does not count this node as a member yet; waiting for it to apply this node's configuration",
			"peer", from, "peer_applied", nm.Index, "applied", st.Applied)
	}
}

// flushProposals proposes everything pushed since the last Ready as one
// batch of entries.
func (n *Node) flushProposals() {
	props := n.loop.newProp
	if len(props) == 0 {
		return
	}
	n.loop.newProp = props[:0]
	datas := make([][]byte, len(props))
	for i, p := range props {
		datas[i] = p.data
	}
	if err := n.core.ProposeBatch(datas); err != nil {
		for _, p := range props {
			p.reply(proposalResult{err: proposeError(err)})
		}
		clear(props)
		return
	}
	last, term := n.core.LastIndex(), n.core.Term()
	first := last - uint64(len(props)) + 1
	for i, p := range props {
		p.index, p.term = first+uint64(i), term
		if old := n.loop.byIndex[p.index]; old != nil {
			// A proposal from an earlier term of ours whose entry a
			// newer leader overwrote before we applied it: the index
			// now holds ours, so the old one is gone for good.
			old.reply(proposalResult{err: errDropped})
		}
		n.loop.byIndex[p.index] = p
		props[i] = nil
	}
}

// flushReads asks the core for one read index covering every read that
// arrived since the last one.
func (n *Node) flushReads() {
	reads := n.loop.newReads
	if len(reads) == 0 {
		return
	}
	n.loop.readSeq++
	var ctx [8]byte
	binary.BigEndian.PutUint64(ctx[:], n.loop.readSeq)
	if err := n.core.ReadIndex(ctx[:]); err != nil {
		for _, r := range reads {
			r.reply(errNoLeader)
		}
	} else {
		n.loop.readsByCtx[n.loop.readSeq] = append([]*readWaiter(nil), reads...)
		n.loop.readsAt[n.loop.readSeq] = time.Now()
	}
	clear(reads)
	n.loop.newReads = reads[:0]
}

// handleReady carries out one Ready in the order the core documents.
func (n *Node) handleReady(rd raft.Ready) {
	if rd.SoftState != nil {
		n.roleChanged(*rd.SoftState)
	}
	var snap *raft.Snapshot
	if !rd.Snapshot.IsEmpty() {
		snap = &rd.Snapshot
	}
	// New entries: the leader's appends go out first, in parallel with
	// its own write. Otherwise the messages (typically the new commit
	// index for the followers) wait until the clients are answered.
	sendFirst := len(rd.Entries) > 0 || snap != nil
	if sendFirst {
		n.tr.Send(rd.Messages)
		if len(rd.Messages) > 0 {
			// The transport's goroutines were just readied on this P;
			// left there, they often wait until the fsync below
			// returns (the syscall holds the P), and the appends leave
			// after the write instead of beside it. Let them run
			// first: measured, the first append left 39 µs after the
			// proposal instead of 174 µs.
			runtime.Gosched()
		}
	}
	// Committed entries are already durable. A leader applies them (and
	// answers their clients) before this Ready's write rather than after
	// it: the commit index's own write is off the critical path. A
	// follower acknowledges its new entries first: the leader waits for
	// that, nobody waits for the follower's apply.
	applyFirst := snap == nil && n.loop.role == raft.StateLeader
	if applyFirst {
		n.applyAll(rd.CommittedEntries)
	}
	if !sendFirst {
		n.tr.Send(rd.Messages)
	}
	switch {
	case rd.MustSync || len(rd.Entries) > 0 || snap != nil:
		hs := rd.HardState
		if hs.IsEmpty() && n.loop.unsavedHS != nil {
			hs = *n.loop.unsavedHS
		}
		if err := n.save(hs, rd.Entries, snap); err != nil {
			// Nothing this Ready covers may be acknowledged, applied or
			// advanced past: the node stops with the error.
			n.fail(err)
			return
		}
	case !rd.HardState.IsEmpty():
		// Only the commit index moved. Raft does not need it durable
		// (a restart learns it again from the leader), so it waits for
		// the next write instead of costing an fsync of its own.
		hs := rd.HardState
		n.loop.unsavedHS = &hs
	}
	n.tr.Send(rd.MessagesAfterPersist)
	if !applyFirst && snap == nil {
		n.applyAll(rd.CommittedEntries)
	}
	if snap != nil {
		if err := n.installSnapshot(*snap); err != nil {
			// The snapshot is on disk and the core moved on to it: the
			// state machine cannot follow, so the node stops. The
			// receiver verified it before the core saw it, so this is a
			// bug, a failing machine or a disk that lost it.
			n.fail(fmt.Errorf("install snapshot %d: %w", snap.Meta.Index, err))
			return
		}
		n.applyAll(rd.CommittedEntries)
	}
	n.core.Advance()
	if n.loop.removed {
		n.checkRemoved()
	}
	for _, rs := range rd.ReadStates {
		seq := uint64(0)
		if len(rs.RequestCtx) == 8 {
			seq = binary.BigEndian.Uint64(rs.RequestCtx)
		}
		for _, r := range n.loop.readsByCtx[seq] {
			r.index = rs.Index
			n.loop.applyWait = append(n.loop.applyWait, r)
		}
		delete(n.loop.readsByCtx, seq)
		delete(n.loop.readsAt, seq)
	}
	n.releaseReads()
}

// roleChanged reacts to a new leader or role.
func (n *Node) roleChanged(ss raft.SoftState) {
	ls := &n.loop
	if ss.Lead != ls.lead || ss.Role != ls.role {
		n.log.Info("role changed", "role", roleName(ss.Role), "leader", ss.Lead, "term", n.core.Term())
	}
	leadChanged := ss.Lead != ls.lead
	wasLeader := ls.role == raft.StateLeader
	ls.lead, ls.role = ss.Lead, ss.Role
	n.setLeader(ss.Lead, ss.Role == raft.StateLeader)
	if wasLeader && ss.Role != raft.StateLeader {
		// The core no longer waits for the snapshots it was sending.
		n.tr.CancelSnapshots()
	}
	if ss.Role == raft.StateLeader && !wasLeader {
		n.createFirstTokenKey()
	}
	if leadChanged || (wasLeader && ss.Role != raft.StateLeader) {
		// Read indexes asked of the old leader will never be answered:
		// fail them (a read has no side effect; the client retries).
		for seq, rs := range ls.readsByCtx {
			for _, r := range rs {
				r.reply(errNoLeader)
			}
			delete(ls.readsByCtx, seq)
			delete(ls.readsAt, seq)
		}
	}
}

// applyAll applies committed entries in order, as one batch of the state
// machine, then resolves whoever waits for each of them.
func (n *Node) applyAll(ents []raft.Entry) {
	// Entries the state machine holds already are skipped whole, with
	// their waiters and membership changes: a snapshot it restored
	// covers them.
	applied := n.sm.Applied()
	for len(ents) > 0 && ents[0].Index <= applied {
		ents = ents[1:]
	}
	if len(ents) == 0 || n.loop.stopping != nil {
		return
	}
	batch := machineEntries(n.loop.applyBatch[:0], ents)
	results, err := n.sm.Apply(batch)
	clear(batch) // do not keep the entries' data reachable
	n.loop.applyBatch = batch[:0]
	if err == nil && len(results) != len(batch) {
		err = fmt.Errorf("%d results for %d entries", len(results), len(batch))
	}
	if err != nil {
		// The waiters of these entries are answered "outcome unknown"
		// as the loop exits.
		n.loop.stopping = fmt.Errorf("apply entries %d-%d: state machine: %w", ents[0].Index, ents[len(ents)-1].Index, err)
		return
	}
	for i, e := range ents {
		n.resolve(e, results[i])
	}
}

// machineEntries appends the state machine's view of ents to dst: the
// data of normal entries only (membership changes are the driver's).
func machineEntries(dst []statemachine.Entry, ents []raft.Entry) []statemachine.Entry {
	for _, e := range ents {
		se := statemachine.Entry{Index: e.Index, Term: e.Term}
		if e.Type == raft.EntryNormal {
			se.Data = e.Data
		}
		dst = append(dst, se)
	}
	return dst
}

// resolve answers whoever waits for entry e, which the state machine just
// applied with result res.
//
// A proposal is matched by where the core appended it: the entry at its
// index has its term only if it is the very entry (a leader appends one
// entry per index in its term, and only the leader of a term appends
// entries of that term). Any other entry there means a new leader
// overwrote the proposal, which will never be applied.
func (n *Node) resolve(e raft.Entry, res statemachine.Result) {
	p := n.loop.byIndex[e.Index]
	if p != nil {
		delete(n.loop.byIndex, e.Index)
	}
	if ch := n.loop.confWaiters[e.Index]; ch != nil {
		// A new leader may have overwritten the change at this index.
		if e.Type == raft.EntryConfChange && e.Term == n.loop.confTerm[e.Index] {
			ch <- nil
		} else {
			ch <- errConfNotApplied
		}
		delete(n.loop.confWaiters, e.Index)
		delete(n.loop.confTerm, e.Index)
	}
	if e.Type == raft.EntryConfChange {
		n.applyConfChange(e)
	}
	if res != nil && n.onApplied != nil {
		n.onApplied(e.Index, res, e.Index <= n.loop.logAtStart)
	}
	switch {
	case p == nil:
	case e.Type == raft.EntryNormal && e.Term == p.term:
		p.reply(proposalResult{result: res})
	default:
		p.reply(proposalResult{err: errDropped})
	}
}

// failStaleProposals fails the proposals a snapshot jumped over.
func (n *Node) failStaleProposals(upTo uint64) {
	for idx, p := range n.loop.byIndex {
		if idx <= upTo {
			delete(n.loop.byIndex, idx)
			p.reply(proposalResult{err: errOutcomeUnknown})
		}
	}
}

// applyConfChange updates the address book and the transport, and
// resolves a waiting membership request.
func (n *Node) applyConfChange(e raft.Entry) {
	cc, err := raft.UnmarshalConfChange(e.Data)
	if err != nil {
		n.log.Warn("undecodable membership change", "index", e.Index, "error", err)
		return
	}
	for _, c := range cc.Changes {
		switch c.Type {
		case raft.ConfChangeAddVoter, raft.ConfChangeAddLearner:
			// This node's own view of an address (--peers) wins over the
			// one given to the change.
			if addr, fixed := n.cfg.Peers[c.NodeID]; fixed {
				n.loop.addrs[c.NodeID] = addr
			} else if len(cc.Context) > 0 {
				n.loop.addrs[c.NodeID] = string(cc.Context)
			}
			if addr := n.loop.addrs[c.NodeID]; c.NodeID != n.cfg.ID && addr != "" {
				n.tr.SetPeer(c.NodeID, addr)
			}
		case raft.ConfChangeRemoveNode:
			delete(n.loop.addrs, c.NodeID)
			if c.NodeID == n.cfg.ID {
				n.loop.removed = true
			} else {
				n.farewell(c.NodeID, e.Index)
			}
		}
	}
	n.logRestoration(cc)
	n.log.Info("membership changed", "index", e.Index, "changes", fmt.Sprint(cc.Changes))
}

// logRestoration says what a change does to a voter that lost its storage
// (the core demotes and restores such voters by itself): called as the
// change is applied, before the core switches to it.
func (n *Node) logRestoration(cc raft.ConfChange) {
	before := n.core.ConfState()
	for _, c := range cc.Changes {
		inc := fmt.Sprintf("%016x", c.Incarnation)
		switch {
		case c.NodeID == n.cfg.ID:
			// This node said what happened to it (warnLostData,
			// logRecovery); membership changed says the rest.
		case c.Type == raft.ConfChangeAddLearner && c.AutoPromote && slices.Contains(before.Voters, c.NodeID):
			n.log.Warn("a voter lost its storage: it is a learner until it has caught up, then a voter again, by itself; "+
				"it counts towards no quorum meanwhile", "member", c.NodeID, "incarnation", inc)
		case c.Type == raft.ConfChangeAddLearner && c.AutoPromote:
			n.log.Info("a voter is being added: it is a learner until it has caught up, then a voter, by itself", "member", c.NodeID)
		case c.Type == raft.ConfChangeAddVoter && slices.Contains(before.AutoPromote, c.NodeID):
			n.log.Info("a learner has caught up and is a voter (again)", "member", c.NodeID, "incarnation", inc)
		}
	}
}

// farewell drops a removed peer. The core stops talking to a member the
// moment its removal is applied, so the removed node might never learn
// that its removal committed and would linger, campaigning in vain. A
// leader therefore first tells it the commit index covering the removal,
// with the heartbeat the core would have sent, and keeps the connection
// for an election timeout so the message can leave.
func (n *Node) farewell(id, index uint64) {
	if n.core.Role() == raft.StateLeader {
		if pr, ok := n.core.Status().Progress[id]; ok && pr.Match >= index {
			// A heartbeat's commit index counts only for the storage it
			// names (raft.Message.ToIncarnation).
			n.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: n.cfg.ID, To: id, Term: n.core.Term(), Commit: index,
				Incarnation: n.store.Incarnation(), ToIncarnation: pr.Incarnation}})
		}
	}
	time.AfterFunc(n.cfg.ElectionTimeout, func() {
		n.q.push(task{func() {
			for _, ids := range [][]uint64{n.core.ConfState().Voters, n.core.ConfState().Learners} {
				for _, m := range ids {
					if m == id {
						return // added back meanwhile
					}
				}
			}
			n.tr.RemovePeer(id)
		}})
	})
}

// save persists one Ready. A write failure means the disk can no longer
// be trusted: the caller stops the node (fail) without acknowledging
// anything the write covered.
func (n *Node) save(hs raft.HardState, ents []raft.Entry, snap *raft.Snapshot) error {
	if err := n.store.Save(hs, ents, snap); err != nil {
		return fmt.Errorf("persist to %s: %w", n.cfg.DataDir, err)
	}
	n.loop.unsavedHS = nil
	return nil
}

// fail makes the loop stop with err, a failure it cannot continue after
// (a write to disk, a snapshot it cannot install): the loop does nothing
// more than answer what waits (failEverything) and exits. The first
// failure is the one reported.
func (n *Node) fail(err error) {
	if n.loop.stopping != nil {
		return
	}
	n.loop.stopping = err
	n.log.Error("stopping the node", "error", err)
}

// recoverCorePanic, deferred by run, stops the node cleanly when the
// core panicked: it does so when a read of its storage fails (see
// "Storage errors" in raftnode/raft) or one of its invariants breaks, and
// the node must then stop rather than vote or answer from a partial view.
// Only a panic raised inside a call into the core is recovered (the
// guardedCore counts those calls); any other is a bug in this package and
// crashes the process.
func (n *Node) recoverCorePanic() {
	if !n.core.panicked() {
		return
	}
	r := recover()
	if r == nil {
		return
	}
	err, ok := r.(error)
	if !ok {
		err = fmt.Errorf("%v", r)
	}
	n.setStopped(fmt.Errorf("the raft core failed (its storage failed or an invariant broke): %w", err))
	n.log.Error("node stopped: the raft core panicked", "panic", r, "stack", string(debug.Stack()))
}

// checkRemoved stops the node once it is caught up and still not a
// member. Applying a removal of itself is not enough: a node that was
// removed and then added back (say after losing its disk) replays the old
// removal on its way to the newer addition.
func (n *Node) checkRemoved() {
	st := n.core.Status()
	if st.Applied < st.Commit {
		return
	}
	cs := st.Config
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		for _, id := range ids {
			if id == n.cfg.ID {
				n.loop.removed = false
				return
			}
		}
	}
	n.loop.stopping = errRemoved
}

// releaseReads lets the reads whose index the state machine has reached
// proceed.
func (n *Node) releaseReads() {
	applied := n.sm.Applied()
	keep := n.loop.applyWait[:0]
	for _, r := range n.loop.applyWait {
		if r.index <= applied {
			r.reply(nil)
		} else {
			keep = append(keep, r)
		}
	}
	clear(n.loop.applyWait[len(keep):])
	n.loop.applyWait = keep
}

// failEverything answers every waiter when the loop exits.
func (n *Node) failEverything() {
	err := n.stoppedError()
	ls := &n.loop
	for _, ev := range n.q.close() {
		switch e := ev.(type) {
		case *peerMsgs:
			e.done(nil, err)
		case *proposal:
			e.reply(proposalResult{err: err})
		case *readWaiter:
			e.reply(err)
		}
	}
	for _, p := range ls.newProp {
		p.reply(proposalResult{err: err})
	}
	for _, p := range ls.byIndex {
		p.reply(proposalResult{err: errOutcomeUnknown})
	}
	for _, r := range ls.newReads {
		r.reply(err)
	}
	for _, rs := range ls.readsByCtx {
		for _, r := range rs {
			r.reply(err)
		}
	}
	for _, r := range ls.applyWait {
		r.reply(err)
	}
	for _, ch := range ls.confWaiters {
		ch <- errChangeOutcomeUnknown
	}
	for _, w := range ls.snapWaiters {
		w <- err
	}
	ls.byIndex, ls.newProp, ls.newReads = nil, nil, nil
	ls.readsByCtx, ls.applyWait, ls.confWaiters, ls.confTerm = nil, nil, nil, nil
	ls.snapWaiters = nil
}

func (n *Node) setStopped(err error) {
	n.stopErr.CompareAndSwap(nil, &err)
	n.setLeader(0, false)
}

// stoppedError is the error for requests that find the node stopped.
func (n *Node) stoppedError() error {
	if err := n.Err(); err != nil {
		return fmt.Errorf("%w: %v", errShuttingDown, err)
	}
	return errShuttingDown
}

func proposeError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return errNotLeader
	case errors.Is(err, raft.ErrProposalDropped):
		return errDropped
	}
	return err
}

func roleName(r raft.StateType) string {
	switch r {
	case raft.StateLeader:
		return "leader"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "follower"
}
