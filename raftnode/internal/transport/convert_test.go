package transport

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// allTypes lists every message type that travels on a message stream,
// requests and responses (MsgSnap has a stream of its own).
var allTypes = []raft.MessageType{raft.MsgVote, raft.MsgVoteResp, raft.MsgApp, raft.MsgAppResp, raft.MsgHeartbeat,
	raft.MsgHeartbeatResp, raft.MsgTimeoutNow, raft.MsgReadIndex, raft.MsgReadIndexResp}

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
		Seq: randU(rng), Context: randBytes(rng, 40),
	}
	// Only an append carries entries, each following the one before,
	// from the entry its Index names (the decoder refuses anything else).
	if typ == raft.MsgApp && rng.IntN(3) > 0 {
		n := rng.IntN(20)
		if rng.IntN(5) == 0 {
			m.Entries = []raft.Entry{}
		}
		for i := 0; i < n; i++ {
			m.Entries = append(m.Entries, raft.Entry{Index: m.Index + 1 + uint64(i), Term: randU(rng), Type: raft.EntryType(rng.IntN(2)), Data: randBytes(rng, 100)})
		}
	}
	return m
}

// randSnapshotMeta fills every field of a snapshot's metadata at random.
func randSnapshotMeta(rng *rand.Rand) raft.SnapshotMeta {
	return raft.SnapshotMeta{Index: randU(rng), Term: randU(rng), ConfState: raft.ConfState{
		Voters: randIDs(rng), Learners: randIDs(rng), VotersOutgoing: randIDs(rng), LearnersNext: randIDs(rng), AutoLeave: rng.IntN(2) == 0,
		AutoPromote: randIDs(rng), Incarnations: randIncarnations(rng),
	}}
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

// onWire is what a receiver should decode from m: every field, with
// empty slices as nil.
func onWire(m raft.Message) raft.Message {
	w := m
	w.Context, w.Entries = nilIfEmpty(m.Context), nil
	for _, e := range m.Entries {
		e.Data = nilIfEmpty(e.Data)
		w.Entries = append(w.Entries, e)
	}
	return w
}

// metaOnWire is what a receiver should decode from meta: every field,
// with empty lists as nil.
func metaOnWire(meta raft.SnapshotMeta) raft.SnapshotMeta {
	cs := meta.ConfState
	w := raft.SnapshotMeta{Index: meta.Index, Term: meta.Term, ConfState: raft.ConfState{
		Voters: nilIfNone(cs.Voters), Learners: nilIfNone(cs.Learners), VotersOutgoing: nilIfNone(cs.VotersOutgoing),
		LearnersNext: nilIfNone(cs.LearnersNext), AutoLeave: cs.AutoLeave,
		AutoPromote: nilIfNone(cs.AutoPromote), Incarnations: cs.Incarnations,
	}}
	if len(w.ConfState.Incarnations) == 0 {
		w.ConfState.Incarnations = nil
	}
	return w
}

// encodeSend encodes msgs as a send call's params, in a message of its
// own, read back from its bytes as a receiver would.
func encodeSend(t testing.TB, msgs []raft.Message) schema.PeerStream_send_Params {
	t.Helper()
	_, seg := capnp.NewMultiSegmentMessage(nil)
	p, err := schema.NewRootPeerStream_send_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := p.NewMsgs(int32(len(msgs)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range msgs {
		if err := encodeMessage(list.At(i), &msgs[i]); err != nil {
			t.Fatalf("encode %v: %v", msgs[i], err)
		}
	}
	b, err := seg.Message().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	root, err := msg.Root()
	if err != nil {
		t.Fatal(err)
	}
	return schema.PeerStream_send_Params(root.Struct())
}

// decodeSend decodes a send call's params as a stream with header hd does.
func decodeSend(p schema.PeerStream_send_Params, hd header) ([]raft.Message, error) {
	st := &stream{hd: hd}
	return st.decode(p)
}

// Every field of every message type survives the wire, in a batch of
// many messages decoded into one buffer.
func TestEveryFieldOfEveryMessageTypeRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	for round := 0; round < 50; round++ {
		hd := header{cluster: testCluster, from: 1 + rng.Uint64N(100), to: 101 + rng.Uint64N(100), inc: randU(rng)}
		var msgs []raft.Message
		for range 1 + rng.IntN(30) {
			m := randMessage(rng, allTypes[rng.IntN(len(allTypes))])
			m.From, m.To, m.Incarnation = hd.from, hd.to, hd.inc
			if m.Type == raft.MsgHeartbeat {
				m.Entries = nil
			}
			msgs = append(msgs, m)
		}
		got, err := decodeSend(encodeSend(t, msgs), hd)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(got) != len(msgs) {
			t.Fatalf("round %d: %d messages decoded, %d sent", round, len(got), len(msgs))
		}
		for i := range msgs {
			if want := onWire(msgs[i]); !reflect.DeepEqual(got[i], want) {
				t.Fatalf("round %d, message %d:\n got %#v\nwant %#v", round, i, got[i], want)
			}
		}
	}
}

// A message that does not match its stream's header, or that the core
// could not take, fails the whole call: nothing of it is delivered.
func TestMessagesNotMatchingTheStreamAreRefused(t *testing.T) {
	hd := header{cluster: testCluster, from: 1, to: 2, inc: 7}
	good := raft.Message{Type: raft.MsgHeartbeat, From: 1, To: 2, Term: 3, Incarnation: 7}
	for _, tc := range []struct {
		name string
		bad  func(m *raft.Message)
	}{
		{"another sender", func(m *raft.Message) { m.From = 3 }},
		{"another receiver", func(m *raft.Message) { m.To = 3 }},
		{"another storage incarnation", func(m *raft.Message) { m.Incarnation = 8 }},
		// A snapshot has a stream of its own: a snap among messages
		// would have the core install a snapshot whose data never came.
		{"a snapshot", func(m *raft.Message) {
			m.Type = raft.MsgSnap
			m.Snapshot = &raft.SnapshotMeta{Index: 9, Term: 3, ConfState: raft.ConfState{Voters: []uint64{1, 2}}}
		}},
		{"a heartbeat with entries", func(m *raft.Message) { m.Entries = []raft.Entry{{Index: 1, Term: 1}} }},
		{"a vote with entries", func(m *raft.Message) {
			m.Type, m.Entries = raft.MsgVote, []raft.Entry{{Index: 1, Term: 1}}
		}},
		{"an append whose entries skip an index", func(m *raft.Message) {
			m.Type, m.Index = raft.MsgApp, 4
			m.Entries = []raft.Entry{{Index: 5, Term: 1}, {Index: 7, Term: 1}}
		}},
		{"an append whose entries do not follow its index", func(m *raft.Message) {
			m.Type, m.Index = raft.MsgApp, 4
			m.Entries = []raft.Entry{{Index: 0, Term: 0}}
		}},
	} {
		bad := good
		tc.bad(&bad)
		p := encodeSend(t, []raft.Message{good, bad})
		if got, err := decodeSend(p, hd); err == nil {
			t.Errorf("%s: accepted: %v", tc.name, got)
		}
	}
	// An unknown type on the wire.
	p := encodeSend(t, []raft.Message{good})
	list, _ := p.Msgs()
	list.At(0).SetType(schema.MessageType(200))
	if _, err := decodeSend(p, hd); err == nil {
		t.Error("an unknown message type was accepted")
	}
}

// Every message type travels on the lane its kind needs: replication on
// the data lane, everything else, responses included, on the control lane.
func TestLanes(t *testing.T) {
	for _, typ := range allTypes {
		want := LaneControl
		if typ == raft.MsgApp {
			want = LaneData
		}
		if got := LaneOf(typ); got != want {
			t.Errorf("%s travels on the %s lane, want %s", typ, got, want)
		}
	}
}

// Every field of a snapshot's metadata survives the wire (as an offer's
// metadata).
func TestSnapshotMetadataRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 2))
	for round := 0; round < 100; round++ {
		meta := randSnapshotMeta(rng)
		_, seg := capnp.NewMultiSegmentMessage(nil)
		w, err := schema.NewRootSnapshotMeta(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := encodeSnapshotMeta(w, &meta); err != nil {
			t.Fatal(err)
		}
		got, err := decodeSnapshotMeta(w)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if want := metaOnWire(meta); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d:\n got %#v\nwant %#v", round, got, want)
		}
	}
}

// FuzzDecode feeds arbitrary Cap'n Proto messages to the decoder: it
// must not panic, whatever the content.
func FuzzDecode(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, typ := range allTypes {
		m := randMessage(rng, typ)
		m.From, m.To, m.Incarnation = 1, 2, 3
		p := encodeSend(f, []raft.Message{m})
		b, _ := p.Message().Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := capnp.Unmarshal(b)
		if err != nil {
			return
		}
		msg.TraverseLimit = 1 << 20
		root, err := msg.Root()
		if err != nil {
			return
		}
		_, _ = decodeSend(schema.PeerStream_send_Params(root.Struct()), header{cluster: testCluster, from: 1, to: 2, inc: 3})
	})
}
