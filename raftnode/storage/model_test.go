package storage

import (
	"bytes"
	"fmt"
	"math/rand"

	"github.com/capraft/capraft/raftnode/raft"
)

// model is the in-memory reference the durable store is checked against.
type model struct {
	startIndex, startTerm uint64 // entry before ents[0]
	ents                  []raft.Entry
	hs                    raft.HardState
	snap                  *raft.Snapshot
}

func (m *model) clone() *model {
	c := *m
	c.ents = append([]raft.Entry(nil), m.ents...)
	return &c
}

func (m *model) last() uint64 { return m.startIndex + uint64(len(m.ents)) }

func (m *model) term(i uint64) (uint64, bool) {
	if i == m.startIndex {
		return m.startTerm, true
	}
	if i < m.startIndex || i > m.last() {
		return 0, false
	}
	return m.ents[i-m.startIndex-1].Term, true
}

func (m *model) snapIndex() uint64 {
	if m.snap == nil {
		return 0
	}
	return m.snap.Meta.Index
}

func (m *model) applySnapRef(s *raft.Snapshot) {
	m.snap = s
	if t, ok := m.term(s.Meta.Index); ok && t == s.Meta.Term {
		return
	}
	m.startIndex, m.startTerm, m.ents = s.Meta.Index, s.Meta.Term, nil
}

func (m *model) appendEntry(e raft.Entry) {
	m.ents = append(m.ents[:e.Index-m.startIndex-1], e)
}

// op is one call on the store.
type op struct {
	kind  string // save, snapshot, compact
	hs    raft.HardState
	ents  []raft.Entry
	snap  *raft.Snapshot
	index uint64
	data  []byte
	// chunked: deliver snap through ReceiveSnapshot in chunks first, as an
	// InstallSnapshot would, then Save it without data.
	chunked bool
}

func (o op) String() string {
	switch o.kind {
	case "save":
		s := fmt.Sprintf("save hs=%+v", o.hs)
		if len(o.ents) > 0 {
			s += fmt.Sprintf(" ents=[%d..%d]", o.ents[0].Index, o.ents[len(o.ents)-1].Index)
		}
		if o.snap != nil {
			s += fmt.Sprintf(" snap=%d/%d", o.snap.Meta.Index, o.snap.Meta.Term)
		}
		return s
	default:
		return fmt.Sprintf("%s %d", o.kind, o.index)
	}
}

func (o op) apply(s *Store) error {
	switch o.kind {
	case "save":
		if o.snap != nil && o.chunked {
			w, err := s.ReceiveSnapshot(o.snap.Meta)
			if err != nil {
				return err
			}
			for off := 0; off < len(o.snap.Data); off += 7 {
				if _, err := w.Write(o.snap.Data[off:min(off+7, len(o.snap.Data))]); err != nil {
					w.Abort()
					return err
				}
			}
			if err := w.Commit(); err != nil {
				return err
			}
			return s.Save(o.hs, o.ents, &raft.Snapshot{Meta: o.snap.Meta})
		}
		return s.Save(o.hs, o.ents, o.snap)
	case "snapshot":
		return s.CreateSnapshot(o.index, raft.ConfState{Voters: []uint64{1, 2, 3}}, o.data)
	case "compact":
		return s.Compact(o.index)
	}
	panic("unknown op " + o.kind)
}

// states returns the model states a crash during o may leave: states[0] is
// m unchanged, the last is o fully applied, and in between each prefix of
// the log records o writes (snapshot reference, entries, hard state).
func (o op) states(m *model, trailing uint64) []*model {
	out := []*model{m}
	cur := m.clone()
	switch o.kind {
	case "save":
		if o.snap != nil {
			cur.applySnapRef(o.snap)
			out = append(out, cur.clone())
		}
		for _, e := range o.ents {
			cur.appendEntry(e)
			out = append(out, cur.clone())
		}
		if !o.hs.IsEmpty() {
			cur.hs = o.hs
			out = append(out, cur.clone())
		}
	case "snapshot":
		t, _ := cur.term(o.index)
		cur.snap = &raft.Snapshot{Meta: raft.SnapshotMeta{Index: o.index, Term: t, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}}}, Data: o.data}
		out = append(out, cur)
	case "compact":
		target := o.index - min(o.index, trailing)
		if target > cur.startIndex {
			t, _ := cur.term(target)
			cur.ents = append([]raft.Entry(nil), cur.ents[target-cur.startIndex:]...)
			cur.startIndex, cur.startTerm = target, t
		}
		out = append(out, cur)
	}
	return out
}

// gen produces random but valid Raft-like operations against a model.
type gen struct {
	rng     *rand.Rand
	maxTerm uint64
	bigData bool
}

func (g *gen) data() []byte {
	n := g.rng.Intn(64)
	if g.bigData && g.rng.Intn(20) == 0 {
		n = 1000 + g.rng.Intn(3000)
	}
	b := make([]byte, n)
	g.rng.Read(b)
	return b
}

func (g *gen) next(m *model) op {
	if m.hs.Term > g.maxTerm {
		g.maxTerm = m.hs.Term
	}
	if t, _ := m.term(m.last()); t > g.maxTerm {
		g.maxTerm = t
	}
	if g.maxTerm == 0 {
		g.maxTerm = 1
	}
	hs := m.hs
	if hs.Term < g.maxTerm {
		hs.Term = g.maxTerm
	}
	// A snapshot is committed state: after a crash that kept a snapshot but
	// not the hard state written with it, the core restarts with commit at
	// least the snapshot index (InitialState), and so does the generator.
	hs.Commit = max(hs.Commit, m.snapIndex())
	switch r := g.rng.Intn(100); {
	case r < 50: // leader-style append, maybe advancing commit
		n := 1 + g.rng.Intn(8)
		ents := make([]raft.Entry, n)
		for k := range ents {
			ents[k] = raft.Entry{Index: m.last() + 1 + uint64(k), Term: g.maxTerm, Data: g.data()}
		}
		if g.rng.Intn(2) == 0 && m.last() > hs.Commit {
			hs.Commit += 1 + uint64(g.rng.Intn(int(m.last()-hs.Commit)))
		}
		return op{kind: "save", hs: hs, ents: ents}
	case r < 62: // follower overwriting an uncommitted suffix in a new term
		if m.last() <= hs.Commit || m.last() <= m.startIndex {
			return op{kind: "save", hs: hs}
		}
		lo := max(hs.Commit, m.startIndex) + 1
		from := lo + uint64(g.rng.Intn(int(m.last()-lo+1)))
		g.maxTerm++
		hs.Term, hs.Vote = g.maxTerm, uint64(1+g.rng.Intn(3))
		ents := make([]raft.Entry, 1+g.rng.Intn(4))
		for k := range ents {
			ents[k] = raft.Entry{Index: from + uint64(k), Term: g.maxTerm, Type: raft.EntryType(g.rng.Intn(2)), Data: g.data()}
		}
		return op{kind: "save", hs: hs, ents: ents}
	case r < 70: // hard state only: a vote in a new term
		g.maxTerm++
		hs.Term, hs.Vote = g.maxTerm, uint64(1+g.rng.Intn(3))
		return op{kind: "save", hs: hs}
	case r < 82: // application snapshot
		if hs.Commit <= m.snapIndex() || hs.Commit <= m.startIndex {
			return op{kind: "save", hs: hs}
		}
		lo := max(m.snapIndex(), m.startIndex) + 1
		i := lo + uint64(g.rng.Intn(int(hs.Commit-lo+1)))
		return op{kind: "snapshot", index: i, data: g.data()}
	case r < 92:
		if m.snap == nil {
			return op{kind: "save", hs: hs}
		}
		return op{kind: "compact", index: m.snap.Meta.Index - uint64(g.rng.Intn(int(m.snap.Meta.Index)+1)/2)}
	default: // InstallSnapshot from a leader: beyond our commit, maybe beyond our log
		x := max(hs.Commit, m.snapIndex()) + 1 + uint64(g.rng.Intn(6))
		term := g.maxTerm
		if t, ok := m.term(x); ok && g.rng.Intn(2) == 0 {
			term = t // the log already holds it: the log must be kept
		} else {
			g.maxTerm++
			term = g.maxTerm
		}
		hs.Term = max(hs.Term, term)
		hs.Commit = x
		s := &raft.Snapshot{Meta: raft.SnapshotMeta{Index: x, Term: term, ConfState: raft.ConfState{Voters: []uint64{1, 2, 3}, Learners: []uint64{4}}}, Data: g.data()}
		return op{kind: "save", hs: hs, snap: s, chunked: g.rng.Intn(2) == 0}
	}
}

// diff compares the store with the model. restarted relaxes FirstIndex: after
// a restart whole segments are the unit of compaction, so the store may hold
// more of the past than the model (never less).
func diff(s *Store, m *model, restarted bool) error {
	last, _ := s.LastIndex()
	if last != m.last() {
		return fmt.Errorf("last index %d, model %d", last, m.last())
	}
	first, _ := s.FirstIndex()
	mfirst := m.startIndex + 1
	if first > mfirst || (!restarted && first != mfirst) {
		return fmt.Errorf("first index %d, model %d", first, mfirst)
	}
	if t, err := s.Term(m.startIndex); err != nil || t != m.startTerm {
		return fmt.Errorf("term(%d) = %d, %v; model %d", m.startIndex, t, err, m.startTerm)
	}
	if mfirst <= last {
		ents, err := s.Entries(mfirst, last+1, ^uint64(0))
		if err != nil {
			return fmt.Errorf("entries [%d,%d): %v", mfirst, last+1, err)
		}
		for k, e := range ents {
			want := m.ents[k]
			if e.Index != want.Index || e.Term != want.Term || e.Type != want.Type || !bytes.Equal(e.Data, want.Data) {
				return fmt.Errorf("entry %d: got %d/%d/%d (%d bytes), model %d/%d/%d (%d bytes)", want.Index,
					e.Index, e.Term, e.Type, len(e.Data), want.Index, want.Term, want.Type, len(want.Data))
			}
			if t, _ := s.Term(want.Index); t != want.Term {
				return fmt.Errorf("term(%d) = %d, model %d", want.Index, t, want.Term)
			}
		}
	}
	hs, cs, _ := s.InitialState()
	want := m.hs
	if m.snap != nil {
		want.Commit = max(want.Commit, m.snap.Meta.Index)
	}
	if hs != want {
		return fmt.Errorf("hard state %+v, model %+v", hs, want)
	}
	snap, err := s.LoadSnapshot()
	if err != nil {
		return fmt.Errorf("snapshot: %v", err)
	}
	if m.snap == nil {
		if !snap.IsEmpty() {
			return fmt.Errorf("snapshot %d, model none", snap.Meta.Index)
		}
		return nil
	}
	if snap.Meta.Index != m.snap.Meta.Index || snap.Meta.Term != m.snap.Meta.Term || !bytes.Equal(snap.Data, m.snap.Data) {
		return fmt.Errorf("snapshot %d/%d (%d bytes), model %d/%d (%d bytes)", snap.Meta.Index, snap.Meta.Term, len(snap.Data),
			m.snap.Meta.Index, m.snap.Meta.Term, len(m.snap.Data))
	}
	if len(cs.Voters) != 3 {
		return fmt.Errorf("conf state %+v", cs)
	}
	return nil
}
