package raft

import (
	"fmt"
	"math/rand/v2"

	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// StateType is a node's role.
type StateType uint8

const (
	// StateFollower answers leaders and candidates.
	StateFollower StateType = iota
	// StatePreCandidate runs a pre-vote without changing its term.
	StatePreCandidate
	// StateCandidate asks for votes in a new term.
	StateCandidate
	// StateLeader replicates the log.
	StateLeader
)

// String names the role.
func (s StateType) String() string {
	switch s {
	case StateFollower:
		return "follower"
	case StatePreCandidate:
		return "pre-candidate"
	case StateCandidate:
		return "candidate"
	case StateLeader:
		return "leader"
	}
	return "unknown"
}

// Core is one node's Raft state machine. It is not safe for concurrent
// use; the driver calls it from one goroutine. See the package
// documentation for the loop that drives it.
type Core struct {
	id  uint64
	cfg Config

	term  uint64
	vote  uint64
	state StateType
	lead  uint64

	log *raftLog
	trk tracker.ProgressTracker

	msgs       []Message
	readStates []ReadState

	// electionElapsed counts ticks since the last valid leader contact
	// (follower) or since the last check-quorum round (leader).
	electionElapsed  int
	heartbeatElapsed int
	randomTimeout    int
	rng              *rand.Rand

	leadTransferee   uint64
	pendingConfIndex uint64
	// logConf, on a candidate or leader, is the configuration the
	// membership changes in its log not yet in effect lead to; it counts
	// with it too (see logconf.go). nil when there are none.
	logConf *logConfig
	// confIndex is the log index of the configuration in effect (the
	// applied conf change or the restored snapshot).
	confIndex       uint64
	uncommittedSize uint64

	// bcastPending defers the broadcast of proposed entries to Ready, so
	// many Propose calls between two Readys share one AppendEntries per
	// follower.
	bcastPending bool
	// commitUnannounced: with LazyCommit, the commit index advanced and
	// no broadcast has carried it yet.
	commitUnannounced bool

	reads readOnly

	// Messages Step refused, for Status: from non-members, and
	// leader-only messages not from the leader.
	droppedNonMember, droppedNotFromLeader uint64

	// uncounted holds voters whose vote arrived from an incarnation the
	// configuration does not count (storage lost), for Status.
	uncounted map[uint64]uint64

	step stepFunc

	// Ready bookkeeping.
	prevHS      HardState
	prevSoft    SoftState
	outstanding *readyMark
}

type stepFunc func(r *Core, m Message)

// New creates a core from cfg, restoring term, vote, commit index and
// membership from cfg.Storage. A brand-new cluster's members must first
// persist BootstrapSnapshot; a node joining an existing cluster starts
// with empty storage and learns the membership from the leader.
func New(cfg Config) (*Core, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l, err := newLog(cfg.Storage, cfg.MaxCommittedSizePerReady)
	if err != nil {
		return nil, err
	}
	hs, cs, err := cfg.Storage.InitialState()
	if err != nil {
		return nil, err
	}
	persisted := hs
	r := &Core{
		id:  cfg.ID,
		cfg: cfg,
		log: l,
		trk: tracker.MakeProgressTracker(cfg.MaxInflightMsgs, cfg.MaxInflightBytes),
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.ID)),
	}
	r.switchConfig(configFromConfState(cs))
	// The application's state starts at the snapshot (which may be newer
	// than the first retained entry when entries are kept for laggards).
	snap, err := cfg.Storage.Snapshot()
	if err != nil {
		return nil, err
	}
	if si := snap.Meta.Index; si > l.applied {
		l.committed, l.applying, l.applied = max(l.committed, si), si, si
	}
	r.confIndex = l.applied
	if lt := l.lastTerm(); lt > hs.Term {
		// Our term is never behind our own log: start at its last term
		// (the snapshot's for a fresh node; or entries persisted just
		// before a crash cut off their HardState). No vote can have been
		// sent in that term, since votes are sent only after the
		// HardState recording them is durable.
		hs.Term, hs.Vote = lt, 0
	}
	if !hs.IsEmpty() {
		if hs.Commit > l.lastIndex() {
			return nil, errCorrupt("hard state commit %d beyond last index %d", hs.Commit, l.lastIndex())
		}
		r.term, r.vote = hs.Term, hs.Vote
		l.committed = max(l.committed, hs.Commit)
	}
	if cfg.Applied > 0 {
		if cfg.Applied > l.committed {
			return nil, errCorrupt("applied %d beyond commit %d", cfg.Applied, l.committed)
		}
		l.applied, l.applying = max(l.applied, cfg.Applied), max(l.applying, cfg.Applied)
	}
	r.prevHS = persisted
	r.becomeFollower(r.term, 0)
	r.prevSoft = r.softState()
	return r, nil
}

// hardState is what must be durable before dependent messages are sent.
func (r *Core) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

func (r *Core) softState() SoftState { return SoftState{Lead: r.lead, Role: r.state} }

// promotable reports whether this node may campaign: it votes in the
// current configuration (either half of a joint one).
func (r *Core) promotable() bool {
	_, ok := r.trk.Progress[r.id]
	return ok && r.trk.Voters.Contains(r.id) && r.counts(r.id, r.cfg.Incarnation)
}

// counts reports whether incarnation inc of member id is the one the
// configuration counts towards quorums.
func (r *Core) counts(id, inc uint64) bool {
	return r.cfg.bugs.ignoreIncarnation || r.trk.Counts(id, inc)
}

// send queues m; Term defaults to the current term.
func (r *Core) send(m Message) {
	m.From = r.id
	m.Incarnation = r.cfg.Incarnation
	if m.Term == 0 {
		m.Term = r.term
	}
	r.msgs = append(r.msgs, m)
}

func (r *Core) resetRandomTimeout() {
	r.randomTimeout = r.cfg.ElectionTick + r.rng.IntN(r.cfg.ElectionTick)
}

// reset clears per-term state. The vote is kept only within a term.
func (r *Core) reset(term uint64) {
	if r.term != term {
		r.term = term
		r.vote = 0
	}
	r.lead = 0
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.resetRandomTimeout()
	r.leadTransferee = 0
	r.commitUnannounced = false
	r.trk.ResetVotes()
	last := r.log.lastIndex()
	for id, pr := range r.trk.Progress {
		// Until a peer answers in this term, assume the storage the
		// configuration records for it: a leader must demote a voter
		// only on the evidence of an answer from other storage, never
		// because of what it heard in an earlier term.
		inc := pr.Incarnation
		if rec, ok := r.trk.Incarnations[id]; ok {
			inc = rec
		}
		*pr = tracker.Progress{
			Next:         last + 1,
			Inflights:    pr.Inflights,
			IsLearner:    pr.IsLearner,
			RecentActive: true,
			Incarnation:  inc,
		}
		pr.Inflights.Reset()
		if id == r.id {
			pr.Match = r.log.stableIndex()
			pr.Next = max(last+1, pr.Match+1)
			pr.Incarnation = r.cfg.Incarnation
			pr.Heard = true
		}
	}
	r.pendingConfIndex = 0
	r.uncommittedSize = 0
	r.reads.reset()
}

func (r *Core) becomeFollower(term, lead uint64) {
	r.reset(term)
	r.logConf = nil
	r.step = stepFollower
	r.lead = lead
	r.state = StateFollower
}

func (r *Core) becomePreCandidate() {
	// A pre-candidate changes neither term nor vote (§9.6): it only
	// learns whether it could win.
	r.trk.ResetVotes()
	r.step = stepCandidate
	r.lead = 0
	r.state = StatePreCandidate
}

func (r *Core) becomeCandidate() {
	r.reset(r.term + 1)
	r.step = stepCandidate
	r.vote = r.id
	r.state = StateCandidate
}

func (r *Core) becomeLeader() {
	r.reset(r.term)
	r.logConf = r.latestLogConfig()
	r.step = stepLeader
	r.lead = r.id
	r.state = StateLeader
	// Entries before this point may be conf changes we have not applied;
	// no new change until they are (one change at a time).
	r.pendingConfIndex = r.log.lastIndex()
	// §5.4.2 / §6.4: a no-op in the new term lets the leader commit (and
	// thereby learn the commit index of) everything before it.
	if !r.cfg.bugs.commitOldTerm {
		r.appendEntries([]Entry{{Type: EntryNormal}})
	}
	r.bcastAppend()
}

// Tick advances logical time by one tick.
func (r *Core) Tick() {
	if r.state == StateLeader {
		r.tickLeader()
		return
	}
	r.electionElapsed++
	if r.promotable() && r.electionElapsed >= r.randomTimeout {
		r.electionElapsed = 0
		if r.cfg.PreVote {
			r.campaign(campaignPreElection)
		} else {
			r.campaign(campaignElection)
		}
	}
}

// Step feeds one message from a peer into the core. Malformed, misaddressed
// or stale messages are ignored (ErrInvalidMessage for the first two);
// nothing received from the network can make Step panic.
func (r *Core) Step(m Message) error {
	if !r.validMessage(m) {
		return ErrInvalidMessage
	}
	if err := r.admit(m); err != nil {
		return err
	}
	r.stepByTerm(m)
	return nil
}

// admit decides who is heard (see "Who is heard" in doc.go). Dropping a
// message never endangers safety (Raft tolerates any message loss); these
// rules keep a stale or buggy peer from disturbing a node, while every
// message a correct cluster needs for progress still gets through:
//
//   - TimeoutNow and ReadIndex answers only from the leader this node
//     follows, in its term: a TimeoutNow makes this node depose that
//     leader, so nobody else may order it; a read index from anyone but
//     the leader asked would answer a read with a stale index.
//   - Leader traffic (AppendEntries, heartbeats, InstallSnapshot) from
//     anyone (thesis §4.1): a node whose configuration is behind, or
//     empty (joining), learns of its leader only through this traffic.
//     At a term below ours it only earns the rejection that carries our
//     term (Figure 2), which changes nothing here and makes a stale
//     leader step down.
//   - Everything else from members only (voters, learners, outgoing or
//     next ones), with one exception: a vote request that may come from
//     a configuration newer than ours, which may need our vote for a
//     majority (thesis §4.1). A candidate we do not know is a voter only
//     of a configuration whose entry lies beyond the one ours comes from
//     (confIndex), and that entry is in its log; and it can only win our
//     vote with a log at least as up to date as ours. A request failing
//     either test would be refused anyway, and dropping it keeps a
//     removed server from raising our term. Responses and read requests
//     from non-members answer or ask nothing a leader or candidate of
//     our configuration counts.
func (r *Core) admit(m Message) error {
	switch m.Type {
	case MsgTimeoutNow, MsgReadIndexResp:
		fromLeader := r.lead != 0 && m.From == r.lead && m.Term == r.term
		bug := r.cfg.bugs.timeoutNowFromAnyone && m.Type == MsgTimeoutNow ||
			r.cfg.bugs.readIndexFromAnyone && m.Type == MsgReadIndexResp
		if !fromLeader && !bug {
			r.droppedNotFromLeader++
			return ErrNotFromLeader
		}
		return nil
	case MsgApp, MsgHeartbeat, MsgSnap:
		if !r.cfg.bugs.dropUnknownLeaders {
			return nil
		}
	}
	if _, member := r.trk.Progress[m.From]; member || r.cfg.bugs.admitNonMembers {
		return nil
	}
	if m.Type == MsgVoteResp && r.logConfVoter(m.From) {
		return nil // a voter of the newer configuration this candidate also counts with
	}
	if m.Type == MsgVote && m.LastLogIndex > r.confIndex && r.log.isUpToDate(m.LastLogIndex, m.LastLogTerm) {
		return nil
	}
	r.droppedNonMember++
	return ErrNotMember
}

// stepByTerm applies Raft's term rules to an admitted message and hands
// it to the handler of the current role.
func (r *Core) stepByTerm(m Message) {
	switch {
	case m.Term > r.term:
		if m.Type == MsgVote && !m.Transfer && r.cfg.CheckQuorum && r.inLease() {
			// Leader stickiness (§4.2.3): we heard from a live leader
			// within the minimum election timeout, so this candidate
			// cannot be needed; ignore it without adopting its term.
			return
		}
		switch {
		case m.Type == MsgVote && m.PreVote:
			// A pre-vote never changes our term.
		case m.Type == MsgVoteResp && m.PreVote && m.Granted:
			// Granted pre-votes echo the term we would campaign in.
		case m.Type == MsgApp || m.Type == MsgHeartbeat || m.Type == MsgSnap:
			r.becomeFollower(m.Term, m.From)
		default:
			r.becomeFollower(m.Term, 0)
		}
	case m.Term < r.term:
		switch {
		case m.Type == MsgApp || m.Type == MsgHeartbeat:
			// Figure 2: the reply carries our term so a stale leader
			// steps down. Needed for liveness: a node whose term ran
			// ahead (say, campaigning with a stale configuration towards
			// removed peers) is otherwise never heard by the leader.
			// Marked as a rejection of index 0 so that a late duplicate
			// reaching a leader of our term is ignored as stale.
			r.send(Message{To: m.From, Type: MsgAppResp, Reject: true})
		case m.Type == MsgVote && m.PreVote:
			r.send(Message{To: m.From, Type: MsgVoteResp, PreVote: true})
		}
		return
	}
	if m.Type == MsgVote {
		r.handleVote(m)
		return
	}
	r.step(r, m)
}

// inLease reports whether we heard from a leader within the minimum
// election timeout.
func (r *Core) inLease() bool {
	return r.lead != 0 && r.electionElapsed < r.cfg.ElectionTick
}

// handleVote answers RequestVote (Figure 2) and pre-vote (§9.6).
// Precondition: m.Term >= r.term (the term rules in Step ran).
func (r *Core) handleVote(m Message) {
	if m.PreVote && !m.Transfer && r.inLease() {
		// §9.6: only grant a pre-vote if we have not heard from a leader
		// for an election timeout.
		r.send(Message{To: m.From, Type: MsgVoteResp, PreVote: true})
		return
	}
	// Election safety: at most one vote per term. We can vote for m.From
	// if we already did, or have voted for nobody and know no leader; a
	// pre-vote for a future term binds nothing.
	canVote := r.vote == m.From ||
		(r.vote == 0 && r.lead == 0) ||
		(m.PreVote && m.Term > r.term)
	if r.cfg.bugs.doubleVote && !m.PreVote && r.state == StateFollower {
		canVote = true
	}
	// Election restriction (§5.4.1): only for a log at least as up to date.
	if canVote && r.log.isUpToDate(m.LastLogIndex, m.LastLogTerm) {
		r.send(Message{To: m.From, Type: MsgVoteResp, Term: m.Term, Granted: true, PreVote: m.PreVote})
		if !m.PreVote {
			r.electionElapsed = 0
			r.vote = m.From
		}
		return
	}
	r.send(Message{To: m.From, Type: MsgVoteResp, PreVote: m.PreVote})
}

// validMessage rejects what a correct peer would never send, so that the
// rest of the core may rely on basic shape.
func (r *Core) validMessage(m Message) bool {
	if m.To != r.id || m.From == 0 || m.From == r.id || m.Term == 0 ||
		m.Type == 0 || m.Type >= msgTypeEnd {
		return false
	}
	switch m.Type {
	case MsgVote:
		return m.LastLogTerm <= m.Term
	case MsgApp:
		if m.LogTerm > m.Term || m.Index > ^uint64(0)-uint64(len(m.Entries))-1 {
			return false
		}
		prev := m.LogTerm
		for i, e := range m.Entries {
			if e.Index != m.Index+1+uint64(i) || e.Term < prev || e.Term > m.Term {
				return false
			}
			prev = e.Term
		}
	case MsgSnap:
		return m.Snapshot != nil && m.Snapshot.Index > 0 && m.Snapshot.Term > 0 && m.Snapshot.Term <= m.Term
	}
	return true
}

type campaignType uint8

const (
	campaignPreElection campaignType = iota
	campaignElection
	campaignTransfer
)

// campaign starts a (pre-)election.
func (r *Core) campaign(t campaignType) {
	if !r.promotable() || r.hasUnappliedConfChanges() {
		// A node that has not applied committed conf changes may be
		// using a stale configuration to count votes.
		return
	}
	var voteTerm uint64
	if t == campaignPreElection {
		r.becomePreCandidate()
		voteTerm = r.term + 1
	} else {
		r.becomeCandidate()
		voteTerm = r.term
	}
	r.logConf = r.latestLogConfig()
	r.trk.RecordVote(r.id, true)
	if r.tally() {
		return
	}
	for _, id := range r.voterIDs() {
		if id == r.id {
			continue
		}
		r.send(Message{
			To: id, Type: MsgVote, Term: voteTerm,
			LastLogIndex: r.log.lastIndex(), LastLogTerm: r.log.lastTerm(),
			PreVote: t == campaignPreElection, Transfer: t == campaignTransfer,
		})
	}
}

func (r *Core) hasUnappliedConfChanges() bool {
	if r.log.committed <= r.log.applied {
		return false
	}
	lo := r.log.applied + 1
	for lo <= r.log.committed {
		ents, err := r.log.entries(lo, r.log.committed+1, 1<<20)
		if err != nil || len(ents) == 0 {
			return false
		}
		for i := range ents {
			if ents[i].Type == EntryConfChange {
				return true
			}
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return false
}

// appendEntries assigns index and term to ents and appends them to the
// leader's log. The leader's own Match moves only in Advance, once the
// entries are durable (thesis §10.2.1).
func (r *Core) appendEntries(ents []Entry) {
	li := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = li + 1 + uint64(i)
	}
	r.log.append(ents...)
}

// switchConfig installs a new membership configuration and brings the
// progress map in line with it.
func (r *Core) switchConfig(c tracker.Config) {
	r.trk.Config = c
	ids := sortedIDs(c)
	member := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		member[id] = true
	}
	for id := range r.trk.Progress {
		if !member[id] {
			delete(r.trk.Progress, id)
		}
	}
	last := r.log.lastIndex()
	for _, id := range ids {
		pr := r.trk.Progress[id]
		if pr == nil {
			pr = &tracker.Progress{
				Next:         last + 1,
				Inflights:    tracker.NewInflights(r.trk.MaxInflight, r.trk.MaxInflightBytes),
				RecentActive: true,
				Incarnation:  c.Incarnations[id],
			}
			if id == r.id {
				pr.Incarnation, pr.Heard = r.cfg.Incarnation, true
			}
			r.trk.Progress[id] = pr
		} else if rec, ok := c.Incarnations[id]; ok && !pr.Heard {
			// Not heard from in this term: assume the storage the
			// configuration now records, as becomeLeader does.
			pr.Incarnation = rec
		}
		_, learner := c.Learners[id]
		pr.IsLearner = learner
	}
}

func errCorrupt(format string, args ...any) error {
	return fmt.Errorf("raft: storage inconsistent: "+format, args...)
}
