package raft

import (
	"fmt"
	"hash/crc32"
	"slices"
)

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
		r.handleSnapshotChunk(m)
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

// snapReceive buffers an InstallSnapshot arriving in chunks.
type snapReceive struct {
	meta SnapshotMeta
	sum  uint32 // the leader's checksum of the whole snapshot
	data []byte
}

// handleSnapshotChunk is the InstallSnapshot receiver (§5.3 of the
// thesis / Figure 13 of the paper): chunks must arrive in offset order;
// anything else is answered with the offset we expect next.
func (r *Core) handleSnapshotChunk(m Message) {
	meta := *m.Snapshot
	if meta.Index <= r.log.committed {
		r.snapRecv = nil
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
		return
	}
	rs := r.snapRecv
	if rs == nil || rs.meta.Index != meta.Index || rs.meta.Term != meta.Term || rs.sum != m.Checksum {
		// Another snapshot (a checksum that changed names other bytes):
		// it must be received from its start.
		if m.Offset != 0 {
			r.send(Message{To: m.From, Type: MsgSnapResp, Snapshot: &SnapshotMeta{Index: meta.Index, Term: meta.Term}})
			return
		}
		rs = &snapReceive{meta: cloneMeta(meta), sum: m.Checksum}
		r.snapRecv = rs
	}
	if m.Offset != uint64(len(rs.data)) {
		r.send(Message{To: m.From, Type: MsgSnapResp, Snapshot: &SnapshotMeta{Index: meta.Index, Term: meta.Term}, Offset: uint64(len(rs.data))})
		return
	}
	if uint64(len(rs.data))+uint64(len(m.Data)) > r.cfg.MaxSnapshotSize {
		r.snapRecv = nil // refuse to buffer without bound
		return
	}
	rs.data = append(rs.data, m.Data...)
	if !m.Done {
		r.send(Message{To: m.From, Type: MsgSnapResp, Snapshot: &SnapshotMeta{Index: meta.Index, Term: meta.Term}, Offset: uint64(len(rs.data))})
		return
	}
	r.snapRecv = nil
	installed, err := r.restore(Snapshot{Meta: rs.meta, Data: rs.data}, rs.sum)
	switch {
	case err != nil:
		// Refused: keep everything and answer nothing. The leader
		// resends after its resend interval, from the start (we expect
		// offset 0 now), so a snapshot damaged on the way is fetched
		// again, at a bounded rate if the leader's own copy is bad.
		r.snapshotsRefused++
		r.stepErr = fmt.Errorf("%w: snapshot %d/%d (%d bytes) from %d: %w", ErrSnapshotRefused, rs.meta.Index, rs.meta.Term, len(rs.data), m.From, err)
	case installed:
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.lastIndex()})
	default:
		r.send(Message{To: m.From, Type: MsgAppResp, Index: r.log.committed})
	}
}

// restore installs a complete snapshot received from a leader, whose
// checksum the leader gave as sum (0: none). It returns false if the
// snapshot brought nothing new (then the commit index may still move
// forward), and an error if the snapshot would replace our state but
// fails its checksum or Config.VerifySnapshot: then nothing changed.
func (r *Core) restore(s Snapshot, sum uint32) (bool, error) {
	if s.Meta.Index <= r.log.committed {
		return false, nil
	}
	if len(s.Meta.ConfState.Voters) == 0 {
		return false, nil // a snapshot without voters cannot be right
	}
	if r.log.matchTerm(s.Meta.Index, s.Meta.Term) {
		// We already hold the entry the snapshot ends at, so by Log
		// Matching we hold everything before it: just commit.
		r.log.commitTo(s.Meta.Index)
		return false, nil
	}
	if sum != 0 && !r.cfg.bugs.skipSnapshotChecksum {
		if got := crc32.Checksum(s.Data, castagnoli); got != sum {
			return false, fmt.Errorf("checksum mismatch: the data has CRC-32C %08x, the leader sent %08x", got, sum)
		}
	}
	if r.cfg.VerifySnapshot != nil {
		if err := r.cfg.VerifySnapshot(s); err != nil {
			return false, fmt.Errorf("undecodable: %w", err)
		}
	}
	r.log.restore(s)
	r.switchConfig(configFromConfState(s.Meta.ConfState))
	r.confIndex = s.Meta.Index
	r.logConf = nil
	return true, nil
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
