package raft

import (
	"errors"
	"slices"

	"github.com/capraft/capraft/raftnode/raft/internal/tracker"
)

// The calls a driver makes on behalf of clients and operators.

// Propose appends data as a new log entry (leader only). The core keeps
// data; the caller must not modify it afterwards.
func (r *Core) Propose(data []byte) error {
	if err := r.canPropose(uint64(len(data))); err != nil {
		return err
	}
	r.appendEntries([]Entry{{Type: EntryNormal, Data: data}})
	r.uncommittedSize += uint64(len(data))
	r.bcastPending = true
	return nil
}

// ProposeBatch appends several entries at once (one broadcast); it
// accepts all or none.
func (r *Core) ProposeBatch(data [][]byte) error {
	var size uint64
	for _, d := range data {
		size += uint64(len(d))
	}
	if err := r.canPropose(size); err != nil {
		return err
	}
	ents := make([]Entry, len(data))
	for i, d := range data {
		ents[i] = Entry{Type: EntryNormal, Data: d}
	}
	r.appendEntries(ents)
	r.uncommittedSize += size
	r.bcastPending = true
	return nil
}

func (r *Core) canPropose(size uint64) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	if r.leadTransferee != 0 {
		return ErrProposalDropped // §3.10: proposals pause during transfer
	}
	if r.uncommittedSize > 0 && r.uncommittedSize+size > r.cfg.MaxUncommittedEntriesSize {
		return ErrProposalDropped
	}
	return nil
}

// ProposeConfChange proposes a membership change (leader only). Only one
// change may be pending: it fails with ErrProposalDropped until the
// previous one is applied. It fails immediately if the change is not
// allowed from the current configuration.
func (r *Core) ProposeConfChange(cc ConfChange) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	if r.leadTransferee != 0 || r.pendingConfIndex > r.log.applied {
		return ErrProposalDropped
	}
	cc.Changes = slices.Clone(cc.Changes)
	for i := range cc.Changes {
		c := &cc.Changes[i]
		if pr := r.trk.Progress[c.NodeID]; pr != nil && c.Incarnation == 0 {
			switch c.Type {
			case ConfChangeAddVoter:
				// Record the incarnation that answered us last: the
				// one whose acknowledgements show how far it caught up.
				c.Incarnation = pr.Incarnation
			case ConfChangeRemoveNode:
				// Name the storage removed (the one last heard, else
				// the one recorded), so that another storage of the
				// same id, added back later, does not take a replay
				// of this removal for its own.
				c.Incarnation = pr.Incarnation
			}
		}
	}
	if _, err := nextConfig(r.trk.Config, cc); err != nil {
		return err
	}
	return r.proposeConfChange(cc)
}

// Bootstrap starts a brand-new cluster on a core created over empty
// storage, for a driver that decides to bootstrap only once it runs (say,
// after every initial member answered with its incarnation). s is the
// bootstrap snapshot (BootstrapSnapshot); it comes back in the next Ready,
// to be persisted and restored like a snapshot from a leader. It fails
// with ErrBootstrapped if the core already holds a log or a configuration:
// a leader's snapshot or entries arrived first, and they win.
func (r *Core) Bootstrap(s Snapshot) error {
	if r.log.lastIndex() != 0 || r.log.unstable.snapshot != nil || len(r.trk.Voters[0]) > 0 || len(r.trk.Learners) > 0 {
		return ErrBootstrapped
	}
	if s.IsEmpty() || s.Meta.Term == 0 || len(s.Meta.ConfState.Voters) == 0 {
		return errors.New("raft: bootstrap needs a snapshot with an index, a term and voters")
	}
	if r.term < s.Meta.Term {
		r.becomeFollower(s.Meta.Term, 0)
	}
	r.log.restore(s)
	r.switchConfig(configFromConfState(s.Meta.ConfState))
	r.confIndex = s.Meta.Index
	return nil
}

func (r *Core) proposeConfChange(cc ConfChange) error {
	r.appendEntries([]Entry{{Type: EntryConfChange, Data: cc.Marshal()}})
	r.pendingConfIndex = r.log.lastIndex()
	if r.logConf != nil {
		// Changes not in effect pile up (logconf.go).
		if n, err := nextConfig(r.logConf.cfg, cc); err == nil {
			r.logConf = &logConfig{cfg: n, index: r.pendingConfIndex}
		}
	}
	r.bcastAppend()
	return nil
}

// TransferLeadership asks the leader to hand leadership to the voter to
// (§3.10): it brings that voter's log up to date, then sends it
// TimeoutNow. Proposals are refused meanwhile; the attempt is abandoned
// after an election timeout. It fails with ErrBadTransferee if to is this
// node or not a voter.
func (r *Core) TransferLeadership(to uint64) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	pr := r.trk.Progress[to]
	if to == r.id || pr == nil || pr.IsLearner || !r.counts(to, pr.Incarnation) {
		return ErrBadTransferee
	}
	if r.leadTransferee == to {
		return nil
	}
	r.leadTransferee = to
	r.electionElapsed = 0
	if pr.Match == r.log.lastIndex() {
		r.send(Message{To: to, Type: MsgTimeoutNow})
	} else {
		r.sendAppend(to, true)
		r.sendAppends(to)
	}
	return nil
}

// ReportUnreachable tells the leader that the transport could not deliver
// to id (connection lost). Its pipeline is presumed lost: the leader stops
// streaming and probes again from the last acknowledged index. Calls on
// non-leaders and for unknown ids are ignored.
func (r *Core) ReportUnreachable(id uint64) {
	if r.state != StateLeader {
		return
	}
	if pr := r.trk.Progress[id]; pr != nil && id != r.id && pr.State == tracker.StateReplicate {
		pr.BecomeProbe()
	}
}

// ReportSnapshot tells the leader how the transfer of the snapshot at
// index to follower id ended: the driver streams the snapshot a MsgSnap
// names beside the core, and reports every transfer it started exactly
// once, finished or failed (in the style of etcd-io/raft's
// ReportSnapshot). Until then the leader sends id no appends.
//
// Either way id returns to probing, and waits for an answer before the
// next probe: after SnapshotFinish, for the MsgAppResp with which the
// follower's core acknowledges the install (it may have arrived already,
// and then the report changes nothing); after SnapshotFailure, for a
// heartbeat answer, so a follower that keeps failing gets a new transfer
// at most once per heartbeat interval and one that is down gets none.
// Reports for another snapshot than the one pending, on a non-leader or
// for an unknown id are ignored: they come from a transfer an earlier
// term or an earlier snapshot started.
func (r *Core) ReportSnapshot(id, index uint64, status SnapshotStatus) {
	if r.state != StateLeader || id == r.id {
		return
	}
	pr := r.trk.Progress[id]
	if pr == nil || pr.State != tracker.StateSnapshot || pr.PendingSnapshot != index {
		return
	}
	if status != SnapshotFinish {
		// Probe from what the follower acknowledged, not from the
		// snapshot it never got.
		pr.PendingSnapshot = 0
	}
	pr.BecomeProbe()
	pr.ProbeSent = true
}

// CommitUnannounced reports whether this leader, configured with
// LazyCommit, holds a commit index that it has not yet sent to its
// followers (see AnnounceCommit).
func (r *Core) CommitUnannounced() bool {
	return r.state == StateLeader && r.commitUnannounced
}

// AnnounceCommit sends followers the commit index that LazyCommit left
// waiting, with an append each (empty unless they lack entries). Call it
// when CommitUnannounced has held for a moment without a new proposal
// carrying the index; it does nothing otherwise.
func (r *Core) AnnounceCommit() {
	if r.CommitUnannounced() {
		r.bcastAppend()
	}
}
