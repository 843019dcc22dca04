package raft

// ReadState is a confirmed read index: once the application has applied
// through Index, a read identified by RequestCtx may be served locally
// and is linearizable (thesis §6.4).
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// readRequest is a read waiting for its heartbeat round.
type readRequest struct {
	seq   uint64
	index uint64
	from  uint64
	ctx   []byte
}

// readOnly is the leader's ReadIndex bookkeeping. Every read gets a new
// round number (seq); heartbeats carry the latest round and followers
// echo it. A read of round s is confirmed once a quorum has echoed a
// round >= s, because each echo proves the follower still accepted us as
// leader after the read arrived.
type readOnly struct {
	seq     uint64
	acks    map[uint64]uint64
	pending []readRequest
	// waiting holds reads that arrived before the leader committed an
	// entry of its term: until then its commit index may be stale.
	waiting []readRequest
}

func (ro *readOnly) reset() {
	ro.seq = 0
	clear(ro.acks)
	ro.pending = ro.pending[:0]
	ro.waiting = ro.waiting[:0]
}

func (ro *readOnly) ack(from, seq uint64) {
	if ro.acks == nil {
		ro.acks = map[uint64]uint64{}
	}
	if seq > ro.acks[from] {
		ro.acks[from] = seq
	}
}

// readAcks adapts the round acks to quorum.AckedIndexer; the leader
// itself has seen every round.
type readAcks struct {
	self uint64
	ro   *readOnly
}

// AckedIndex implements quorum.AckedIndexer.
func (a readAcks) AckedIndex(id uint64) (uint64, bool) {
	if id == a.self {
		return a.ro.seq, true
	}
	s, ok := a.ro.acks[id]
	return s, ok
}

// ReadIndex requests a linearizable read identified by ctx (which should
// be unique). The answer arrives as a ReadState in a later Ready. On a
// follower the request is forwarded to the leader. A request can be lost
// (leader change, dropped message); the application retries after a
// timeout of its choosing.
func (r *Core) ReadIndex(ctx []byte) error {
	if r.state == StateLeader {
		r.leaderRead(r.id, ctx)
		return nil
	}
	if r.lead == 0 {
		return ErrNoLeader
	}
	r.send(Message{To: r.lead, Type: MsgReadIndex, Context: ctx})
	return nil
}

// leaderRead implements ReadIndex on the leader (§6.4).
func (r *Core) leaderRead(from uint64, ctx []byte) {
	req := readRequest{from: from, ctx: ctx}
	if r.log.termOr0(r.log.committed) != r.term {
		// Step 1 of §6.4: our commit index is only known to be current
		// once an entry of our term (the no-op) is committed.
		r.reads.waiting = append(r.reads.waiting, req)
		return
	}
	req.index = r.log.committed
	if r.trk.IsSingleton() && r.trk.Voters.Contains(r.id) && r.logConf == nil {
		r.answerRead(req)
		return
	}
	if r.cfg.ReadOnlyOption == ReadOnlyLeaseBased || r.cfg.bugs.readWithoutQuorum {
		// Lease read (§6.4.1): check-quorum guarantees we step down
		// within an election timeout of losing the quorum, and sticky
		// followers refuse votes that long. Clock-dependent by design.
		r.answerRead(req)
		return
	}
	r.reads.seq++
	req.seq = r.reads.seq
	r.reads.pending = append(r.reads.pending, req)
	r.bcastHeartbeat()
}

func (r *Core) answerRead(req readRequest) {
	if req.from == r.id {
		r.readStates = append(r.readStates, ReadState{Index: req.index, RequestCtx: req.ctx})
		return
	}
	r.send(Message{To: req.from, Type: MsgReadIndexResp, Index: req.index, Context: req.ctx})
}

// advanceReads answers every read whose round a quorum has confirmed.
func (r *Core) advanceReads() {
	if len(r.reads.pending) == 0 {
		return
	}
	confirmed := r.trk.Voters.CommittedIndex(readAcks{self: r.id, ro: &r.reads})
	if r.logConf != nil {
		// A leader elected by the newer configuration could exist
		// unless a majority of it still follows us too.
		confirmed = min(confirmed, r.logConf.cfg.Voters.CommittedIndex(readAcks{self: r.id, ro: &r.reads}))
	}
	n := 0
	for _, req := range r.reads.pending {
		if req.seq > confirmed {
			break
		}
		r.answerRead(req)
		n++
	}
	r.reads.pending = append(r.reads.pending[:0], r.reads.pending[n:]...)
}

// releaseWaitingReads starts the reads that waited for the first commit
// of the term.
func (r *Core) releaseWaitingReads() {
	if len(r.reads.waiting) == 0 || r.log.termOr0(r.log.committed) != r.term {
		return
	}
	w := r.reads.waiting
	r.reads.waiting = nil
	for _, req := range w {
		r.leaderRead(req.from, req.ctx)
	}
}
