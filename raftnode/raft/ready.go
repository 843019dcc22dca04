package raft

// SoftState is volatile state worth reporting: who leads, our role.
type SoftState struct {
	Lead uint64
	Role StateType
}

// Ready is a batch of work for the driver. See the package documentation
// for the exact order in which its parts must be handled. Its slices
// (entries, messages and their entries) may share memory with the core's
// log: treat them as read-only. The core never writes to memory it has
// handed out, so they stay valid after Advance.
type Ready struct {
	// SoftState is non-nil when leader or role changed.
	SoftState *SoftState
	// HardState is non-empty when term, vote or commit changed; persist it.
	HardState HardState
	// Entries must be appended to stable storage (replacing any
	// conflicting suffix).
	Entries []Entry
	// Snapshot, if not empty, must be persisted (replacing the log) and
	// restored into the application before CommittedEntries are applied.
	// Only a snapshot given to Bootstrap carries Data; one from a leader
	// is metadata only, and its data is what the driver received before
	// it stepped the MsgSnap (see "Snapshots" in doc.go).
	Snapshot Snapshot
	// CommittedEntries are to be applied in order. They are already
	// durable, so applying may run in parallel with persisting this Ready.
	CommittedEntries []Entry
	// Messages may be sent at once, in parallel with persisting.
	Messages []Message
	// MessagesAfterPersist may be sent only after Entries, HardState and
	// Snapshot are durable.
	MessagesAfterPersist []Message
	// ReadStates are confirmed read indexes (see ReadIndex).
	ReadStates []ReadState
	// MustSync says whether the write must be fsynced (term, vote or
	// entries changed); a commit-only HardState change need not be.
	MustSync bool
}

// readyMark remembers what the outstanding Ready handed out, so Advance
// can acknowledge exactly that.
type readyMark struct {
	lastIndex, lastTerm uint64
	snapIndex           uint64
	hs                  HardState
	applying            uint64
	confEntries         []Entry
}

// HasReady reports whether Ready would return anything. It is false while
// a Ready is outstanding (not yet Advanced).
func (r *Core) HasReady() bool {
	if r.outstanding != nil {
		return false
	}
	if r.bcastPending && r.state == StateLeader {
		return true
	}
	if r.softState() != r.prevSoft {
		return true
	}
	if hs := r.hardState(); hs != r.prevHS && !hs.IsEmpty() {
		return true
	}
	u := &r.log.unstable
	return len(u.entries) > 0 || u.snapshot != nil || len(r.msgs) > 0 ||
		len(r.readStates) > 0 || r.log.hasNextCommitted()
}

// Ready returns the next batch of work and marks it outstanding. The
// caller must handle it as the package documentation describes and then
// call Advance before calling Ready again; calling Ready twice without
// Advance is a programmer error and panics.
func (r *Core) Ready() Ready {
	if r.outstanding != nil {
		panic("raft: Ready called again before Advance")
	}
	if r.bcastPending {
		r.bcastPending = false
		if r.state == StateLeader {
			r.bcastAppend()
		}
	}
	var rd Ready
	mark := &readyMark{}
	if ss := r.softState(); ss != r.prevSoft {
		rd.SoftState = &ss
		r.prevSoft = ss
	}
	hs := r.hardState()
	if hs != r.prevHS {
		rd.HardState = hs
		mark.hs = hs
		rd.MustSync = hs.Term != r.prevHS.Term || hs.Vote != r.prevHS.Vote
	}
	u := &r.log.unstable
	if u.snapshot != nil {
		rd.Snapshot = *u.snapshot
		mark.snapIndex = u.snapshot.Meta.Index
		rd.MustSync = true
	}
	if n := len(u.entries); n > 0 {
		rd.Entries = u.entries
		mark.lastIndex, mark.lastTerm = u.entries[n-1].Index, u.entries[n-1].Term
		rd.MustSync = true
	}
	if ents := r.log.nextCommitted(); len(ents) > 0 {
		rd.CommittedEntries = ents
		r.log.applying = ents[len(ents)-1].Index
		for i := range ents {
			if ents[i].Type == EntryConfChange {
				mark.confEntries = append(mark.confEntries, ents[i])
			}
		}
		if r.state == StateLeader {
			r.uncommittedSize -= min(r.uncommittedSize, payloadSize(ents))
		}
	}
	mark.applying = r.log.applying
	// A node whose term and vote are already durable may send what
	// promises nothing about its disk before persisting: a leader its
	// own traffic (§10.2.1), any node its heartbeat answers and read
	// index requests. Anything sent by a node whose term or vote is
	// still changing waits, as do acknowledgements and votes.
	durable := hs.Term == r.prevHS.Term && hs.Vote == r.prevHS.Vote
	leader := r.state == StateLeader
	nEarly := 0
	if durable {
		for i := range r.msgs {
			if sendableBeforePersist(r.msgs[i].Type, leader) {
				nEarly++
			}
		}
	}
	switch nEarly {
	case 0:
		rd.MessagesAfterPersist = r.msgs
	case len(r.msgs):
		rd.Messages = r.msgs
	default:
		for _, m := range r.msgs {
			if sendableBeforePersist(m.Type, leader) {
				rd.Messages = append(rd.Messages, m)
			} else {
				rd.MessagesAfterPersist = append(rd.MessagesAfterPersist, m)
			}
		}
	}
	r.msgs = nil
	rd.ReadStates = r.readStates
	r.readStates = nil
	r.outstanding = mark
	return rd
}

// Advance acknowledges the outstanding Ready: its entries, hard state and
// snapshot are durable and its committed entries applied. Calling Advance
// without an outstanding Ready is a programmer error and panics.
func (r *Core) Advance() {
	mark := r.outstanding
	if mark == nil {
		panic("raft: Advance without an outstanding Ready")
	}
	r.outstanding = nil
	if mark.snapIndex != 0 {
		r.log.stableSnapTo(mark.snapIndex)
	}
	if mark.lastIndex != 0 {
		// If the tail was replaced meanwhile, the term no longer matches
		// and nothing is marked stable; the new tail comes next Ready.
		r.log.stableTo(mark.lastIndex, mark.lastTerm)
	}
	if mark.hs != (HardState{}) {
		r.prevHS = mark.hs
	}
	if mark.applying > r.log.applied {
		r.log.applied = mark.applying
	}
	// Membership changes take effect when applied (as in etcd-io/raft);
	// one change at a time is enforced with pendingConfIndex.
	for _, e := range mark.confEntries {
		r.applyConfEntry(e)
	}
	if r.state == StateLeader {
		r.selfAck()
		r.maybeAutoLeave()
		r.maybeRestore()
	}
}

// applyConfEntry applies a committed EntryConfChange. Malformed or
// disallowed changes are skipped identically on every node.
func (r *Core) applyConfEntry(e Entry) {
	if e.Index <= r.confIndex {
		return // superseded by a snapshot restored meanwhile
	}
	r.confIndex = e.Index
	cc, err := UnmarshalConfChange(e.Data)
	if err != nil {
		return
	}
	n, err := nextConfig(r.trk.Config, cc)
	if err != nil {
		return
	}
	r.switchConfig(n)
	r.appliedLogConf()
	if r.state != StateLeader {
		return
	}
	if !r.trk.Voters.Contains(r.id) {
		// §4.2.2: a leader removed from the configuration steps down
		// once the change is committed.
		r.becomeFollower(r.term, 0)
		return
	}
	if p := r.trk.Progress[r.leadTransferee]; p == nil || p.IsLearner {
		r.leadTransferee = 0
	}
	// The quorum changed (commit may advance) and new members must
	// hear from us promptly.
	r.maybeCommit()
	r.bcastAppend()
}

// maybeAutoLeave proposes leaving a joint configuration that asked to be
// left automatically, once its entering entry is applied.
func (r *Core) maybeAutoLeave() {
	if r.trk.Joint() && r.trk.AutoLeave && r.pendingConfIndex <= r.log.applied {
		_ = r.proposeConfChange(ConfChange{})
	}
}
