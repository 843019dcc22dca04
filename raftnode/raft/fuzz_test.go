package raft

import "testing"

// Fuzzing: nothing from the network may panic the core.

// FuzzStep: nothing arriving from the network may panic the core.
func FuzzStep(f *testing.F) {
	f.Add(uint8(MsgApp), uint64(2), uint64(3), uint64(1), uint64(1), uint64(5), uint8(2), false, uint64(0))
	f.Add(uint8(MsgSnap), uint64(3), uint64(9), uint64(4), uint64(2), uint64(0), uint8(0), true, uint64(7))
	f.Fuzz(func(t *testing.T, typ uint8, from, term, index, logTerm, commit uint64, nents uint8, flag bool, extra uint64) {
		for _, st := range []StateType{StateFollower, StateLeader} {
			var c *Core
			var d *MemoryStorage
			if st == StateLeader {
				c, d = electLeader(t, nil)
			} else {
				c, d = newTestCore(t, 1, []uint64{1, 2, 3}, nil)
			}
			m := Message{Type: MessageType(typ), From: from % 5, To: 1, Term: term % 8, Index: index % 16, LogTerm: logTerm % 8,
				Commit: commit, Reject: flag, Granted: flag, PreVote: flag, ConflictIndex: extra % 20, ConflictTerm: extra % 7,
				LastLogIndex: extra, LastLogTerm: logTerm % 8, Seq: extra}
			for i := 0; i < int(nents%6); i++ {
				m.Entries = append(m.Entries, Entry{Index: m.Index + 1 + uint64(i), Term: min(m.Term, m.LogTerm+uint64(i)), Data: []byte{byte(i)}})
			}
			if m.Type == MsgSnap {
				m.Snapshot = &SnapshotMeta{Index: index % 16, Term: logTerm % 8, ConfState: ConfState{Voters: []uint64{1, extra % 5}}}
			}
			_ = c.Step(m)
			persistAll(c, d)
			for i := 0; i < 25; i++ {
				c.Tick()
			}
			persistAll(c, d)
		}
	})
}

// FuzzStepSequence: arbitrary sequences of small messages, ticks and
// proposals, against a leader and a follower, must never panic.
func FuzzStepSequence(f *testing.F) {
	f.Add([]byte{3, 2, 2, 1, 1, 4, 1, 9, 5, 0, 0, 0, 7, 3, 3, 2, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, leader := range []bool{false, true} {
			var c *Core
			var d *MemoryStorage
			if leader {
				c, d = electLeader(t, nil)
			} else {
				c, d = newTestCore(t, 1, []uint64{1, 2, 3}, nil)
			}
			for len(b) >= 6 {
				op := b[0] % 16
				switch {
				case op == 14:
					c.Tick()
				case op == 15:
					_ = c.Propose(b[1:3])
				default:
					m := Message{Type: MessageType(op), From: uint64(b[1] % 4), To: 1, Term: uint64(b[2] % 6),
						Index: uint64(b[3] % 12), LogTerm: uint64(b[4] % 6), Commit: uint64(b[5] % 12),
						Reject: b[5]&1 == 1, Granted: b[4]&1 == 1, PreVote: b[3]&1 == 1,
						ConflictIndex: uint64(b[1] % 9), ConflictTerm: uint64(b[2] % 5), Seq: uint64(b[3]),
						LastLogIndex: uint64(b[5] % 12), LastLogTerm: uint64(b[4] % 6)}
					for i := 0; i < int(b[5]%4); i++ {
						m.Entries = append(m.Entries, Entry{Index: m.Index + 1 + uint64(i), Term: m.LogTerm + uint64(i%2)})
					}
					if m.Type == MsgSnap {
						m.Snapshot = &SnapshotMeta{Index: uint64(b[3] % 12), Term: uint64(b[4] % 6), ConfState: ConfState{Voters: []uint64{1, uint64(b[1] % 5)}}}
					}
					_ = c.Step(m)
				}
				persistAll(c, d)
				b = b[6:]
			}
		}
	})
}
