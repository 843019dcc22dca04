package transport

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

var requestTypes = []raft.MessageType{raft.MsgVote, raft.MsgApp, raft.MsgHeartbeat, raft.MsgSnap, raft.MsgTimeoutNow, raft.MsgReadIndex}

// randBytes returns nil, an empty slice, or random bytes.
func randBytes(rng *rand.Rand, maxLen int) []byte {
	switch rng.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, 1+rng.IntN(maxLen))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func randIDs(rng *rand.Rand) []uint64 {
	if rng.IntN(3) == 0 {
		return nil
	}
	v := make([]uint64, rng.IntN(6))
	for i := range v {
		v[i] = rng.Uint64()
	}
	return v
}

func randIncarnations(rng *rand.Rand) []raft.MemberIncarnation {
	var incs []raft.MemberIncarnation
	for _, id := range randIDs(rng) {
		incs = append(incs, raft.MemberIncarnation{ID: id, Incarnation: randU(rng)})
	}
	return incs
}

func randU(rng *rand.Rand) uint64 {
	switch rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return ^uint64(0)
	}
	return rng.Uint64N(1 << 40)
}

// randMessage fills every field of a message of type typ at random,
// including fields its wire form does not carry.
func randMessage(rng *rand.Rand, typ raft.MessageType) raft.Message {
	m := raft.Message{
		Type: typ, From: 1 + rng.Uint64N(1000), To: 1001 + rng.Uint64N(1000), Term: randU(rng), Incarnation: randU(rng), ToIncarnation: randU(rng),
		LastLogIndex: randU(rng), LastLogTerm: randU(rng), PreVote: rng.IntN(2) == 0, Transfer: rng.IntN(2) == 0,
		Granted: rng.IntN(2) == 0, Index: randU(rng), LogTerm: randU(rng), Commit: randU(rng),
		Reject: rng.IntN(2) == 0, ConflictIndex: randU(rng), ConflictTerm: randU(rng), LastIndex: randU(rng),
		Seq: randU(rng), Offset: randU(rng), Data: randBytes(rng, 300), Done: rng.IntN(2) == 0,
		Context: randBytes(rng, 40), Checksum: rng.Uint32(),
	}
	if typ != raft.MsgHeartbeat && rng.IntN(3) > 0 {
		n := rng.IntN(20)
		if rng.IntN(5) == 0 {
			m.Entries = []raft.Entry{}
		}
		for i := 0; i < n; i++ {
			m.Entries = append(m.Entries, raft.Entry{Index: randU(rng), Term: randU(rng), Type: raft.EntryType(rng.IntN(2)), Data: randBytes(rng, 100)})
		}
	}
	if typ == raft.MsgSnap || rng.IntN(2) == 0 {
		m.Snapshot = &raft.SnapshotMeta{Index: randU(rng), Term: randU(rng), ConfState: raft.ConfState{
			Voters: randIDs(rng), Learners: randIDs(rng), VotersOutgoing: randIDs(rng), LearnersNext: randIDs(rng), AutoLeave: rng.IntN(2) == 0,
			AutoPromote: randIDs(rng), Incarnations: randIncarnations(rng),
		}}
	}
	return m
}

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

func nilIfNone(v []uint64) []uint64 {
	if len(v) == 0 {
		return nil
	}
	return v
}

// wireRequest is what a receiver should decode from request m.
func wireRequest(m raft.Message) raft.Message {
	w := raft.Message{Type: m.Type, From: m.From, To: m.To, Term: m.Term, Incarnation: m.Incarnation}
	switch m.Type {
	case raft.MsgVote:
		w.LastLogIndex, w.LastLogTerm, w.PreVote, w.Transfer = m.LastLogIndex, m.LastLogTerm, m.PreVote, m.Transfer
	case raft.MsgApp, raft.MsgHeartbeat:
		w.Index, w.LogTerm, w.Commit, w.Seq, w.ToIncarnation = m.Index, m.LogTerm, m.Commit, m.Seq, m.ToIncarnation
		if len(m.Entries) > 0 {
			for _, e := range m.Entries {
				e.Data = nilIfEmpty(e.Data)
				w.Entries = append(w.Entries, e)
			}
		}
	case raft.MsgSnap:
		cs := m.Snapshot.ConfState
		w.Snapshot = &raft.SnapshotMeta{Index: m.Snapshot.Index, Term: m.Snapshot.Term, ConfState: raft.ConfState{
			Voters: nilIfNone(cs.Voters), Learners: nilIfNone(cs.Learners), VotersOutgoing: nilIfNone(cs.VotersOutgoing),
			LearnersNext: nilIfNone(cs.LearnersNext), AutoLeave: cs.AutoLeave,
			AutoPromote: nilIfNone(cs.AutoPromote), Incarnations: cs.Incarnations,
		}}
		w.Offset, w.Data, w.Done, w.Checksum = m.Offset, nilIfEmpty(m.Data), m.Done, m.Checksum
	case raft.MsgReadIndex:
		w.Context = nilIfEmpty(m.Context)
	}
	return w
}

// respTypeFor picks a response type the request's call carries.
func respTypeFor(rng *rand.Rand, req raft.MessageType) raft.MessageType {
	switch req {
	case raft.MsgVote:
		return raft.MsgVoteResp
	case raft.MsgApp:
		return raft.MsgAppResp
	case raft.MsgHeartbeat:
		return raft.MsgHeartbeatResp
	case raft.MsgSnap:
		if rng.IntN(2) == 0 {
			return raft.MsgSnapResp
		}
		return raft.MsgAppResp
	case raft.MsgReadIndex:
		return raft.MsgReadIndexResp
	}
	return 0
}

// wireResponse is what the sender of req should decode from response r.
func wireResponse(req, r raft.Message) (raft.Message, bool) {
	w := raft.Message{Type: r.Type, From: req.To, To: req.From, Term: r.Term, Incarnation: r.Incarnation}
	switch r.Type {
	case raft.MsgVoteResp:
		w.Granted, w.PreVote = r.Granted, r.PreVote
	case raft.MsgAppResp, raft.MsgHeartbeatResp:
		if req.Type == raft.MsgSnap {
			w.Index = r.Index
			break
		}
		w.Reject, w.Index, w.LastIndex, w.ConflictIndex, w.ConflictTerm, w.Seq = r.Reject, r.Index, r.LastIndex, r.ConflictIndex, r.ConflictTerm, r.Seq
	case raft.MsgSnapResp:
		w.Offset = r.Offset
		w.Snapshot = &raft.SnapshotMeta{Index: req.Snapshot.Index, Term: req.Snapshot.Term}
	case raft.MsgReadIndexResp:
		w.Index, w.Context = r.Index, nilIfEmpty(r.Context)
	}
	return w, r.Term != 0
}

// reread marshals msg and unmarshals it, as the wire would.
func reread(t *testing.T, msg *capnp.Message) capnp.Struct {
	t.Helper()
	b, err := msg.Marshal()
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	m2, err := capnp.Unmarshal(b)
	if err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	p, err := m2.Root()
	if err != nil {
		t.Fatalf("root: %v", err)
	}
	return p.Struct()
}

// encodeRequestMsg encodes m as its call's params in a fresh message.
func encodeRequestMsg(m raft.Message) (*capnp.Message, error) {
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	hd := header{cluster: testCluster, from: m.From, to: m.To, inc: m.Incarnation}
	var err error
	switch m.Type {
	case raft.MsgVote:
		p, _ := schema.NewRootRequestVote_requestVote_Params(seg)
		err = encodeVote(p, hd, m)
	case raft.MsgApp, raft.MsgHeartbeat:
		p, _ := schema.NewRootAppendEntries_appendEntries_Params(seg)
		err = encodeAppend(p, hd, m)
	case raft.MsgSnap:
		p, _ := schema.NewRootInstallSnapshot_installSnapshot_Params(seg)
		err = encodeSnap(p, hd, m)
	case raft.MsgTimeoutNow:
		p, _ := schema.NewRootTimeoutNow_timeoutNow_Params(seg)
		err = encodeTimeoutNow(p, hd, m)
	case raft.MsgReadIndex:
		p, _ := schema.NewRootReadIndex_readIndex_Params(seg)
		err = encodeReadIndex(p, hd, m)
	}
	return msg, err
}

// requestRoundTrip encodes m as its call's params and decodes them as the
// receiver (m.To) does.
func requestRoundTrip(t *testing.T, m raft.Message) (raft.Message, error) {
	t.Helper()
	msg, err := encodeRequestMsg(m)
	if err != nil {
		t.Fatalf("encode %v: %v", m, err)
	}
	return decodeRequest(m.Type, reread(t, msg), testCluster, m.To)
}

// decodeRequest decodes params s as the request kind of typ.
func decodeRequest(typ raft.MessageType, s capnp.Struct, cluster, local uint64) (raft.Message, error) {
	switch typ {
	case raft.MsgVote:
		return decodeVote(schema.RequestVote_requestVote_Params(s), cluster, local)
	case raft.MsgApp, raft.MsgHeartbeat:
		return decodeAppend(schema.AppendEntries_appendEntries_Params(s), cluster, local)
	case raft.MsgSnap:
		return decodeSnap(schema.InstallSnapshot_installSnapshot_Params(s), cluster, local)
	case raft.MsgTimeoutNow:
		return decodeTimeoutNow(schema.TimeoutNow_timeoutNow_Params(s), cluster, local)
	default:
		return decodeReadIndex(schema.ReadIndex_readIndex_Params(s), cluster, local)
	}
}

// responseRoundTrip encodes r as the results of req's call and decodes
// them as req's sender does.
func responseRoundTrip(t *testing.T, req, r raft.Message, ok bool) (raft.Message, bool) {
	t.Helper()
	msg, seg := capnp.NewSingleSegmentMessage(nil)
	var err error
	switch req.Type {
	case raft.MsgVote:
		res, _ := schema.NewRootRequestVote_requestVote_Results(seg)
		err = encodeVoteResp(res, r, ok)
	case raft.MsgApp, raft.MsgHeartbeat:
		res, _ := schema.NewRootAppendEntries_appendEntries_Results(seg)
		err = encodeAppendResp(res, r, ok)
	case raft.MsgSnap:
		res, _ := schema.NewRootInstallSnapshot_installSnapshot_Results(seg)
		err = encodeSnapResp(res, r, ok)
	case raft.MsgReadIndex:
		res, _ := schema.NewRootReadIndex_readIndex_Results(seg)
		err = encodeReadIndexResp(res, r, ok)
	}
	if err != nil {
		t.Fatalf("encode response %v: %v", r, err)
	}
	got, gotOK, err := decodeResponse(req, reread(t, msg))
	if err != nil {
		t.Fatalf("decode response to %v: %v", req.Type, err)
	}
	return got, gotOK
}

func TestConversionRoundTrip(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := 0; i < 3000; i++ {
		typ := requestTypes[rng.IntN(len(requestTypes))]
		m := randMessage(rng, typ)
		got, err := requestRoundTrip(t, m)
		if err != nil {
			t.Fatalf("case %d: decode %v: %v", i, m, err)
		}
		if want := wireRequest(m); !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d: request round trip\n got %#v\nwant %#v", i, got, want)
		}
		if typ == raft.MsgTimeoutNow {
			continue
		}
		r := randMessage(rng, respTypeFor(rng, typ))
		if r.Type == raft.MsgAppResp && typ == raft.MsgSnap {
			r.Reject = false
		}
		if !Carries(typ, r) {
			t.Fatalf("case %d: Carries(%v, %v) = false", i, typ, r.Type)
		}
		got, ok := responseRoundTrip(t, m, r, true)
		want, wantOK := wireResponse(m, r)
		if ok != wantOK || (ok && !reflect.DeepEqual(got, want)) {
			t.Fatalf("case %d: response round trip to %v (ok=%v, want %v)\n got %#v\nwant %#v", i, typ, ok, wantOK, got, want)
		}
		if _, ok := responseRoundTrip(t, m, r, false); ok {
			t.Fatalf("case %d: \"no response\" to %v decoded as a response", i, typ)
		}
	}
}

func TestDecodeRefusesWrongHeader(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	for _, typ := range requestTypes {
		m := randMessage(rng, typ)
		msg, err := encodeRequestMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		s := reread(t, msg)
		if _, err := decodeRequest(typ, s, testCluster, m.To); err != nil {
			t.Fatalf("%v: refused with the right header: %v", typ, err)
		}
		if _, err := decodeRequest(typ, s, testCluster+1, m.To); err == nil {
			t.Errorf("%v: accepted for the wrong cluster", typ)
		}
		if _, err := decodeRequest(typ, s, testCluster, m.To+1); err == nil {
			t.Errorf("%v: accepted for the wrong receiver", typ)
		}
		if _, err := decodeRequest(typ, s, testCluster, m.From); err == nil {
			t.Errorf("%v: accepted from itself", typ)
		}
	}
}

func TestCarries(t *testing.T) {
	all := []raft.MessageType{raft.MsgVote, raft.MsgVoteResp, raft.MsgApp, raft.MsgAppResp, raft.MsgHeartbeat,
		raft.MsgHeartbeatResp, raft.MsgSnap, raft.MsgSnapResp, raft.MsgTimeoutNow, raft.MsgReadIndex, raft.MsgReadIndexResp}
	type pair struct {
		req, resp raft.MessageType
		reject    bool
	}
	want := map[pair]bool{
		{raft.MsgVote, raft.MsgVoteResp, false}:           true,
		{raft.MsgVote, raft.MsgVoteResp, true}:            true,
		{raft.MsgApp, raft.MsgAppResp, false}:             true,
		{raft.MsgApp, raft.MsgAppResp, true}:              true,
		{raft.MsgHeartbeat, raft.MsgHeartbeatResp, false}: true,
		{raft.MsgHeartbeat, raft.MsgHeartbeatResp, true}:  true,
		{raft.MsgSnap, raft.MsgSnapResp, false}:           true,
		{raft.MsgSnap, raft.MsgSnapResp, true}:            true,
		{raft.MsgSnap, raft.MsgAppResp, false}:            true, // installed (or already covered)
		{raft.MsgReadIndex, raft.MsgReadIndexResp, false}: true,
		{raft.MsgReadIndex, raft.MsgReadIndexResp, true}:  true,
	}
	for _, req := range all {
		for _, resp := range all {
			for _, reject := range []bool{false, true} {
				got := Carries(req, raft.Message{Type: resp, Reject: reject})
				if got != want[pair{req, resp, reject}] {
					t.Errorf("Carries(%v, %v reject=%v) = %v", req, resp, reject, got)
				}
			}
		}
	}
}

// FuzzDecode feeds arbitrary Cap'n Proto messages to every decoder: none
// may panic, whatever the content.
func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, typ := range requestTypes {
		m := randMessage(rng, typ)
		msg, err := encodeRequestMsg(m)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := msg.Marshal()
		f.Add(b, m.To)
	}
	f.Fuzz(func(t *testing.T, b []byte, local uint64) {
		msg, err := capnp.Unmarshal(b)
		if err != nil {
			return
		}
		msg.TraverseLimit = 1 << 20
		root, err := msg.Root()
		if err != nil {
			return
		}
		s := root.Struct()
		for _, typ := range requestTypes {
			_, _ = decodeRequest(typ, s, testCluster, local)
			req := raft.Message{Type: typ, From: 1, To: 2, Snapshot: &raft.SnapshotMeta{Index: 1}}
			_, _, _ = decodeResponse(req, s)
		}
	})
}

// SnapshotChunk.checksum is a UInt64 on the wire but holds a CRC-32C: a
// chunk whose checksum does not fit 32 bits is refused, not truncated
// into one that might match.
func TestSnapshotChecksumWiderThanCRC32IsRefused(t *testing.T) {
	m := raft.Message{Type: raft.MsgSnap, From: 1, To: 2, Term: 3, Snapshot: &raft.SnapshotMeta{Index: 9, Term: 3}, Data: []byte("x"), Checksum: 0xdeadbeef}
	msg, err := encodeRequestMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	s := reread(t, msg)
	if got, err := decodeRequest(raft.MsgSnap, s, testCluster, 2); err != nil || got.Checksum != 0xdeadbeef {
		t.Fatalf("a CRC-32C checksum: decoded %08x, %v", got.Checksum, err)
	}
	req, err := schema.InstallSnapshot_installSnapshot_Params(s).Req()
	if err != nil {
		t.Fatal(err)
	}
	req.SetChecksum(1<<32 | 0xdeadbeef)
	if _, err := decodeRequest(raft.MsgSnap, s, testCluster, 2); err == nil {
		t.Fatal("a checksum wider than 32 bits was accepted")
	}
}
