package raft

import (
	"errors"

	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// stepLeader handles messages as the leader.
// Precondition: m.Term == r.term (Step has applied the term rules).
func stepLeader(r *Core, m Message) {
	pr := r.trk.Progress[m.From]
	if pr == nil {
		return // not a member (any more)
	}
	if pr.Incarnation != m.Incarnation {
		// The peer answers from storage other than the one we knew:
		// wiped, replaced, or repaired after damage. Whatever it
		// acknowledged before is gone, so start over from nothing; if
		// it is a voter, maybeRestore demotes it until it caught up.
		pr.ResetIncarnation(m.Incarnation, r.log.lastIndex()+1)
	}
	pr.Heard = true
	switch m.Type {
	case MsgAppResp:
		pr.RecentActive = true
		r.handleAppendResponse(m, pr)
	case MsgHeartbeatResp:
		pr.RecentActive = true
		r.handleHeartbeatResponse(m, pr)
	case MsgReadIndex:
		r.leaderRead(m.From, m.Context)
	}
}

func (r *Core) tickLeader() {
	r.heartbeatElapsed++
	r.electionElapsed++
	if r.electionElapsed >= r.cfg.ElectionTick {
		r.electionElapsed = 0
		if r.cfg.CheckQuorum {
			// Check quorum (§6.2): a leader that has not heard from a
			// quorum for an election timeout steps down, so clients go
			// elsewhere and a lease-based read cannot outlive it.
			if self := r.trk.Progress[r.id]; self != nil {
				self.RecentActive = true
			}
			if !r.trk.QuorumActive() {
				r.becomeFollower(r.term, 0)
				return
			}
			for id, pr := range r.trk.Progress {
				if id != r.id {
					pr.RecentActive = false
				}
			}
		}
		// A transfer that did not finish within an election timeout
		// is abandoned so proposals resume.
		r.leadTransferee = 0
	}
	if r.heartbeatElapsed >= r.cfg.HeartbeatTick {
		r.heartbeatElapsed = 0
		r.bcastHeartbeat()
		r.maybeRestore()
	}
}

// handleAppendResponse updates a follower's progress (§5.3).
func (r *Core) handleAppendResponse(m Message, pr *tracker.Progress) {
	if m.Reject {
		hint := r.backtrackHint(m)
		if pr.MaybeDecrTo(m.Index, hint) {
			if pr.State == tracker.StateReplicate {
				next := pr.Next
				pr.ResetState(tracker.StateProbe)
				pr.Next = next
			}
			r.sendAppend(m.From, true)
		}
		return
	}
	if m.Index > r.log.lastIndex() {
		return // acknowledges entries we never had: not from our term's log
	}
	old := pr.Match
	updated := pr.MaybeUpdate(m.Index)
	if updated || (pr.State == tracker.StateProbe && m.Index == old) {
		switch pr.State {
		case tracker.StateProbe:
			pr.BecomeReplicate()
		case tracker.StateSnapshot:
			if pr.Match+1 >= r.log.firstIndex() {
				pr.BecomeReplicate()
			}
		case tracker.StateReplicate:
			pr.Inflights.FreeLE(m.Index)
		}
	}
	if prev := r.log.committed; updated && r.maybeCommit() {
		r.commitAdvanced(prev)
	} else {
		r.sendAppends(m.From)
	}
	if m.From == r.leadTransferee && pr.Match == r.log.lastIndex() {
		r.send(Message{To: m.From, Type: MsgTimeoutNow})
	}
	if _, promote := r.trk.AutoPromote[m.From]; promote && updated {
		r.maybeRestore() // it may just have caught up
	}
}

// backtrackHint computes where to probe next from a rejection's hints
// (the accelerated log backtracking of §5.3): if we hold the follower's
// conflicting term, continue after our last entry of that term,
// otherwise skip the follower's whole term.
func (r *Core) backtrackHint(m Message) uint64 {
	if m.ConflictIndex == 0 {
		return m.Index
	}
	if m.ConflictTerm == 0 {
		return m.ConflictIndex
	}
	i := min(m.Index, r.log.lastIndex())
	first := r.log.firstIndex()
	for i >= first {
		t, err := r.log.term(i)
		if err != nil || t <= m.ConflictTerm {
			if err == nil && t == m.ConflictTerm {
				return i + 1
			}
			break
		}
		i--
	}
	return m.ConflictIndex
}

func (r *Core) handleHeartbeatResponse(m Message, pr *tracker.Progress) {
	pr.ProbeSent = false
	if pr.State == tracker.StateReplicate && pr.Inflights.Full() {
		// The follower is alive but our window is full: some appends
		// were probably lost. Free a slot so the next (possibly empty)
		// append surfaces the gap as a rejection.
		pr.Inflights.FreeFirstOne()
	}
	if pr.Match < r.log.lastIndex() {
		r.sendAppend(m.From, true)
	}
	if r.counts(m.From, m.Incarnation) {
		r.reads.ack(m.From, m.Seq)
		r.advanceReads()
	}
}

// maybeCommit advances the commit index to what a quorum holds, but only
// through an entry of the current term (§5.4.2, Figure 8): counting
// replicas of an older term's entry does not make it committed.
func (r *Core) maybeCommit() bool {
	mci := r.committedIndex()
	if mci <= r.log.committed {
		return false
	}
	if !r.cfg.bugs.commitOldTerm && r.log.termOr0(mci) != r.term {
		return false
	}
	r.log.commitTo(mci)
	r.releaseWaitingReads()
	return true
}

// bcastAppend sends new entries (and the commit index) to every follower
// whose window allows it.
func (r *Core) bcastAppend() {
	r.commitUnannounced = false
	for _, id := range r.trk.IDs() {
		if id != r.id {
			r.sendAppend(id, true)
			r.sendAppends(id)
		}
	}
}

// commitAdvanced tells followers that the commit index moved past prev:
// at once with (possibly empty) appends, or, with LazyCommit, only with
// appends that carry entries anyway, leaving the rest to AnnounceCommit.
// A committed membership change is always announced at once: a member it
// removes hears nothing from us once it is applied, and must learn of its
// removal now.
func (r *Core) commitAdvanced(prev uint64) {
	conf := r.pendingConfIndex > prev && r.pendingConfIndex <= r.log.committed
	if !r.cfg.LazyCommit || conf {
		r.bcastAppend()
		return
	}
	r.commitUnannounced = true
	for _, id := range r.trk.IDs() {
		if id != r.id {
			r.sendAppends(id)
		}
	}
}

// sendAppends pipelines appends to id while it is replicating and its
// window has room.
func (r *Core) sendAppends(id uint64) {
	for r.sendAppend(id, false) {
		if pr := r.trk.Progress[id]; pr == nil || pr.State != tracker.StateReplicate {
			return
		}
	}
}

// sendAppend sends one AppendEntries to id starting at its Next, or a
// snapshot if those entries are compacted. With sendIfEmpty it sends even
// with nothing new (to carry the commit index or probe). It reports
// whether a message was sent.
func (r *Core) sendAppend(id uint64, sendIfEmpty bool) bool {
	pr := r.trk.Progress[id]
	if pr == nil || pr.IsPaused() {
		return false
	}
	prev := pr.Next - 1
	prevTerm, errT := r.log.term(prev)
	last := r.log.lastIndex()
	hi := min(last+1, pr.Next+uint64(r.cfg.MaxEntriesPerMsg))
	ents, errE := r.log.entries(pr.Next, hi, r.cfg.MaxSizePerMsg)
	if errT != nil || errE != nil {
		return r.sendSnapshot(id, pr)
	}
	if len(ents) == 0 && !sendIfEmpty {
		return false
	}
	switch pr.State {
	case tracker.StateReplicate:
		if n := len(ents); n > 0 {
			li := ents[n-1].Index
			pr.OptimisticUpdate(li)
			pr.Inflights.Add(li, payloadSize(ents))
		}
	case tracker.StateProbe:
		pr.ProbeSent = true
	}
	r.send(Message{To: id, Type: MsgApp, Index: prev, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	return true
}

// sendSnapshot switches id to StateSnapshot and asks the driver, with a
// MsgSnap naming the newest snapshot, to stream that snapshot to it. The
// driver answers with ReportSnapshot; until then id gets no appends.
func (r *Core) sendSnapshot(id uint64, pr *tracker.Progress) bool {
	snap, err := r.storageSnapshot()
	if err != nil || snap.IsEmpty() {
		return false // ErrSnapshotTemporarilyUnavailable: retry later
	}
	meta := snap.Meta
	pr.BecomeSnapshot(meta.Index)
	r.send(Message{To: id, Type: MsgSnap, Snapshot: &meta})
	return true
}

// bcastHeartbeat sends heartbeats, carrying the read round.
func (r *Core) bcastHeartbeat() {
	for _, id := range r.trk.IDs() {
		if id == r.id {
			continue
		}
		pr := r.trk.Progress[id]
		r.send(Message{To: id, Type: MsgHeartbeat, Commit: min(pr.Match, r.log.committed), Seq: r.reads.seq, ToIncarnation: pr.Incarnation})
	}
}

// selfAck records that the leader's own log is durable up to its stable
// index (called from Advance) and commits what a quorum now holds.
func (r *Core) selfAck() {
	pr := r.trk.Progress[r.id]
	if pr == nil {
		return
	}
	if prev := r.log.committed; pr.MaybeUpdate(r.log.stableIndex()) && r.maybeCommit() {
		r.commitAdvanced(prev)
	}
}

// storageSnapshot reads the latest snapshot; only "temporarily
// unavailable" is an expected error (see "Storage errors" in doc.go).
func (r *Core) storageSnapshot() (Snapshot, error) {
	snap, err := r.log.storage.Snapshot()
	if err != nil && !errors.Is(err, ErrSnapshotTemporarilyUnavailable) {
		panic(err)
	}
	return snap, err
}

// maybeRestore keeps the configuration honest about voters whose storage
// was replaced (Protocol-Aware Recovery, Alagappan et al., FAST 2018): a
// voter that answers with an incarnation other than the recorded one
// forgot its log and its votes, so it is demoted to a learner marked
// AutoPromote (one single-step change; its answers counted for nothing
// meanwhile anyway), and promoted back, recording its new incarnation,
// once it has caught up; so is any AutoPromote learner. A voter recorded without an incarnation gets the
// one it answers with. One change at a time, only from a leader that has
// committed an entry of its term, never while joint or transferring.
func (r *Core) maybeRestore() {
	if r.state != StateLeader || r.cfg.bugs.ignoreIncarnation || r.leadTransferee != 0 || r.trk.Joint() ||
		r.pendingConfIndex > r.log.applied || r.log.termOr0(r.log.committed) != r.term {
		return
	}
	// This runs after every Ready: look for work without allocating,
	// then pick deterministically (lowest id) among the members needing it.
	var pick uint64
	var change ConfChangeSingle
	for id, pr := range r.trk.Progress {
		if id == r.id || (pick != 0 && id > pick) {
			continue
		}
		if c, ok := r.restoreChange(id, pr); ok {
			pick, change = id, c
		}
	}
	if pick != 0 {
		_ = r.proposeConfChange(ConfChange{Changes: []ConfChangeSingle{change}})
	}
}

// restoreChange is the change maybeRestore makes for member id, if any.
func (r *Core) restoreChange(id uint64, pr *tracker.Progress) (ConfChangeSingle, bool) {
	rec, recorded := r.trk.Incarnations[id]
	_, voter := r.trk.Voters[0][id]
	_, promote := r.trk.AutoPromote[id]
	switch {
	case voter && recorded && rec != pr.Incarnation && pr.Heard:
		return ConfChangeSingle{Type: ConfChangeAddLearner, NodeID: id, Incarnation: pr.Incarnation, AutoPromote: true}, true
	case voter && !recorded && pr.Incarnation != 0 && pr.State == tracker.StateReplicate:
		return ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: id, Incarnation: pr.Incarnation}, true
	case promote && pr.IsLearner && r.caughtUp(pr):
		return ConfChangeSingle{Type: ConfChangeAddVoter, NodeID: id, Incarnation: pr.Incarnation}, true
	}
	return ConfChangeSingle{}, false
}

// caughtUp reports whether a follower's log holds everything committed,
// give or take what one append carries, and it is streaming.
func (r *Core) caughtUp(pr *tracker.Progress) bool {
	return pr.State == tracker.StateReplicate && pr.Match+uint64(r.cfg.MaxEntriesPerMsg) >= r.log.committed
}
