package raft

import "slices"

// stepFollower handles messages as a follower.
// Precondition: m.Term == r.term (Step has applied the term rules).
func stepFollower(r *Core, m Message) {
	switch m.Type {
	case MsgApp:
		r.heardFromLeader(m.From)
		r.handleAppend(m)
	case MsgHeartbeat:
		r.heardFromLeader(m.From)
		r.handleHeartbeat(m)
	case MsgSnap:
		r.heardFromLeader(m.From)
		r.handleSnapshot(m)
	case MsgTimeoutNow:
		// Leadership transfer (§3.10): campaign at once, skipping
		// pre-vote and bypassing stickiness. admit let it through only
		// from the leader we follow, in its term.
		r.campaign(campaignTransfer)
	case MsgReadIndexResp:
		r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Context})
	}
}

func (r *Core) heardFromLeader(id uint64) {
	r.electionElapsed = 0
	r.lead = id
}

// handleAppend is the AppendEntries receiver (Figure 2).
func (r *Core) handleAppend(m Message) {
	if m.Index < r.log.committed {
		// Everything up to our commit index is settled (and matches the
		// leader by Leader Completeness): keep only what lies beyond it.
		c := r.log.committed
		if m.Index+uint64(len(m.Entries)) <= c {
			r.send(Message{To: m.From, Type: MsgAppResp, Index: c})
			return
		}
		skip := c - m.Index
		m.LogTerm = m.Entries[skip-1].Term
		m.Entries = m.Entries[skip:]
		m.Index = c
	}
	if last, ok := r.log.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries); ok {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: last})
		return
	}
	// Reject (Figure 2 step 2) with hints for fast backtracking (§5.3):
	// the conflicting term and the first index we hold for it, so the
	// leader can skip a whole term per round trip.
	resp := Message{To: m.From, Type: MsgAppResp, Index: m.Index, Reject: true, LastIndex: r.log.lastIndex()}
	if m.Index > resp.LastIndex {
		resp.ConflictIndex = resp.LastIndex + 1
	} else {
		resp.ConflictTerm = r.log.termOr0(m.Index)
		resp.ConflictIndex = r.log.firstIndexOfTerm(m.Index)
	}
	r.send(resp)
}

// handleHeartbeat applies the leader's commit index. The leader capped it
// at our Match, so we are known to hold those entries, provided Match was
// about this storage: after a wipe or a repair, this node may hold entries
// from a stale leader at indexes its former storage acknowledged.
func (r *Core) handleHeartbeat(m Message) {
	if m.ToIncarnation == r.cfg.Incarnation {
		r.log.commitTo(min(m.Commit, r.log.lastIndex()))
	}
	r.send(Message{To: m.From, Type: MsgHeartbeatResp, Seq: m.Seq})
}

// handleSnapshot is the InstallSnapshot receiver (§5.3 of the thesis /
// Figure 13 of the paper), once the driver holds the snapshot's data: it
// streamed the data beside the core, into a file, checked it end to end
// and had the application verify it, and only then stepped the MsgSnap
// (see "Snapshots" in doc.go). So the core decides by Raft's rules
// alone: install, commit, or ignore.
func (r *Core) handleSnapshot(m Message) {
	if r.restore(cloneMeta(*m.Snapshot)) {
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.lastIndex()})
		return
	}
	r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
}

// restore installs the snapshot meta names, received from a leader. It
// returns false if the snapshot brought nothing new (then the commit
// index may still move forward). The installed snapshot comes out in the
// next Ready, metadata only: the driver holds its data.
func (r *Core) restore(meta SnapshotMeta) bool {
	if meta.Index <= r.log.committed {
		return false
	}
	if len(meta.ConfState.Voters) == 0 {
		return false // a snapshot without voters cannot be right
	}
	if r.log.matchTerm(meta.Index, meta.Term) {
		// We already hold the entry the snapshot ends at, so by Log
		// Matching we hold everything before it: just commit.
		r.log.commitTo(meta.Index)
		return false
	}
	r.log.restore(Snapshot{Meta: meta})
	r.switchConfig(configFromConfState(meta.ConfState))
	r.confIndex = meta.Index
	r.logConf = nil
	return true
}

func cloneMeta(m SnapshotMeta) SnapshotMeta {
	c := func(s []uint64) []uint64 {
		if len(s) == 0 {
			return nil
		}
		return append([]uint64(nil), s...)
	}
	m.ConfState = ConfState{
		Voters:         c(m.ConfState.Voters),
		Learners:       c(m.ConfState.Learners),
		VotersOutgoing: c(m.ConfState.VotersOutgoing),
		LearnersNext:   c(m.ConfState.LearnersNext),
		AutoLeave:      m.ConfState.AutoLeave,
		Incarnations:   slices.Clone(m.ConfState.Incarnations),
		AutoPromote:    c(m.ConfState.AutoPromote),
	}
	return m
}
