package raft

import "github.com/capraft/capraft/raftnode/raft/internal/quorum"

// stepCandidate handles messages while (pre-)campaigning.
// Precondition: m.Term == r.term, or m is a granted pre-vote response
// (term r.term+1); Step has applied the term rules.
func stepCandidate(r *Core, m Message) {
	switch m.Type {
	case MsgApp, MsgHeartbeat, MsgSnap:
		// A leader of our term exists (§5.2): step down and follow it.
		r.becomeFollower(m.Term, m.From)
		r.step(r, m)
	case MsgVoteResp:
		if m.PreVote != (r.state == StatePreCandidate) {
			return // answer to an earlier phase
		}
		if m.PreVote && m.Granted && m.Term != r.term+1 {
			return
		}
		granted := m.Granted
		if !r.counts(m.From, m.Incarnation) {
			// A voter whose storage was lost forgot its votes and its
			// log: its answer counts as a refusal (§ "Storage faults"
			// in doc.go), and Status reports it.
			granted = false
			if r.uncounted == nil {
				r.uncounted = map[uint64]uint64{}
			}
			r.uncounted[m.From] = m.Incarnation
		} else {
			delete(r.uncounted, m.From)
		}
		r.trk.RecordVote(m.From, granted)
		r.tally()
	}
}

// tally acts on the votes so far; it reports whether the election ended.
func (r *Core) tally() bool {
	switch r.tallyVotes() {
	case quorum.VoteWon:
		if r.state == StatePreCandidate {
			r.campaign(campaignElection)
		} else {
			r.becomeLeader()
		}
		return true
	case quorum.VoteLost:
		r.becomeFollower(r.term, 0)
		return true
	}
	return false
}
