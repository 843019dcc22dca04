package driver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/internal/driverbugs"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
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
	// readRetries are reads whose read index was lost with its leader,
	// waiting for the next leader (see askRead).
	readRetries []readRetry

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
		done func(nm *NotMember, err error)
	}
	// notMember: a peer's configuration does not include this node.
	notMember struct {
		from uint64
		nm   NotMember
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
	reply func(Result)
}

// Result is a proposal's outcome: what the state machine returned for
// its entry (Value, which may be nil), or why it was not applied or may
// not have been (Err).
type Result struct {
	Value statemachine.Result
	Err   error
}

// readWaiter is one linearizable read (or a batch of them) waiting until
// the state machine reflects every write committed before it started.
type readWaiter struct {
	index uint64
	// reply receives nil when the read may be served, or why not; the
	// loop calls it exactly once. It must not block.
	reply func(error)
}

// loopTimers are the loop's clocks: the core's ticker, and the timer
// that announces a commit index no proposal carried.
type loopTimers struct {
	ticker    Ticker
	announce  Timer
	announceC <-chan time.Time // armed while a commit index waits
}

// stop stops the timers (those begin made).
func (lt *loopTimers) stop() {
	if lt.ticker != nil {
		lt.ticker.Stop()
	}
	if lt.announce != nil {
		lt.announce.Stop()
	}
}

// readRetry is a linearizable read waiting for a leader to be asked
// again: retry is called with nil once one is known, or with why not
// (ErrNoLeader at deadline, StoppedError).
type readRetry struct {
	deadline time.Time
	retry    func(error)
}

// run is the driver loop: it owns the core. See raftnode/raft's package
// documentation for the order of the steps. Each iteration is one turn
// (turn, shared with a stepped driver's Step); between turns with nothing
// ready it waits for the queue, the ticker, the commit announcement or
// Close.
func (d *Driver) run() {
	defer d.wg.Done()
	defer close(d.done)
	defer d.failEverything()
	defer d.recoverCorePanic()
	defer d.timers.stop()
	d.begin()
	lt := &d.timers
	for {
		exit, busy := d.turn()
		if exit {
			return
		}
		if busy {
			continue
		}
		select {
		case <-lt.announceC:
			// Quiet since the commit: no proposal carried the new
			// index to the followers, so send it on its own.
			lt.announceC = nil
			d.core.AnnounceCommit()
		case <-d.stopc:
			// Handlers must stop waiting for, or handing requests to, a
			// leader: they answer shuttingDown once done is closed.
			d.setLeader(0, false)
			return
		case <-lt.ticker.C():
			d.tick()
		case <-d.q.wake:
		}
	}
}

// begin readies the loop's state and timers before its first turn.
func (d *Driver) begin() {
	ls := &d.loop
	ls.byIndex = make(map[uint64]*proposal)
	ls.confWaiters = make(map[uint64]chan error)
	ls.confTerm = make(map[uint64]uint64)
	ls.readsByCtx = make(map[uint64][]*readWaiter)
	ls.readsAt = make(map[uint64]time.Time)
	ls.readSeq = firstReadLabel(d.cfg.Seed)
	ls.role = raft.StateFollower

	if cs := d.core.ConfState(); len(cs.Voters) == 1 && cs.Voters[0] == d.cfg.ID && len(cs.VotersOutgoing) == 0 {
		// Alone in the cluster: nobody else can lead, so skip the wait
		// for an election timeout (2x covers its randomized range).
		for range 2 * int(d.cfg.ElectionTimeout/ls.tick) {
			d.core.Tick()
		}
	}
	d.timers.ticker = d.clock.NewTicker(ls.tick)
	d.timers.announce = d.clock.NewTimer(time.Hour)
	d.timers.announce.Stop()
}

// turn is one iteration of the loop: a due tick, every queued event, the
// pending proposals and reads, one Ready, maybe a snapshot, and the
// commit announcement's timer. exit: the driver must stop (it has
// recorded why); busy: another Ready is waiting, so the next turn should
// follow at once.
func (d *Driver) turn() (exit, busy bool) {
	ls := &d.loop
	lt := &d.timers
	// Ticks must not starve while the loop is busy with Readys.
	select {
	case <-lt.ticker.C():
		d.tick()
	default:
	}
	d.drain()
	// Once something failed (a write to disk, say) nothing more is
	// proposed, persisted or answered as done.
	if ls.stopping == nil {
		d.flushProposals()
		d.flushReads()
		if d.core.HasReady() {
			d.handleReady(d.core.Ready())
		}
		d.retryReads()
	}
	if ls.stopping != nil {
		d.setStopped(ls.stopping)
		return true, false
	}
	d.maybeSnapshot()
	if d.core.HasReady() {
		return false, true
	}
	switch unannounced := d.core.CommitUnannounced(); {
	case unannounced && lt.announceC == nil:
		lt.announce.Reset(d.commitAnnounceDelay())
		lt.announceC = lt.announce.C()
	case !unannounced && lt.announceC != nil:
		// A proposal's appends carried it: the quiet period
		// restarts at the next commit.
		lt.announce.Stop()
		lt.announceC = nil
	}
	return false, false
}

// Step runs the loop of a stepped driver (Config.Stepped) for one turn,
// on the caller's goroutine, without blocking: it takes every queued
// event, proposes and asks for read indexes, handles one Ready, maybe
// starts a snapshot, and acts on the ticker and the commit announcement
// if their clock fired. It reports whether more is ready at once (call
// it again before advancing the clock); false also once the driver has
// stopped (Done is closed then).
//
// A stepped driver is single-threaded: the goroutine that calls Step
// makes every other call into the driver too, and its callbacks (replies,
// OnApplied, OnLeading) run on it. The calls that would wait for the loop
// (ReceiveSnapshot, a SnapshotSink's Finish, Status, Configured,
// Bootstrap) run their part on the loop at once; those that wait for an
// outcome the loop produces later (ProposeWait, ReadIndex, Members,
// ChangeMembership, TransferLeadership, Snapshot) would wait forever: use
// Propose and ReadBarrier, whose replies arrive during a later Step, and
// call ChangeMembership and TransferLeadership with a context already
// cancelled: they start the operation on the loop at once and return
// without its outcome (ErrChangeOutcomeUnknown, ErrTransferOutcomeUnknown),
// which the configuration and the leader then show.
func (d *Driver) Step() bool {
	if !d.cfg.Stepped {
		panic("driver: Step called on a driver that runs its own loop (Config.Stepped is false)")
	}
	if d.Stopped() || d.tr == nil {
		return false
	}
	var exit, busy bool
	if d.guarded(func() {
		exit, busy = d.turn()
		if exit || busy {
			return
		}
		select {
		case <-d.timers.announceC:
			d.timers.announceC = nil
			d.core.AnnounceCommit()
		default:
		}
	}) || exit {
		d.exitStepped()
		return false
	}
	return busy || d.q.pending() || len(d.timers.ticker.C()) > 0 ||
		(d.timers.announceC != nil && len(d.timers.announceC) > 0)
}

// guarded runs fn, part of the loop, and reports whether the core
// panicked in it (the driver then stopped: see recoverCorePanic).
func (d *Driver) guarded(fn func()) (panicked bool) {
	defer func() { panicked = d.core.panicked() }()
	defer d.recoverCorePanic()
	fn()
	return false
}

// exitStepped ends a stepped driver's loop, as run's return does: it
// answers every waiter and closes Done. It does nothing once done.
func (d *Driver) exitStepped() {
	if d.Stopped() {
		return
	}
	d.setLeader(0, false)
	d.timers.stop()
	d.failEverything()
	close(d.done)
}

// commitAnnounceDelay is how long a leader keeps a new commit index for
// the next proposal's appends before sending it on its own: long enough
// for a client's next write to arrive (so a steady load never pays for
// separate announcements), short enough that followers apply, and serve
// serializable reads, within about a millisecond of the leader.
func (d *Driver) commitAnnounceDelay() time.Duration {
	return min(time.Millisecond, d.cfg.HeartbeatInterval)
}

// tick advances the core's clock and gives up on read indexes nobody
// answered (a leader that ignored the request, say): their clients have
// been told to retry by now, and the entries would otherwise pile up
// while the leader stays the same.
func (d *Driver) tick() {
	d.core.Tick()
	ls := &d.loop
	now := d.clock.Now()
	for seq, at := range ls.readsAt {
		if now.Sub(at) > d.cfg.RequestTimeout {
			for _, r := range ls.readsByCtx[seq] {
				r.reply(ErrTimeout)
			}
			delete(ls.readsByCtx, seq)
			delete(ls.readsAt, seq)
		}
	}
	if len(ls.readRetries) > 0 {
		// Reads whose leader is gone give up at their deadline.
		keep := ls.readRetries[:0]
		for _, r := range ls.readRetries {
			if now.Before(r.deadline) {
				keep = append(keep, r)
			} else {
				r.retry(ErrNoLeader)
			}
		}
		clear(ls.readRetries[len(keep):])
		ls.readRetries = keep
	}
	d.logStall()
}

// retryReads asks again, once a leader is known, the reads whose read
// index was lost with the previous one.
func (d *Driver) retryReads() {
	ls := &d.loop
	if len(ls.readRetries) == 0 || ls.lead == 0 {
		return
	}
	rs := ls.readRetries
	ls.readRetries = nil
	for _, r := range rs {
		r.retry(nil)
	}
}

// stallReport is how long a node goes without a leader before it says
// why it thinks none is elected, and how often it says it again.
func (d *Driver) stallReport() time.Duration { return 10 * d.cfg.ElectionTimeout }

// logStall explains, every stallReport while no leader is known, what
// stands in the way of an election: above all voters that lost their
// storage, which a majority must not be (their votes are not counted).
func (d *Driver) logStall() {
	ls := &d.loop
	if d.core.Lead() != 0 {
		ls.leaderless = time.Time{}
		return
	}
	now := d.clock.Now()
	if ls.leaderless.IsZero() {
		ls.leaderless = now
		return
	}
	if now.Sub(ls.leaderless) < d.stallReport() || now.Sub(ls.stallLogged) < d.stallReport() {
		return
	}
	ls.stallLogged = now
	st := d.core.Status()
	if len(st.Config.Voters) == 0 {
		return // not configured yet: discovery or --join says why
	}
	waited := now.Sub(ls.leaderless).Round(time.Second).String()
	if rec, ok := st.Config.IncarnationOf(d.cfg.ID); ok && rec != st.Incarnation && slices.Contains(st.Config.Voters, d.cfg.ID) {
		d.log.Warn("no leader: this node lost its data and is not counted as a voter until a leader restores it",
			"for", waited, "incarnation", fmt.Sprintf("%016x", st.Incarnation), "counted_incarnation", fmt.Sprintf("%016x", rec))
		return
	}
	if len(st.UncountedVoters) > 0 {
		lost := slices.Sorted(maps.Keys(st.UncountedVoters))
		d.log.Error("no leader can be elected: voters that lost their data are not counted, and too few voters with "+
			"intact data answer. Start the voters that are down. If a majority of the voters lost their data, writes "+
			"acknowledged by the cluster may exist only on the others: see docs/OPERATIONS.md, \"A majority lost its data\"",
			"for", waited, "lost_data", fmt.Sprint(lost), "voters", fmt.Sprint(st.Config.Voters), "term", st.Term)
		return
	}
	d.log.Warn("no leader elected: a majority of the voters must be up and reach each other",
		"for", waited, "voters", fmt.Sprint(st.Config.Voters), "term", st.Term, "role", roleName(st.Role))
}

// drain handles every queued event.
func (d *Driver) drain() {
	evs := d.q.take()
	for i, ev := range evs {
		evs[i] = nil
		switch e := ev.(type) {
		case *peerMsgs:
			d.stepPeer(e)
		case notMember:
			d.notMember(e.from, e.nm)
		case unreachable:
			d.core.ReportUnreachable(e.id)
		case snapSent:
			status := raft.SnapshotFinish
			if e.err != nil {
				status = raft.SnapshotFailure
			}
			d.core.ReportSnapshot(e.to, e.index, status)
		case *proposal:
			d.loop.newProp = append(d.loop.newProp, e)
		case *readWaiter:
			d.loop.newReads = append(d.loop.newReads, e)
		case task:
			e.fn()
		case snapDone:
			d.loop.snapshotting = false
			if e.err != nil {
				d.loop.snapFailed = e.index
				d.log.Error("snapshot failed", "index", e.index, "error", e.err)
			} else if e.index > d.loop.snapIndex {
				d.loop.snapIndex = e.index
				d.log.Debug("snapshot written, log compacted", "index", e.index)
			}
			// One snapshot is written at a time: the waiters asked for
			// this one.
			for _, w := range d.loop.snapWaiters {
				w <- e.err
			}
			d.loop.snapWaiters = nil
		}
	}
}

// stepPeer steps the messages of one send call from a peer, then tells
// the peer they were taken, and whether the core ignored one because its
// sender is not a member of this node's configuration: a removed node
// learns so that way (see notMember).
func (d *Driver) stepPeer(p *peerMsgs) {
	var nm *NotMember
	for _, m := range p.msgs {
		if m.Type == raft.MsgSnap {
			// Only the snapshot receiver, holding the data, hands the
			// core a snapshot (the transport refuses one among
			// messages, too).
			d.log.Debug("ignored a snapshot among a peer's messages", "from", m.From)
			continue
		}
		if driverbugs.On.CountWipedVoters { // injected bug (driverbugs)
			m.Incarnation = d.countedIncarnation(m)
		}
		err := d.core.Step(m)
		if err == nil {
			continue
		}
		d.stepRefused(m, err)
		if errors.Is(err, raft.ErrNotMember) && nm == nil {
			nm = &NotMember{Index: d.core.Status().Applied, Term: d.core.Term()}
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
//
// The word is taken only where a removed node hears it, and only from a
// peer whose word counts: this node has no leader (a leader, or a
// follower its leader still replicates to, gets the log and applies its
// own removal: checkRemoved), the peer is a voter of this node's
// configuration, and speaks from a term no older than this node's. So a
// buggy or stale peer, or one that is not a member at all, cannot stop a
// healthy node.
func (d *Driver) notMember(from uint64, nm NotMember) {
	st := d.core.Status()
	cs := st.Config
	member := false
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		member = member || slices.Contains(ids, d.cfg.ID)
	}
	credible := st.Lead == 0 && nm.Term >= st.Term &&
		(slices.Contains(cs.Voters, from) || slices.Contains(cs.VotersOutgoing, from))
	if !credible {
		if ok, _ := d.loop.refusals.allow(from, d.clock.Now()); ok {
			d.log.Debug("ignoring a peer's word that this node is not a member: it leads or follows a leader, or the peer's word does not count",
				"peer", from, "peer_term", nm.Term, "term", st.Term, "leader", st.Lead)
		}
		return
	}
	if member && nm.Index > st.Applied {
		d.log.Error("removed from the cluster: a peer's configuration no longer includes this node; stopping",
			"peer", from, "peer_applied", nm.Index, "peer_term", nm.Term, "applied", st.Applied)
		d.loop.stopping = ErrRemoved
		return
	}
	if ok, _ := d.loop.refusals.allow(from, d.clock.Now()); ok {
		d.log.Info("a peer does not count this node as a member yet; waiting for it to apply this node's configuration",
			"peer", from, "peer_applied", nm.Index, "applied", st.Applied)
	}
}

// flushProposals proposes everything pushed since the last Ready as one
// batch of entries.
func (d *Driver) flushProposals() {
	props := d.loop.newProp
	if len(props) == 0 {
		return
	}
	d.loop.newProp = props[:0]
	datas := make([][]byte, len(props))
	for i, p := range props {
		datas[i] = p.data
	}
	if err := d.core.ProposeBatch(datas); err != nil {
		for _, p := range props {
			p.reply(Result{Err: proposeError(err)})
		}
		clear(props)
		return
	}
	last, term := d.core.LastIndex(), d.core.Term()
	first := last - uint64(len(props)) + 1
	for i, p := range props {
		p.index, p.term = first+uint64(i), term
		if old := d.loop.byIndex[p.index]; old != nil {
			// A proposal from an earlier term of ours whose entry a
			// newer leader overwrote before we applied it: the index
			// now holds ours, so the old one is gone for good.
			old.reply(Result{Err: ErrDropped})
		}
		d.loop.byIndex[p.index] = p
		props[i] = nil
	}
}

// firstReadLabel is where a run of the node starts labelling its read
// index requests. The leader answers a request on its own stream to
// whichever process runs this node by then, and the core takes an answer
// from its leader without knowing whether this process asked: were labels
// to restart at 1 in every run, an answer owed to the previous run (at an
// older index) would release a read of this one — a stale read. Seed
// differs between runs (random unless a test fixes it), so labels do too.
func firstReadLabel(seed uint64) uint64 {
	return rand.New(rand.NewPCG(seed, 0x7265616420696478)).Uint64() // "read idx"
}

// flushReads asks the core for one read index covering every read that
// arrived since the last one.
func (d *Driver) flushReads() {
	reads := d.loop.newReads
	if len(reads) == 0 {
		return
	}
	d.loop.readSeq++
	var ctx [8]byte
	binary.BigEndian.PutUint64(ctx[:], d.loop.readSeq)
	if err := d.core.ReadIndex(ctx[:]); err != nil {
		for _, r := range reads {
			r.reply(ErrNoLeader)
		}
	} else {
		d.loop.readsByCtx[d.loop.readSeq] = append([]*readWaiter(nil), reads...)
		d.loop.readsAt[d.loop.readSeq] = d.clock.Now()
	}
	clear(reads)
	d.loop.newReads = reads[:0]
}

// handleReady carries out one Ready in the order the core documents.
func (d *Driver) handleReady(rd raft.Ready) {
	if rd.SoftState != nil {
		d.roleChanged(*rd.SoftState)
	}
	var snap *raft.Snapshot
	if !rd.Snapshot.IsEmpty() {
		// A copy: a pointer into rd would move every Ready to the heap
		// (the storage is an interface, so what Save keeps is unknown).
		sn := rd.Snapshot
		snap = &sn
	}
	// New entries: the leader's appends go out first, in parallel with
	// its own write. Otherwise the messages (typically the new commit
	// index for the followers) wait until the clients are answered.
	sendFirst := len(rd.Entries) > 0 || snap != nil
	if sendFirst {
		d.tr.Send(rd.Messages)
		if len(rd.Messages) > 0 && !d.cfg.Stepped { // a stepped driver's transport has no goroutines
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
	applyFirst := snap == nil && d.loop.role == raft.StateLeader
	if applyFirst {
		d.applyAll(rd.CommittedEntries)
	}
	if !sendFirst {
		d.tr.Send(rd.Messages)
	}
	if snap == nil {
		// A confirmed read index depends on nothing this Ready
		// persists: the reads it covers proceed now if the state
		// machine has reached it (on a leader it always has: its commit
		// index was applied just above), not after the write below,
		// which is other clients' fsync.
		d.readIndexesConfirmed(rd.ReadStates)
		rd.ReadStates = nil
	}
	if driverbugs.On.AckBeforePersist { // injected bug (driverbugs)
		d.tr.Send(rd.MessagesAfterPersist)
		rd.MessagesAfterPersist = nil
	}
	switch {
	case rd.MustSync || len(rd.Entries) > 0 || snap != nil:
		hs := rd.HardState
		if hs.IsEmpty() && d.loop.unsavedHS != nil {
			hs = *d.loop.unsavedHS
		}
		if err := d.save(hs, rd.Entries, snap); err != nil {
			// Nothing this Ready covers may be acknowledged, applied or
			// advanced past: the node stops with the error.
			d.fail(err)
			return
		}
	case !rd.HardState.IsEmpty():
		// Only the commit index moved. Raft does not need it durable
		// (a restart learns it again from the leader), so it waits for
		// the next write instead of costing an fsync of its own.
		hs := rd.HardState
		d.loop.unsavedHS = &hs
	}
	d.tr.Send(rd.MessagesAfterPersist)
	if !applyFirst && snap == nil {
		d.applyAll(rd.CommittedEntries)
	}
	if snap != nil {
		if err := d.installSnapshot(*snap); err != nil {
			// The snapshot is on disk and the core moved on to it: the
			// state machine cannot follow, so the node stops. The
			// receiver verified it before the core saw it, so this is a
			// bug, a failing machine or a disk that lost it.
			d.fail(fmt.Errorf("install snapshot %d: %w", snap.Meta.Index, err))
			return
		}
		d.applyAll(rd.CommittedEntries)
	}
	d.core.Advance()
	if d.loop.removed {
		d.checkRemoved()
	}
	d.readIndexesConfirmed(rd.ReadStates)
}

// readIndexesConfirmed hands the reads waiting for the core's confirmed
// read indexes to the apply wait and releases those the state machine
// has reached (releaseReads).
func (d *Driver) readIndexesConfirmed(states []raft.ReadState) {
	for _, rs := range states {
		seq := uint64(0)
		if len(rs.RequestCtx) == 8 {
			seq = binary.BigEndian.Uint64(rs.RequestCtx)
		}
		for _, r := range d.loop.readsByCtx[seq] {
			r.index = rs.Index
			d.loop.applyWait = append(d.loop.applyWait, r)
		}
		delete(d.loop.readsByCtx, seq)
		delete(d.loop.readsAt, seq)
	}
	d.releaseReads()
}

// roleChanged reacts to a new leader or role.
func (d *Driver) roleChanged(ss raft.SoftState) {
	ls := &d.loop
	if ss.Lead != ls.lead || ss.Role != ls.role {
		d.log.Info("role changed", "role", roleName(ss.Role), "leader", ss.Lead, "term", d.core.Term())
	}
	leadChanged := ss.Lead != ls.lead
	d.leaderSeen(leadChanged, ss.Lead)
	wasLeader := ls.role == raft.StateLeader
	ls.lead, ls.role = ss.Lead, ss.Role
	d.setLeader(ss.Lead, ss.Role == raft.StateLeader)
	if wasLeader && ss.Role != raft.StateLeader {
		// The core no longer waits for the snapshots it was sending.
		d.tr.CancelSnapshots()
	}
	if ss.Role == raft.StateLeader && !wasLeader && d.cfg.OnLeading != nil {
		d.cfg.OnLeading()
	}
	if leadChanged || (wasLeader && ss.Role != raft.StateLeader) {
		// Read indexes asked of the old leader will never be answered:
		// fail them (a read has no side effect; the client retries).
		for seq, rs := range ls.readsByCtx {
			for _, r := range rs {
				r.reply(ErrNoLeader)
			}
			delete(ls.readsByCtx, seq)
			delete(ls.readsAt, seq)
		}
	}
}

// applyAll applies committed entries in order, as one batch of the state
// machine, then resolves whoever waits for each of them.
func (d *Driver) applyAll(ents []raft.Entry) {
	// Entries the state machine holds already are skipped whole, with
	// their waiters and membership changes: a snapshot it restored
	// covers them.
	applied := d.sm.Applied()
	for len(ents) > 0 && ents[0].Index <= applied {
		ents = ents[1:]
	}
	if len(ents) == 0 || d.loop.stopping != nil {
		return
	}
	batch := machineEntries(d.loop.applyBatch[:0], ents)
	start := d.clock.Now()
	results, err := d.sm.Apply(batch)
	d.obs.Applied(len(batch), d.since(start))
	clear(batch) // do not keep the entries' data reachable
	d.loop.applyBatch = batch[:0]
	if err == nil && len(results) != len(batch) {
		err = fmt.Errorf("%d results for %d entries", len(results), len(batch))
	}
	if err != nil {
		// The waiters of these entries are answered "outcome unknown"
		// as the loop exits.
		d.loop.stopping = fmt.Errorf("apply entries %d-%d: state machine: %w", ents[0].Index, ents[len(ents)-1].Index, err)
		return
	}
	for i, e := range ents {
		d.resolve(e, results[i])
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
func (d *Driver) resolve(e raft.Entry, res statemachine.Result) {
	p := d.loop.byIndex[e.Index]
	if p != nil {
		delete(d.loop.byIndex, e.Index)
	}
	if ch := d.loop.confWaiters[e.Index]; ch != nil {
		// A new leader may have overwritten the change at this index.
		if e.Type == raft.EntryConfChange && e.Term == d.loop.confTerm[e.Index] {
			ch <- nil
		} else {
			ch <- ErrConfNotApplied
		}
		delete(d.loop.confWaiters, e.Index)
		delete(d.loop.confTerm, e.Index)
	}
	if e.Type == raft.EntryConfChange {
		d.applyConfChange(e)
	}
	if res != nil && d.cfg.OnApplied != nil {
		d.cfg.OnApplied(e.Index, res, e.Index <= d.loop.logAtStart)
	}
	switch {
	case p == nil:
	case e.Type == raft.EntryNormal && e.Term == p.term:
		p.reply(Result{Value: res})
	default:
		p.reply(Result{Err: ErrDropped})
	}
}

// failStaleProposals fails the proposals a snapshot jumped over.
func (d *Driver) failStaleProposals(upTo uint64) {
	for idx, p := range d.loop.byIndex {
		if idx <= upTo {
			delete(d.loop.byIndex, idx)
			p.reply(Result{Err: outcomeUnknown()})
		}
	}
}

// applyConfChange updates the address book and the transport, and
// resolves a waiting membership request.
func (d *Driver) applyConfChange(e raft.Entry) {
	cc, err := raft.UnmarshalConfChange(e.Data)
	if err != nil {
		d.log.Warn("undecodable membership change", "index", e.Index, "error", err)
		return
	}
	for _, c := range cc.Changes {
		switch c.Type {
		case raft.ConfChangeAddVoter, raft.ConfChangeAddLearner:
			// This node's own view of an address (--peers) wins over the
			// one given to the change.
			if addr, fixed := d.cfg.Peers[c.NodeID]; fixed {
				d.loop.addrs[c.NodeID] = addr
			} else if len(cc.Context) > 0 {
				d.loop.addrs[c.NodeID] = string(cc.Context)
			}
			if addr := d.loop.addrs[c.NodeID]; c.NodeID != d.cfg.ID && addr != "" {
				d.tr.SetPeer(c.NodeID, addr)
			}
		case raft.ConfChangeRemoveNode:
			delete(d.loop.addrs, c.NodeID)
			if c.NodeID == d.cfg.ID {
				if !d.removalOfEarlierStorage(c, e.Index) {
					d.loop.removed = true
				}
			} else {
				d.farewell(c.NodeID, e.Index)
			}
		}
	}
	d.logRestoration(cc)
	d.log.Info("membership changed", "index", e.Index, "changes", fmt.Sprint(cc.Changes))
}

// removalOfEarlierStorage reports whether c, a removal of this node's
// id applied at index, removed another storage than this node's: the
// change names another incarnation (or, from a leader that did not name
// it, the configuration it applies to recorded another). Such a node was
// removed, then started afresh on an empty disk and added back; it
// replays its old removal on its way to the entry that added it back
// (catching up from a snapshot older than the removal), and must not
// stop for it. With no incarnation known (a learner the leader never
// heard from) checkRemoved decides, once the node has caught up.
func (d *Driver) removalOfEarlierStorage(c raft.ConfChangeSingle, index uint64) bool {
	removed := c.Incarnation
	if removed == 0 {
		for _, mi := range d.core.ConfState().Incarnations {
			if mi.ID == d.cfg.ID {
				removed = mi.Incarnation
			}
		}
	}
	mine := d.store.Incarnation()
	if removed == 0 || removed == mine {
		return false
	}
	d.log.Info("applied the removal of an earlier storage of this node's id; this storage was added back since, so the node carries on",
		"index", index, "removed_incarnation", fmt.Sprintf("%016x", removed), "incarnation", fmt.Sprintf("%016x", mine))
	return true
}

// logRestoration says what a change does to a voter that lost its storage
// (the core demotes and restores such voters by itself): called as the
// change is applied, before the core switches to it.
func (d *Driver) logRestoration(cc raft.ConfChange) {
	before := d.core.ConfState()
	for _, c := range cc.Changes {
		inc := fmt.Sprintf("%016x", c.Incarnation)
		switch {
		case c.NodeID == d.cfg.ID:
			// This node said what happened to it (warnLostData,
			// logRecovery); membership changed says the rest.
		case c.Type == raft.ConfChangeAddLearner && c.AutoPromote && slices.Contains(before.Voters, c.NodeID):
			d.log.Warn("a voter lost its storage: it is a learner until it has caught up, then a voter again, by itself; "+
				"it counts towards no quorum meanwhile", "member", c.NodeID, "incarnation", inc)
		case c.Type == raft.ConfChangeAddLearner && c.AutoPromote:
			d.log.Info("a voter is being added: it is a learner until it has caught up, then a voter, by itself", "member", c.NodeID)
		case c.Type == raft.ConfChangeAddVoter && slices.Contains(before.AutoPromote, c.NodeID):
			d.log.Info("a learner has caught up and is a voter (again)", "member", c.NodeID, "incarnation", inc)
		}
	}
}

// farewell drops a removed peer. The core stops talking to a member the
// moment its removal is applied, so the removed node might never learn
// that its removal committed and would linger, campaigning in vain. A
// leader therefore first tells it the commit index covering the removal,
// with the heartbeat the core would have sent, and keeps the connection
// for an election timeout so the message can leave.
func (d *Driver) farewell(id, index uint64) {
	if d.core.Role() == raft.StateLeader {
		if pr, ok := d.core.Status().Progress[id]; ok && pr.Match >= index {
			// A heartbeat's commit index counts only for the storage it
			// names (raft.Message.ToIncarnation).
			d.tr.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: d.cfg.ID, To: id, Term: d.core.Term(), Commit: index,
				Incarnation: d.store.Incarnation(), ToIncarnation: pr.Incarnation}})
		}
	}
	d.clock.AfterFunc(d.cfg.ElectionTimeout, func() {
		d.q.push(task{func() {
			for _, ids := range [][]uint64{d.core.ConfState().Voters, d.core.ConfState().Learners} {
				for _, m := range ids {
					if m == id {
						return // added back meanwhile
					}
				}
			}
			d.tr.RemovePeer(id)
		}})
	})
}

// save persists one Ready. A write failure means the disk can no longer
// be trusted: the caller stops the node (fail) without acknowledging
// anything the write covered.
func (d *Driver) save(hs raft.HardState, ents []raft.Entry, snap *raft.Snapshot) error {
	if err := d.store.Save(hs, ents, snap); err != nil {
		return fmt.Errorf("persist to %s: %w", d.cfg.DataDir, err)
	}
	d.loop.unsavedHS = nil
	return nil
}

// fail makes the loop stop with err, a failure it cannot continue after
// (a write to disk, a snapshot it cannot install): the loop does nothing
// more than answer what waits (failEverything) and exits. The first
// failure is the one reported.
func (d *Driver) fail(err error) {
	if d.loop.stopping != nil {
		return
	}
	d.loop.stopping = err
	d.log.Error("stopping the node", "error", err)
}

// recoverCorePanic, deferred by run, stops the node cleanly when the
// core panicked: it does so when a read of its storage fails (see
// "Storage errors" in raftnode/raft) or one of its invariants breaks, and
// the node must then stop rather than vote or answer from a partial view.
// Only a panic raised inside a call into the core is recovered (the
// guardedCore counts those calls); any other is a bug in this package and
// crashes the process.
func (d *Driver) recoverCorePanic() {
	if !d.core.panicked() {
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
	d.setStopped(fmt.Errorf("the raft core failed (its storage failed or an invariant broke): %w", err))
	d.log.Error("node stopped: the raft core panicked", "panic", r, "stack", string(debug.Stack()))
}

// checkRemoved stops the node once it is caught up and still not a
// member. Applying a removal of itself is not enough: a node that was
// removed and then added back (say after losing its disk) replays the old
// removal on its way to the newer addition.
func (d *Driver) checkRemoved() {
	st := d.core.Status()
	if st.Applied < st.Commit {
		return
	}
	cs := st.Config
	for _, ids := range [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext} {
		for _, id := range ids {
			if id == d.cfg.ID {
				d.loop.removed = false
				return
			}
		}
	}
	d.loop.stopping = ErrRemoved
}

// releaseReads lets the reads whose index the state machine has reached
// proceed.
func (d *Driver) releaseReads() {
	applied := d.sm.Applied()
	keep := d.loop.applyWait[:0]
	for _, r := range d.loop.applyWait {
		if r.index <= applied || driverbugs.On.ReadBeforeApplied { // injected bug (driverbugs)
			r.reply(nil)
		} else {
			keep = append(keep, r)
		}
	}
	clear(d.loop.applyWait[len(keep):])
	d.loop.applyWait = keep
}

// failEverything answers every waiter when the loop exits.
func (d *Driver) failEverything() {
	err := d.StoppedError()
	ls := &d.loop
	for _, ev := range d.q.close() {
		switch e := ev.(type) {
		case *peerMsgs:
			e.done(nil, err)
		case *proposal:
			e.reply(Result{Err: err})
		case *readWaiter:
			e.reply(err)
		}
	}
	for _, p := range ls.newProp {
		p.reply(Result{Err: err})
	}
	for _, p := range ls.byIndex {
		p.reply(Result{Err: outcomeUnknown()})
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
	for _, r := range ls.readRetries {
		r.retry(err)
	}
	for _, ch := range ls.confWaiters {
		ch <- ErrChangeOutcomeUnknown
	}
	for _, w := range ls.snapWaiters {
		w <- err
	}
	ls.byIndex, ls.newProp, ls.newReads, ls.readRetries = nil, nil, nil, nil
	ls.readsByCtx, ls.applyWait, ls.confWaiters, ls.confTerm = nil, nil, nil, nil
	ls.snapWaiters = nil
}

func (d *Driver) setStopped(err error) {
	d.stopErr.CompareAndSwap(nil, &err)
	d.setLeader(0, false)
}

// StoppedError is the error for requests that find the driver stopped: ErrStopped,
// wrapped with the reason when it stopped on its own (see Err).
func (d *Driver) StoppedError() error {
	if err := d.Err(); err != nil {
		return fmt.Errorf("%w: %v", ErrStopped, err)
	}
	return ErrStopped
}

func proposeError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return ErrNotLeader
	case errors.Is(err, raft.ErrProposalDropped):
		return ErrDropped
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
