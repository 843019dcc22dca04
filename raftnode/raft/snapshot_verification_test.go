package raft

import (
	"bytes"
	"errors"
	"hash/crc32"
	"testing"
)

// An InstallSnapshot carries the CRC-32C of the whole snapshot in every
// chunk; the follower checks the assembled snapshot against it, and has
// the application decode it (Config.VerifySnapshot), before anything is
// replaced. A refused snapshot leaves the follower as it was, and the
// leader sends it again.

// snapshotFixture is leader 1 of {1, 2, 3} whose log is compacted into a
// snapshot holding data, and follower 2, which lacks everything and so
// needs that snapshot.
type snapshotFixture struct {
	c, f   *Core
	cd, fd *MemoryStorage
	index  uint64 // the snapshot's index
	data   []byte
}

func newSnapshotFixture(t *testing.T, data []byte, follower func(*Config)) *snapshotFixture {
	t.Helper()
	c, d := electLeader(t, func(cfg *Config) { cfg.MaxSnapshotChunk = 4 })
	ackAll(c, d)
	for range 5 {
		_ = c.Propose([]byte("x"))
	}
	persistAll(c, d)
	c.Step(Message{Type: MsgAppResp, From: 3, To: 1, Term: c.term, Index: c.log.lastIndex()})
	persistAll(c, d)
	ci := c.log.committed
	if _, err := d.CreateSnapshot(ci, c.ConfState(), data); err != nil {
		t.Fatal(err)
	}
	_ = d.Compact(ci)
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, follower)
	return &snapshotFixture{c: c, f: f, cd: d, fd: fd, index: ci, data: data}
}

// start makes the leader notice that follower 2 needs the snapshot and
// returns what it sends.
func (x *snapshotFixture) start() []Message {
	c := x.c
	c.Step(Message{Type: MsgAppResp, From: 2, To: 1, Term: c.term, Reject: true, Index: c.trk.Progress[2].Next - 1, ConflictIndex: 2, LastIndex: 1})
	return persistAll(c, x.cd)
}

// run delivers the leader's messages to the follower, and its answers
// back, for at most rounds rounds, ticking the leader once a round (so
// unanswered chunks are resent). alter may change (a copy of) each
// message to the follower; the errors Step returned are collected.
func (x *snapshotFixture) run(out []Message, rounds int, alter func(*Message)) []error {
	var errs []error
	for range rounds {
		for _, m := range out {
			if m.To != 2 {
				continue
			}
			if alter != nil {
				m.Data = bytes.Clone(m.Data)
				alter(&m)
			}
			if err := x.f.Step(m); err != nil {
				errs = append(errs, err)
			}
		}
		for _, m := range persistAll(x.f, x.fd) {
			x.c.Step(m)
		}
		x.c.Tick()
		out = persistAll(x.c, x.cd)
		if x.f.log.committed >= x.index {
			break
		}
	}
	return errs
}

func (x *snapshotFixture) installed(t *testing.T) {
	t.Helper()
	if x.f.log.committed < x.index {
		t.Fatalf("follower commit %d, want the snapshot's %d", x.f.log.committed, x.index)
	}
	if snap, _ := x.fd.Snapshot(); !bytes.Equal(snap.Data, x.data) {
		t.Fatalf("installed snapshot %q, want %q", snap.Data, x.data)
	}
}

func TestSnapshotChunksCarryTheChecksumOfTheWholeSnapshot(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"), nil)
	want := crc32.Checksum(x.data, crc32.MakeTable(crc32.Castagnoli))
	chunks := 0
	x.run(x.start(), 20, func(m *Message) {
		if m.Type != MsgSnap {
			return
		}
		chunks++
		if m.Checksum != want {
			t.Errorf("chunk at %d carries checksum %08x, want %08x (of the whole snapshot)", m.Offset, m.Checksum, want)
		}
	})
	if chunks < 3 {
		t.Errorf("%d chunks; the test meant to exercise several", chunks)
	}
	x.installed(t)
}

// A chunk damaged on the way: the follower refuses the whole snapshot,
// keeps its state, and installs the snapshot the leader sends again.
func TestSnapshotDamagedOnTheWayIsRefusedAndFetchedAgain(t *testing.T) {
	x := newSnapshotFixture(t, []byte("0123456789"), nil)
	before := x.f.Status()
	damaged := false
	errs := x.run(x.start(), 3, func(m *Message) {
		if m.Type == MsgSnap && m.Offset == 4 && !damaged {
			m.Data[0] ^= 1 // still a digit: only the checksum can tell
			damaged = true
		}
	})
	if !damaged {
		t.Fatal("no chunk at offset 4 was sent")
	}
	if len(errs) != 1 || !errors.Is(errs[0], ErrSnapshotRefused) {
		t.Fatalf("Step errors %v, want one ErrSnapshotRefused", errs)
	}
	t.Logf("refused: %v", errs[0])
	st := x.f.Status()
	if st.Commit != before.Commit || st.LastIndex != before.LastIndex || st.SnapshotsRefused != 1 {
		t.Fatalf("after refusing: commit %d last %d refused %d (was commit %d last %d)",
			st.Commit, st.LastIndex, st.SnapshotsRefused, before.Commit, before.LastIndex)
	}
	if snap, _ := x.fd.Snapshot(); snap.Meta.Index >= x.index {
		t.Fatalf("the damaged snapshot was persisted: %v", snap.Meta)
	}
	// The leader resends unanswered chunks every few heartbeats.
	if errs := x.run(nil, 40, nil); len(errs) != 0 {
		t.Fatalf("resending: %v", errs)
	}
	x.installed(t)
}

// A snapshot whose bytes match the checksum but that the application
// cannot decode is refused too, and leaves the follower's log alone.
func TestSnapshotTheApplicationCannotDecodeIsRefused(t *testing.T) {
	verify := func(s Snapshot) error {
		if !bytes.HasPrefix(s.Data, []byte("OK")) {
			return errors.New("bad magic")
		}
		return nil
	}
	x := newSnapshotFixture(t, []byte("garbage!"), func(cfg *Config) { cfg.VerifySnapshot = verify })
	// The follower holds an entry of its own that a restore would drop.
	x.f.Step(Message{Type: MsgApp, From: 1, To: 2, Term: x.c.term, Index: 1, LogTerm: 1, Entries: []Entry{{Index: 2, Term: x.c.term, Data: []byte("mine")}}})
	persistAll(x.f, x.fd)
	errs := x.run(x.start(), 10, nil)
	if len(errs) == 0 || !errors.Is(errs[0], ErrSnapshotRefused) {
		t.Fatalf("Step errors %v, want ErrSnapshotRefused", errs)
	}
	if ents, err := x.f.log.entries(2, 3, 1<<20); err != nil || len(ents) != 1 || string(ents[0].Data) != "mine" {
		t.Fatalf("the follower's log after refusing: %v, %v", ents, err)
	}
	if x.f.HasReady() {
		if rd := x.f.Ready(); !rd.Snapshot.IsEmpty() {
			t.Fatalf("a refused snapshot reached Ready: %v", rd.Snapshot.Meta)
		}
		x.f.Advance()
	}
}

// Chunks of one transfer that name different checksums are different
// snapshots: a chunk past the start with another checksum is answered with
// offset 0, not appended.
func TestChunkWithAnotherChecksumRestartsTheTransfer(t *testing.T) {
	f, fd := newTestCore(t, 2, []uint64{1, 2, 3}, nil)
	meta := &SnapshotMeta{Index: 10, Term: 2, ConfState: ConfState{Voters: []uint64{1, 2, 3}}}
	f.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 2, Snapshot: meta, Data: []byte("0123"), Checksum: 7})
	persistAll(f, fd)
	f.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: 2, Snapshot: meta, Offset: 4, Data: []byte("4567"), Checksum: 8})
	resp := only(persistAll(f, fd), MsgSnapResp)
	if len(resp) != 1 || resp[0].Offset != 0 {
		t.Fatalf("answer to a chunk with another checksum: %v", resp)
	}
}

// Issue 13: a forged, empty but well-formed snapshot turned a follower
// into a zombie serving empty reads. At an index the follower already
// committed, or in a past term, Raft's own rules refuse it.
func TestStaleEmptySnapshotIsRefusedByRaftRules(t *testing.T) {
	empty := SnapshotMeta{Term: 1, ConfState: ConfState{Voters: []uint64{1, 2, 3}}}
	for _, tc := range []struct {
		name        string
		term, index uint64
	}{
		{"at the committed index", 2, 3},
		{"below the committed index", 2, 2},
		{"at a later term, below the committed index", 5, 3},
		{"from a past term", 1, 100},
	} {
		f, fd := followerOf(t, 2, nil)
		before := f.Status()
		meta := empty
		meta.Index = tc.index
		f.Step(Message{Type: MsgSnap, From: 1, To: 2, Term: tc.term, Snapshot: &meta, Done: true})
		out := persistAll(f, fd)
		st := f.Status()
		if snap, _ := fd.Snapshot(); snap.Meta.Index > 1 || st.LastIndex != before.LastIndex || st.Commit != before.Commit {
			t.Errorf("%s: installed: snapshot %d, last %d commit %d (was last %d commit %d)",
				tc.name, snap.Meta.Index, st.LastIndex, st.Commit, before.LastIndex, before.Commit)
		}
		if tc.term >= before.Term {
			if acks := only(out, MsgAppResp); len(acks) != 1 || acks[0].Index != before.Commit {
				t.Errorf("%s: answer %v, want our commit index %d", tc.name, acks, before.Commit)
			}
		}
	}
}
