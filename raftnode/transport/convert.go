package transport

import (
	"errors"
	"fmt"
	"math"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// Conversion between raft.Message and the structs of schema/raft.capnp.
//
// Requests (sender side encodes, receiver decodes):
//
//	MsgVote       <-> RequestVote.requestVote(VoteRequest)
//	MsgApp        <-> AppendEntries.appendEntries(AppendRequest, heartbeat=false)
//	MsgHeartbeat  <-> AppendEntries.appendEntries(AppendRequest, heartbeat=true)
//	MsgSnap       <-> InstallSnapshot.installSnapshot(SnapshotChunk)
//	MsgTimeoutNow <-> TimeoutNow.timeoutNow(TimeoutNowRequest)
//	MsgReadIndex  <-> ReadIndex.readIndex(ReadIndexRequest)
//
// Responses (receiver encodes the message its core produced, sender decodes
// it knowing which request it answers):
//
//	VoteResponse      -> MsgVoteResp
//	AppendResponse    -> MsgAppResp (to MsgApp) or MsgHeartbeatResp (to MsgHeartbeat)
//	SnapshotResponse  -> MsgSnapResp (installed=false; Snapshot{Index,Term} taken from the request)
//	                     or MsgAppResp{Index: index} (installed=true)
//	ReadIndexResponse -> MsgReadIndexResp
//
// A response whose term is 0 means "no response".
//
// What the wire does not carry: SnapshotChunk.totalSize has no Message
// field, so it is sent as 0 (unknown). Empty slices (entries, data,
// context, configuration lists) come back as nil. SnapshotChunk.checksum
// is a UInt64 on the wire holding Message.Checksum, a CRC-32C; a chunk
// whose checksum does not fit 32 bits is refused.

// errNoSnapshot: a MsgSnap without metadata cannot be encoded.
var errNoSnapshot = errors.New("MsgSnap without snapshot metadata")

// Carries reports whether the RPC used for a request of type req can carry
// resp back as its return value. The driver uses it to match the messages
// its core produces to the inbound calls waiting for an answer:
//
//	request        carries
//	MsgVote        MsgVoteResp
//	MsgApp         MsgAppResp
//	MsgHeartbeat   MsgHeartbeatResp
//	MsgSnap        MsgSnapResp, or MsgAppResp that is not a rejection (snapshot installed or already covered)
//	MsgReadIndex   MsgReadIndexResp
//	MsgTimeoutNow  nothing (the call has no result)
//	anything else  nothing (responses are not requests)
func Carries(req raft.MessageType, resp raft.Message) bool {
	switch req {
	case raft.MsgVote:
		return resp.Type == raft.MsgVoteResp
	case raft.MsgApp:
		return resp.Type == raft.MsgAppResp
	case raft.MsgHeartbeat:
		return resp.Type == raft.MsgHeartbeatResp
	case raft.MsgSnap:
		return resp.Type == raft.MsgSnapResp || (resp.Type == raft.MsgAppResp && !resp.Reject)
	case raft.MsgReadIndex:
		return resp.Type == raft.MsgReadIndexResp
	}
	return false
}

// isRequest reports whether t is sent as a call (rather than returned).
func isRequest(t raft.MessageType) bool {
	switch t {
	case raft.MsgVote, raft.MsgApp, raft.MsgHeartbeat, raft.MsgSnap, raft.MsgTimeoutNow, raft.MsgReadIndex:
		return true
	}
	return false
}

// header identifies one sender (and the incarnation of its storage) and
// one receiver in one cluster.
type header struct {
	cluster, from, to, inc uint64
}

// newRequest allocates a request struct and fills its header.
func newRequest[R interface {
	NewHeader() (schema.PeerHeader, error)
}](alloc func() (R, error), hd header) (R, error) {
	r, err := alloc()
	if err != nil {
		return r, err
	}
	h, err := r.NewHeader()
	if err != nil {
		return r, err
	}
	setHeader(h, hd)
	return r, nil
}

func setHeader(h schema.PeerHeader, hd header) {
	h.SetClusterId(hd.cluster)
	h.SetFrom(hd.from)
	h.SetTo(hd.to)
	h.SetIncarnation(hd.inc)
}

// --- requests: encode (sender) ---

func encodeVote(p schema.RequestVote_requestVote_Params, hd header, m raft.Message) error {
	r, err := newRequest(p.NewReq, hd)
	if err != nil {
		return err
	}
	r.SetTerm(m.Term)
	r.SetCandidateId(m.From)
	r.SetLastLogIndex(m.LastLogIndex)
	r.SetLastLogTerm(m.LastLogTerm)
	r.SetPreVote(m.PreVote)
	r.SetLeaderTransfer(m.Transfer)
	return nil
}

func encodeAppend(p schema.AppendEntries_appendEntries_Params, hd header, m raft.Message) error {
	r, err := newRequest(p.NewReq, hd)
	if err != nil {
		return err
	}
	r.SetTerm(m.Term)
	r.SetLeaderId(m.From)
	r.SetPrevLogIndex(m.Index)
	r.SetPrevLogTerm(m.LogTerm)
	r.SetLeaderCommit(m.Commit)
	r.SetHeartbeat(m.Type == raft.MsgHeartbeat)
	r.SetSeq(m.Seq)
	r.SetToIncarnation(m.ToIncarnation)
	if len(m.Entries) == 0 {
		return nil
	}
	if len(m.Entries) > 1<<29 {
		return fmt.Errorf("%d entries in one message", len(m.Entries))
	}
	list, err := r.NewEntries(int32(len(m.Entries)))
	if err != nil {
		return err
	}
	for i, e := range m.Entries {
		le := list.At(i)
		le.SetIndex(e.Index)
		le.SetTerm(e.Term)
		switch e.Type {
		case raft.EntryNormal:
			le.SetType(schema.EntryType_normal)
		case raft.EntryConfChange:
			le.SetType(schema.EntryType_confChange)
		default:
			return fmt.Errorf("entry %d has unknown type %d", e.Index, e.Type)
		}
		if len(e.Data) > 0 {
			if err := le.SetData(e.Data); err != nil {
				return err
			}
		}
	}
	return nil
}

func setUint64s(l capnp.UInt64List, v []uint64) {
	for i, x := range v {
		l.Set(i, x)
	}
}

func encodeConfState(r schema.SnapshotChunk, cs raft.ConfState) error {
	c, err := r.NewConfState()
	if err != nil {
		return err
	}
	c.SetAutoLeave(cs.AutoLeave)
	lists := []struct {
		v   []uint64
		new func(int32) (capnp.UInt64List, error)
	}{
		{cs.Voters, c.NewVoters},
		{cs.Learners, c.NewLearners},
		{cs.VotersOutgoing, c.NewVotersOutgoing},
		{cs.LearnersNext, c.NewLearnersNext},
	}
	for _, x := range lists {
		if len(x.v) == 0 {
			continue
		}
		l, err := x.new(int32(len(x.v)))
		if err != nil {
			return err
		}
		setUint64s(l, x.v)
	}
	if len(cs.AutoPromote) > 0 {
		l, err := c.NewAutoPromote(int32(len(cs.AutoPromote)))
		if err != nil {
			return err
		}
		setUint64s(l, cs.AutoPromote)
	}
	return setIncarnations(c.NewIncarnations, cs.Incarnations)
}

// setIncarnations allocates a list with newList and fills it with incs
// (nothing for none).
func setIncarnations(newList func(int32) (schema.MemberIncarnation_List, error), incs []raft.MemberIncarnation) error {
	if len(incs) == 0 {
		return nil
	}
	l, err := newList(int32(len(incs)))
	if err != nil {
		return err
	}
	for i, mi := range incs {
		e := l.At(i)
		e.SetId(mi.ID)
		e.SetIncarnation(mi.Incarnation)
	}
	return nil
}

// readIncarnations reads a list of member incarnations.
func readIncarnations(l schema.MemberIncarnation_List, err error) ([]raft.MemberIncarnation, error) {
	if err != nil || l.Len() == 0 {
		return nil, err
	}
	incs := make([]raft.MemberIncarnation, l.Len())
	for i := range incs {
		e := l.At(i)
		incs[i] = raft.MemberIncarnation{ID: e.Id(), Incarnation: e.Incarnation()}
	}
	return incs, nil
}

func encodeSnap(p schema.InstallSnapshot_installSnapshot_Params, hd header, m raft.Message) error {
	if m.Snapshot == nil {
		return errNoSnapshot
	}
	r, err := newRequest(p.NewReq, hd)
	if err != nil {
		return err
	}
	r.SetTerm(m.Term)
	r.SetLeaderId(m.From)
	r.SetLastIncludedIndex(m.Snapshot.Index)
	r.SetLastIncludedTerm(m.Snapshot.Term)
	if err := encodeConfState(r, m.Snapshot.ConfState); err != nil {
		return err
	}
	r.SetOffset(m.Offset)
	r.SetDone(m.Done)
	r.SetChecksum(uint64(m.Checksum))
	if len(m.Data) > 0 {
		return r.SetData(m.Data)
	}
	return nil
}

func encodeTimeoutNow(p schema.TimeoutNow_timeoutNow_Params, hd header, m raft.Message) error {
	r, err := newRequest(p.NewReq, hd)
	if err != nil {
		return err
	}
	r.SetTerm(m.Term)
	r.SetLeaderId(m.From)
	return nil
}

func encodeReadIndex(p schema.ReadIndex_readIndex_Params, hd header, m raft.Message) error {
	r, err := newRequest(p.NewReq, hd)
	if err != nil {
		return err
	}
	r.SetTerm(m.Term)
	if len(m.Context) > 0 {
		return r.SetContext(m.Context)
	}
	return nil
}

// --- requests: decode and validate (receiver) ---

// readHeader reads and checks a request's header against the receiver's
// cluster and id.
func readHeader(h schema.PeerHeader, err error, cluster, local uint64) (header, error) {
	if err != nil {
		return header{}, fmt.Errorf("read peer header: %w", err)
	}
	hd := header{cluster: h.ClusterId(), from: h.From(), to: h.To(), inc: h.Incarnation()}
	switch {
	case hd.cluster != cluster:
		return hd, fmt.Errorf("refused: message for cluster %d, this node is in cluster %d", hd.cluster, cluster)
	case hd.to != local:
		return hd, fmt.Errorf("refused: message for node %d reached node %d", hd.to, local)
	case hd.from == 0 || hd.from == local:
		return hd, fmt.Errorf("refused: invalid sender id %d", hd.from)
	}
	return hd, nil
}

// cloneBytes copies b (which aliases a message) or returns nil when empty.
func cloneBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func decodeVote(p schema.RequestVote_requestVote_Params, cluster, local uint64) (raft.Message, error) {
	r, err := p.Req()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read VoteRequest: %w", err)
	}
	h, err := r.Header()
	hd, err := readHeader(h, err, cluster, local)
	if err != nil {
		return raft.Message{}, err
	}
	if r.CandidateId() != hd.from {
		return raft.Message{}, fmt.Errorf("refused: vote request from %d names candidate %d", hd.from, r.CandidateId())
	}
	return raft.Message{
		Type: raft.MsgVote, From: hd.from, To: hd.to, Term: r.Term(), Incarnation: hd.inc,
		LastLogIndex: r.LastLogIndex(), LastLogTerm: r.LastLogTerm(),
		PreVote: r.PreVote(), Transfer: r.LeaderTransfer(),
	}, nil
}

func decodeAppend(p schema.AppendEntries_appendEntries_Params, cluster, local uint64) (raft.Message, error) {
	r, err := p.Req()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read AppendRequest: %w", err)
	}
	h, err := r.Header()
	hd, err := readHeader(h, err, cluster, local)
	if err != nil {
		return raft.Message{}, err
	}
	if r.LeaderId() != hd.from {
		return raft.Message{}, fmt.Errorf("refused: append from %d names leader %d", hd.from, r.LeaderId())
	}
	m := raft.Message{
		Type: raft.MsgApp, From: hd.from, To: hd.to, Term: r.Term(), Incarnation: hd.inc,
		Index: r.PrevLogIndex(), LogTerm: r.PrevLogTerm(), Commit: r.LeaderCommit(), Seq: r.Seq(),
		ToIncarnation: r.ToIncarnation(),
	}
	if r.Heartbeat() {
		m.Type = raft.MsgHeartbeat
	}
	if !r.HasEntries() {
		return m, nil
	}
	list, err := r.Entries()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read entries: %w", err)
	}
	n := list.Len()
	if n == 0 {
		return m, nil
	}
	if m.Type == raft.MsgHeartbeat {
		return raft.Message{}, errors.New("refused: heartbeat with entries")
	}
	// One pass reads the entries (their data still aliasing the message),
	// a second copies all the data into one buffer: the message is only
	// valid until the handler returns, and the driver keeps the entries.
	m.Entries = make([]raft.Entry, n)
	total := 0
	for i := 0; i < n; i++ {
		le := list.At(i)
		e := &m.Entries[i]
		e.Index, e.Term = le.Index(), le.Term()
		switch le.Type() {
		case schema.EntryType_normal:
			e.Type = raft.EntryNormal
		case schema.EntryType_confChange:
			e.Type = raft.EntryConfChange
		default:
			return raft.Message{}, fmt.Errorf("refused: entry %d has unknown type %d", e.Index, le.Type())
		}
		d, err := le.Data()
		if err != nil {
			return raft.Message{}, fmt.Errorf("read entry %d: %w", i, err)
		}
		e.Data = d
		total += len(d)
	}
	buf := make([]byte, 0, total)
	for i := range m.Entries {
		e := &m.Entries[i]
		if len(e.Data) == 0 {
			e.Data = nil
			continue
		}
		start := len(buf)
		buf = append(buf, e.Data...)
		e.Data = buf[start:len(buf):len(buf)]
	}
	return m, nil
}

func readUint64s(l capnp.UInt64List, err error) ([]uint64, error) {
	if err != nil {
		return nil, err
	}
	if l.Len() == 0 {
		return nil, nil
	}
	v := make([]uint64, l.Len())
	for i := range v {
		v[i] = l.At(i)
	}
	return v, nil
}

func decodeConfState(c schema.ConfState) (raft.ConfState, error) {
	var cs raft.ConfState
	var err error
	if cs.Voters, err = readUint64s(c.Voters()); err != nil {
		return cs, fmt.Errorf("read voters: %w", err)
	}
	if cs.Learners, err = readUint64s(c.Learners()); err != nil {
		return cs, fmt.Errorf("read learners: %w", err)
	}
	if cs.VotersOutgoing, err = readUint64s(c.VotersOutgoing()); err != nil {
		return cs, fmt.Errorf("read outgoing voters: %w", err)
	}
	if cs.LearnersNext, err = readUint64s(c.LearnersNext()); err != nil {
		return cs, fmt.Errorf("read next learners: %w", err)
	}
	if cs.AutoPromote, err = readUint64s(c.AutoPromote()); err != nil {
		return cs, fmt.Errorf("read restoring learners: %w", err)
	}
	if cs.Incarnations, err = readIncarnations(c.Incarnations()); err != nil {
		return cs, fmt.Errorf("read incarnations: %w", err)
	}
	cs.AutoLeave = c.AutoLeave()
	return cs, nil
}

func decodeSnap(p schema.InstallSnapshot_installSnapshot_Params, cluster, local uint64) (raft.Message, error) {
	r, err := p.Req()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read SnapshotChunk: %w", err)
	}
	h, err := r.Header()
	hd, err := readHeader(h, err, cluster, local)
	if err != nil {
		return raft.Message{}, err
	}
	if r.LeaderId() != hd.from {
		return raft.Message{}, fmt.Errorf("refused: snapshot from %d names leader %d", hd.from, r.LeaderId())
	}
	c, err := r.ConfState()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read snapshot configuration: %w", err)
	}
	cs, err := decodeConfState(c)
	if err != nil {
		return raft.Message{}, err
	}
	data, err := r.Data()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read snapshot data: %w", err)
	}
	sum := r.Checksum()
	if sum > math.MaxUint32 {
		return raft.Message{}, fmt.Errorf("refused: snapshot checksum %#x is not a CRC-32C", sum)
	}
	return raft.Message{
		Type: raft.MsgSnap, From: hd.from, To: hd.to, Term: r.Term(), Incarnation: hd.inc,
		Snapshot: &raft.SnapshotMeta{Index: r.LastIncludedIndex(), Term: r.LastIncludedTerm(), ConfState: cs},
		Offset:   r.Offset(), Data: cloneBytes(data), Done: r.Done(), Checksum: uint32(sum),
	}, nil
}

func decodeTimeoutNow(p schema.TimeoutNow_timeoutNow_Params, cluster, local uint64) (raft.Message, error) {
	r, err := p.Req()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read TimeoutNowRequest: %w", err)
	}
	h, err := r.Header()
	hd, err := readHeader(h, err, cluster, local)
	if err != nil {
		return raft.Message{}, err
	}
	if r.LeaderId() != hd.from {
		return raft.Message{}, fmt.Errorf("refused: timeoutNow from %d names leader %d", hd.from, r.LeaderId())
	}
	return raft.Message{Type: raft.MsgTimeoutNow, From: hd.from, To: hd.to, Term: r.Term(), Incarnation: hd.inc}, nil
}

func decodeReadIndex(p schema.ReadIndex_readIndex_Params, cluster, local uint64) (raft.Message, error) {
	r, err := p.Req()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read ReadIndexRequest: %w", err)
	}
	h, err := r.Header()
	hd, err := readHeader(h, err, cluster, local)
	if err != nil {
		return raft.Message{}, err
	}
	ctx, err := r.Context()
	if err != nil {
		return raft.Message{}, fmt.Errorf("read read-index context: %w", err)
	}
	return raft.Message{Type: raft.MsgReadIndex, From: hd.from, To: hd.to, Term: r.Term(), Incarnation: hd.inc, Context: cloneBytes(ctx)}, nil
}

// --- responses: encode (receiver) ---

func encodeVoteResp(res schema.RequestVote_requestVote_Results, m raft.Message, ok bool) error {
	r, err := res.NewResp()
	if err != nil || !ok {
		return err
	}
	r.SetTerm(m.Term)
	r.SetVoteGranted(m.Granted)
	r.SetPreVote(m.PreVote)
	r.SetIncarnation(m.Incarnation)
	return nil
}

func encodeAppendResp(res schema.AppendEntries_appendEntries_Results, m raft.Message, ok bool) error {
	r, err := res.NewResp()
	if err != nil || !ok {
		return err
	}
	r.SetTerm(m.Term)
	r.SetSuccess(!m.Reject)
	r.SetIndex(m.Index)
	r.SetLastIndex(m.LastIndex)
	r.SetConflictIndex(m.ConflictIndex)
	r.SetConflictTerm(m.ConflictTerm)
	r.SetSeq(m.Seq)
	r.SetIncarnation(m.Incarnation)
	return nil
}

func encodeSnapResp(res schema.InstallSnapshot_installSnapshot_Results, m raft.Message, ok bool) error {
	r, err := res.NewResp()
	if err != nil || !ok {
		return err
	}
	r.SetTerm(m.Term)
	r.SetIncarnation(m.Incarnation)
	if m.Type == raft.MsgAppResp {
		r.SetInstalled(true)
		r.SetIndex(m.Index)
		return nil
	}
	r.SetNextOffset(m.Offset)
	return nil
}

func encodeReadIndexResp(res schema.ReadIndex_readIndex_Results, m raft.Message, ok bool) error {
	r, err := res.NewResp()
	if err != nil || !ok {
		return err
	}
	r.SetTerm(m.Term)
	r.SetIndex(m.Index)
	r.SetIncarnation(m.Incarnation)
	if len(m.Context) > 0 {
		return r.SetContext(m.Context)
	}
	return nil
}

// --- responses: decode (sender) ---

// decodeResponse converts the results of the call that carried req. ok is
// false for a "no response" answer (term 0) and for TimeoutNow.
func decodeResponse(req raft.Message, results capnp.Struct) (m raft.Message, ok bool, err error) {
	m = raft.Message{From: req.To, To: req.From}
	switch req.Type {
	case raft.MsgVote:
		r, err := schema.RequestVote_requestVote_Results(results).Resp()
		if err != nil {
			return m, false, fmt.Errorf("read VoteResponse: %w", err)
		}
		m.Type, m.Term, m.Granted, m.PreVote = raft.MsgVoteResp, r.Term(), r.VoteGranted(), r.PreVote()
		m.Incarnation = r.Incarnation()
	case raft.MsgApp, raft.MsgHeartbeat:
		r, err := schema.AppendEntries_appendEntries_Results(results).Resp()
		if err != nil {
			return m, false, fmt.Errorf("read AppendResponse: %w", err)
		}
		m.Type = raft.MsgAppResp
		if req.Type == raft.MsgHeartbeat {
			m.Type = raft.MsgHeartbeatResp
		}
		m.Term, m.Reject, m.Index, m.LastIndex = r.Term(), !r.Success(), r.Index(), r.LastIndex()
		m.ConflictIndex, m.ConflictTerm, m.Seq = r.ConflictIndex(), r.ConflictTerm(), r.Seq()
		m.Incarnation = r.Incarnation()
	case raft.MsgSnap:
		r, err := schema.InstallSnapshot_installSnapshot_Results(results).Resp()
		if err != nil {
			return m, false, fmt.Errorf("read SnapshotResponse: %w", err)
		}
		m.Term, m.Incarnation = r.Term(), r.Incarnation()
		if r.Installed() {
			m.Type, m.Index = raft.MsgAppResp, r.Index()
		} else {
			m.Type, m.Offset = raft.MsgSnapResp, r.NextOffset()
			if req.Snapshot != nil {
				m.Snapshot = &raft.SnapshotMeta{Index: req.Snapshot.Index, Term: req.Snapshot.Term}
			}
		}
	case raft.MsgReadIndex:
		r, err := schema.ReadIndex_readIndex_Results(results).Resp()
		if err != nil {
			return m, false, fmt.Errorf("read ReadIndexResponse: %w", err)
		}
		ctx, err := r.Context()
		if err != nil {
			return m, false, fmt.Errorf("read read-index context: %w", err)
		}
		m.Type, m.Term, m.Index, m.Context = raft.MsgReadIndexResp, r.Term(), r.Index(), cloneBytes(ctx)
		m.Incarnation = r.Incarnation()
	default:
		return m, false, nil
	}
	return m, m.Term != 0, nil
}
