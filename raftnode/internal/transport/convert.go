package transport

import (
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// Conversion between raft.Message and schema.Message, field for field:
// the wire carries the core's messages as the core produced them, so
// nothing here knows which message answers which.
//
// What the wire does not keep: empty slices (entries, context,
// configuration lists) come back as nil.
//
// A MsgSnap never travels as a message: the leader's asks the transport
// to stream the snapshot (snapshot_send.go), and the follower's core is
// handed one only by the receiver, once the data is on disk
// (snapshot_recv.go). A snap on a message stream is refused: it would
// make the core install a snapshot whose data never arrived.

// errSnapOnStream refuses a MsgSnap on a message stream.
var errSnapOnStream = errors.New("a snapshot travels on a snapshot stream (installSnapshot), never as a message")

// Lane is one of the two streams a node keeps to each peer.
type Lane uint8

const (
	// LaneControl carries elections and leadership (heartbeats, votes,
	// TimeoutNow, ReadIndex) and every response: small messages that
	// must never wait behind replication.
	LaneControl Lane = iota
	// LaneData carries replication: appends. (Snapshots stream on a
	// connection of their own: snapshot_send.go.)
	LaneData
	numLanes
)

func (l Lane) String() string {
	if l == LaneData {
		return "data"
	}
	return "control"
}

// LaneOf is the lane a message of type t travels on.
func LaneOf(t raft.MessageType) Lane {
	switch t {
	case raft.MsgApp:
		return LaneData
	}
	return LaneControl
}

func (l Lane) wire() schema.Lane {
	if l == LaneData {
		return schema.Lane_data
	}
	return schema.Lane_control
}

// wireTypes maps raft.MessageType to the schema's enum (same order).
var wireTypes = [...]schema.MessageType{
	raft.MsgVote:          schema.MessageType_vote,
	raft.MsgVoteResp:      schema.MessageType_voteResp,
	raft.MsgApp:           schema.MessageType_app,
	raft.MsgAppResp:       schema.MessageType_appResp,
	raft.MsgHeartbeat:     schema.MessageType_heartbeat,
	raft.MsgHeartbeatResp: schema.MessageType_heartbeatResp,
	raft.MsgSnap:          schema.MessageType_snap,
	raft.MsgTimeoutNow:    schema.MessageType_timeoutNow,
	raft.MsgReadIndex:     schema.MessageType_readIndex,
	raft.MsgReadIndexResp: schema.MessageType_readIndexResp,
}

// raftTypes is the inverse of wireTypes.
var raftTypes = func() map[schema.MessageType]raft.MessageType {
	m := make(map[schema.MessageType]raft.MessageType, len(wireTypes))
	for t, w := range wireTypes {
		if t != 0 {
			m[w] = raft.MessageType(t)
		}
	}
	return m
}()

func wireType(t raft.MessageType) (schema.MessageType, bool) {
	if t == 0 || int(t) >= len(wireTypes) {
		return 0, false
	}
	return wireTypes[t], true
}

// header identifies one sender (and the incarnation of its storage) and
// one receiver in one cluster.
type header struct {
	cluster, from, to, inc uint64
}

func setHeader(h schema.PeerHeader, hd header) {
	h.SetClusterId(hd.cluster)
	h.SetFrom(hd.from)
	h.SetTo(hd.to)
	h.SetIncarnation(hd.inc)
}

// readHeader reads and checks a header against the receiver's cluster
// and id.
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

// validateOutgoing catches what the encoder would fail on, so that a bad
// message is dropped rather than failing the stream.
func validateOutgoing(m *raft.Message) error {
	if _, ok := wireType(m.Type); !ok {
		return fmt.Errorf("unknown message type %d", m.Type)
	}
	if m.Type == raft.MsgSnap {
		return errSnapOnStream
	}
	if m.Type == raft.MsgHeartbeat && len(m.Entries) > 0 {
		return errors.New("heartbeat with entries")
	}
	if len(m.Entries) > 1<<29 {
		return fmt.Errorf("%d entries in one message", len(m.Entries))
	}
	for i := range m.Entries {
		if t := m.Entries[i].Type; t != raft.EntryNormal && t != raft.EntryConfChange {
			return fmt.Errorf("entry %d has unknown type %d", m.Entries[i].Index, t)
		}
	}
	return nil
}

// encodeMessage fills w with m (validated by validateOutgoing).
func encodeMessage(w schema.Message, m *raft.Message) error {
	t, ok := wireType(m.Type)
	if !ok {
		return fmt.Errorf("unknown message type %d", m.Type)
	}
	w.SetType(t)
	w.SetFrom(m.From)
	w.SetTo(m.To)
	w.SetTerm(m.Term)
	w.SetIncarnation(m.Incarnation)
	w.SetToIncarnation(m.ToIncarnation)
	w.SetLastLogIndex(m.LastLogIndex)
	w.SetLastLogTerm(m.LastLogTerm)
	w.SetPreVote(m.PreVote)
	w.SetTransfer(m.Transfer)
	w.SetGranted(m.Granted)
	w.SetIndex(m.Index)
	w.SetLogTerm(m.LogTerm)
	w.SetCommit(m.Commit)
	w.SetReject(m.Reject)
	w.SetConflictIndex(m.ConflictIndex)
	w.SetConflictTerm(m.ConflictTerm)
	w.SetLastIndex(m.LastIndex)
	w.SetSeq(m.Seq)
	if len(m.Entries) > 0 {
		if err := encodeEntries(w, m.Entries); err != nil {
			return err
		}
	}
	if len(m.Context) > 0 {
		return w.SetContext(m.Context)
	}
	return nil
}

func encodeEntries(w schema.Message, ents []raft.Entry) error {
	list, err := w.NewEntries(int32(len(ents)))
	if err != nil {
		return err
	}
	for i := range ents {
		e := &ents[i]
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

// encodeSnapshotMeta fills s with meta.
func encodeSnapshotMeta(s schema.SnapshotMeta, meta *raft.SnapshotMeta) error {
	s.SetIndex(meta.Index)
	s.SetTerm(meta.Term)
	cs := &meta.ConfState
	if len(cs.Voters)+len(cs.Learners)+len(cs.VotersOutgoing)+len(cs.LearnersNext)+len(cs.AutoPromote)+len(cs.Incarnations) == 0 && !cs.AutoLeave {
		return nil
	}
	c, err := s.NewConfState()
	if err != nil {
		return err
	}
	return encodeConfState(c, cs)
}

func setUint64s(l capnp.UInt64List, v []uint64) {
	for i, x := range v {
		l.Set(i, x)
	}
}

func encodeConfState(c schema.ConfState, cs *raft.ConfState) error {
	c.SetAutoLeave(cs.AutoLeave)
	lists := []struct {
		v   []uint64
		new func(int32) (capnp.UInt64List, error)
	}{
		{cs.Voters, c.NewVoters},
		{cs.Learners, c.NewLearners},
		{cs.VotersOutgoing, c.NewVotersOutgoing},
		{cs.LearnersNext, c.NewLearnersNext},
		{cs.AutoPromote, c.NewAutoPromote},
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

// decodeSnapshotMeta reads a snapshot's metadata.
func decodeSnapshotMeta(s schema.SnapshotMeta) (raft.SnapshotMeta, error) {
	meta := raft.SnapshotMeta{Index: s.Index(), Term: s.Term()}
	if s.HasConfState() {
		c, err := s.ConfState()
		if err != nil {
			return meta, fmt.Errorf("read snapshot configuration: %w", err)
		}
		if meta.ConfState, err = decodeConfState(c); err != nil {
			return meta, err
		}
	}
	return meta, nil
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

// decoder turns the messages of one send call into raft.Messages. Byte
// fields alias the call's arguments, which are released when the call
// returns, while the driver keeps the messages: decode reads every
// message with its bytes still aliased and finish copies them all into
// one buffer, one allocation per call.
type decoder struct {
	msgs  []raft.Message
	bytes int
}

// decode appends the message read from w, checked against the stream's
// header.
func (d *decoder) decode(w schema.Message, hd header) error {
	t, ok := raftTypes[w.Type()]
	if !ok {
		return fmt.Errorf("refused: unknown message type %d", w.Type())
	}
	m := raft.Message{
		Type: t, From: w.From(), To: w.To(), Term: w.Term(),
		Incarnation: w.Incarnation(), ToIncarnation: w.ToIncarnation(),
		LastLogIndex: w.LastLogIndex(), LastLogTerm: w.LastLogTerm(),
		PreVote: w.PreVote(), Transfer: w.Transfer(), Granted: w.Granted(),
		Index: w.Index(), LogTerm: w.LogTerm(), Commit: w.Commit(), Reject: w.Reject(),
		ConflictIndex: w.ConflictIndex(), ConflictTerm: w.ConflictTerm(), LastIndex: w.LastIndex(),
		Seq: w.Seq(),
	}
	switch {
	case t == raft.MsgSnap:
		return fmt.Errorf("refused: %w", errSnapOnStream)
	case m.From != hd.from:
		return fmt.Errorf("refused: %s from node %d on node %d's stream", t, m.From, hd.from)
	case m.To != hd.to:
		return fmt.Errorf("refused: %s for node %d on a stream to node %d", t, m.To, hd.to)
	case m.Incarnation != hd.inc:
		return fmt.Errorf("refused: %s from storage incarnation %016x on a stream opened by incarnation %016x", t, m.Incarnation, hd.inc)
	}
	if w.HasEntries() {
		if err := d.decodeEntries(w, &m); err != nil {
			return err
		}
	}
	var err error
	if m.Context, err = w.Context(); err != nil {
		return fmt.Errorf("read context: %w", err)
	}
	d.bytes += len(m.Context)
	d.msgs = append(d.msgs, m)
	return nil
}

// maxEntriesPrealloc bounds the room made for an append's entries before
// they are read (a sender batches at most a few hundred kilobytes).
const maxEntriesPrealloc = 1024

func (d *decoder) decodeEntries(w schema.Message, m *raft.Message) error {
	list, err := w.Entries()
	if err != nil {
		return fmt.Errorf("read entries: %w", err)
	}
	n := list.Len()
	if n == 0 {
		return nil
	}
	if m.Type != raft.MsgApp {
		return fmt.Errorf("refused: %s with entries (only an append carries entries)", m.Type)
	}
	// Grown as entries prove themselves, never sized from the wire's
	// count alone: a list of empty structs costs its sender nothing per
	// element, and would otherwise make this node allocate gigabytes.
	m.Entries = make([]raft.Entry, 0, min(n, maxEntriesPrealloc))
	for i := 0; i < n; i++ {
		le := list.At(i)
		m.Entries = append(m.Entries, raft.Entry{Index: le.Index(), Term: le.Term()})
		e := &m.Entries[i]
		// An append's entries follow the entry it names (Index) one by
		// one; anything else is not an append any leader sends.
		if e.Index != m.Index+1+uint64(i) {
			return fmt.Errorf("refused: append after index %d has entry %d at position %d", m.Index, e.Index, i)
		}
		switch le.Type() {
		case schema.EntryType_normal:
			e.Type = raft.EntryNormal
		case schema.EntryType_confChange:
			e.Type = raft.EntryConfChange
		default:
			return fmt.Errorf("refused: entry %d has unknown type %d", e.Index, le.Type())
		}
		if e.Data, err = le.Data(); err != nil {
			return fmt.Errorf("read entry %d: %w", i, err)
		}
		d.bytes += len(e.Data)
	}
	return nil
}

// finish copies every byte field out of the call's arguments and returns
// the messages.
func (d *decoder) finish() []raft.Message {
	buf := make([]byte, 0, d.bytes)
	keep := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	for i := range d.msgs {
		m := &d.msgs[i]
		m.Context = keep(m.Context)
		for j := range m.Entries {
			m.Entries[j].Data = keep(m.Entries[j].Data)
		}
	}
	return d.msgs
}
