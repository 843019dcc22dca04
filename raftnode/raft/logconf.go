package raft

import (
	"github.com/capraft/capraft/raftnode/raft/internal/quorum"
	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// Membership changes in the log that are not in effect yet.
//
// A configuration takes effect when its entry is applied (as in
// etcd-io/raft), and a node applies an entry only once it learns that the
// entry is committed. A node can therefore hold, unapplied, changes that
// the cluster committed long ago, and count votes with a configuration
// several changes old. Consecutive configurations always share a voter in
// any two of their majorities (single-step changes, joint consensus), so
// one change behind is harmless: that is how a leader counts while its
// own change is pending. Two changes apart they need not: a candidate
// counting with the old configuration can be elected by nodes that lack
// entries a majority of the current one committed (say with the vote of
// a node the log already removed, which never learned of it and runs on),
// and lose them. The thesis avoids this by counting with the latest
// configuration in the log at once (§4.1).
//
// So a candidate whose log holds two or more changes beyond the
// configuration in effect, and the leader it becomes, count with both:
// votes, commits and read confirmations need a majority of the
// configuration in effect and of the one the last change in its log
// leads to (logConf), until that change is applied. Every entry after
// that change was committed by a majority of its configuration or of the
// one before, both of which intersect a majority of logConf's; entries
// before it the candidate holds by Log Matching. Asking more of a quorum
// never endangers safety, and the cluster that committed those changes
// has a majority of each configuration to give.

// logConfig is the configuration a candidate or leader also counts with.
type logConfig struct {
	cfg   tracker.Config
	index uint64 // the log index of the change it results from
}

// latestLogConfig computes the configuration that the membership changes
// in the log not yet in effect lead to; nil if there are fewer than two. Changes the configuration in effect would skip when
// applied (malformed or not allowed) are skipped here too.
func (r *Core) latestLogConfig() *logConfig {
	if r.cfg.bugs.staleConfigCounts {
		return nil
	}
	var lc *logConfig
	changes := 0
	cur := r.trk.Config
	// Every change up to the applied index is in effect (confIndex has
	// passed it), so only the unapplied tail is read.
	for lo, last := max(r.confIndex, r.log.applied)+1, r.log.lastIndex(); lo <= last; {
		ents, err := r.log.entries(lo, last+1, 1<<20)
		if err != nil || len(ents) == 0 {
			break // compacted entries are applied ones
		}
		for i := range ents {
			if ents[i].Type != EntryConfChange {
				continue
			}
			cc, err := UnmarshalConfChange(ents[i].Data)
			if err != nil {
				continue
			}
			n, err := nextConfig(cur, cc)
			if err != nil {
				continue
			}
			cur = n
			lc = &logConfig{cfg: n, index: ents[i].Index}
			changes++
		}
		lo = ents[len(ents)-1].Index + 1
	}
	if changes < 2 {
		return nil
	}
	return lc
}

// voterIDs returns the voters to ask for votes: those of the
// configuration in effect and of logConf, sorted.
func (r *Core) voterIDs() []uint64 {
	ids := r.trk.Voters.IDs()
	if r.logConf == nil {
		return ids
	}
	for _, id := range r.logConf.cfg.Voters.IDs() {
		if !r.trk.Voters.Contains(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// logConfVoter reports whether id votes in logConf.
func (r *Core) logConfVoter(id uint64) bool {
	return r.logConf != nil && r.logConf.cfg.Voters.Contains(id)
}

// tallyVotes is the election's result: won only with a majority of the
// configuration in effect and of logConf.
func (r *Core) tallyVotes() quorum.VoteResult {
	_, _, res := r.trk.TallyVotes()
	if r.logConf == nil {
		return res
	}
	return both(res, r.logConf.cfg.Voters.VoteResult(r.trk.Votes))
}

// both combines two vote results that must both be won.
func both(a, b quorum.VoteResult) quorum.VoteResult {
	switch {
	case a == quorum.VoteLost || b == quorum.VoteLost:
		return quorum.VoteLost
	case a == quorum.VoteWon && b == quorum.VoteWon:
		return quorum.VoteWon
	}
	return quorum.VotePending
}

// committedIndex is the highest index a majority of the configuration in
// effect holds, and a majority of logConf too.
func (r *Core) committedIndex() uint64 {
	mci := r.trk.Committed()
	if r.logConf != nil {
		mci = min(mci, r.logConf.cfg.Voters.CommittedIndex(logConfAcks{r}))
	}
	return mci
}

// logConfAcks adapts the leader's progress to logConf's voters: a voter
// counts with the incarnation logConf records for it.
type logConfAcks struct{ r *Core }

// AckedIndex implements quorum.AckedIndexer.
func (a logConfAcks) AckedIndex(id uint64) (uint64, bool) {
	pr := a.r.trk.Progress[id]
	if pr == nil {
		return 0, false
	}
	if !a.r.cfg.bugs.ignoreIncarnation && !a.r.logConf.cfg.Counts(id, pr.Incarnation) {
		return 0, true
	}
	return pr.Match, true
}

// appliedLogConf drops logConf once the change it results from is in
// effect.
func (r *Core) appliedLogConf() {
	if r.logConf != nil && r.confIndex >= r.logConf.index {
		r.logConf = nil
	}
}
