package raft

import "errors"

// EntryType says how an Entry's Data is to be interpreted.
type EntryType uint8

const (
	// EntryNormal carries an application command (empty Data is the leader's no-op).
	EntryNormal EntryType = 0
	// EntryConfChange carries an encoded membership change.
	EntryConfChange EntryType = 1
)

// String names the entry type for logs and test output.
func (t EntryType) String() string {
	switch t {
	case EntryNormal:
		return "normal"
	case EntryConfChange:
		return "confchange"
	default:
		return "unknown"
	}
}

// Entry is one record of the replicated log. Index and Term identify it;
// by the Log Matching property, two logs that hold an entry with the same
// Index and Term are identical up to that entry.
type Entry struct {
	Index uint64
	Term  uint64
	Type  EntryType
	Data  []byte
}

// HardState is the part of a node's state that must be on stable storage
// before the node answers any message that depends on it: the current term,
// the vote cast in that term, and the commit index (kept so a restart can
// apply without waiting for the leader).
type HardState struct {
	Term   uint64
	Vote   uint64 // 0 means "voted for nobody in Term"
	Commit uint64
}

// IsEmpty reports whether hs is the zero HardState.
func (hs HardState) IsEmpty() bool { return hs == HardState{} }

// ConfState is a cluster membership configuration. While a joint
// configuration is in effect, VotersOutgoing holds the old voters and both
// majorities are needed for elections and commitment.
type ConfState struct {
	Voters         []uint64
	Learners       []uint64
	VotersOutgoing []uint64
	LearnersNext   []uint64
	AutoLeave      bool
	// Incarnations records, per member, the incarnation of its storage
	// that the configuration counts (sorted by ID). Only that incarnation's
	// votes and acknowledgements count towards a quorum; a member not
	// listed counts whatever incarnation answers (configurations written
	// before incarnations existed, members added before they were heard
	// from).
	Incarnations []MemberIncarnation
	// AutoPromote lists learners the leader promotes to voter, recording
	// the incarnation each answers with, once it has caught up: voters
	// demoted because their storage was lost, and voters added before
	// they had the log.
	AutoPromote []uint64
}

// MemberIncarnation names the incarnation of a member's storage that a
// configuration counts. An incarnation is a random non-zero number chosen
// when a node's data directory is created; a node that comes back with a
// wiped or damaged disk has a new one, and so counts as a different
// voter from the one that acknowledged entries and cast votes before.
type MemberIncarnation struct {
	ID          uint64
	Incarnation uint64
}

// SnapshotMeta identifies the log position a snapshot covers and the
// configuration in effect at that position.
type SnapshotMeta struct {
	Index     uint64
	Term      uint64
	ConfState ConfState
}

// Snapshot is the application state as of Meta.Index. The core reads only
// Meta: a snapshot's data travels beside the core, between the drivers
// (see "Snapshots" in doc.go), so Storage may leave Data nil.
type Snapshot struct {
	Meta SnapshotMeta
	Data []byte
}

// IsEmpty reports whether s holds no snapshot.
func (s Snapshot) IsEmpty() bool { return s.Meta.Index == 0 }

// Errors returned by Storage implementations.
var (
	// ErrCompacted: the requested index is older than the first retained entry.
	ErrCompacted = errors.New("raft: requested index is unavailable due to compaction")
	// ErrUnavailable: the requested index is beyond the last entry.
	ErrUnavailable = errors.New("raft: requested entry at index is unavailable")
	// ErrSnapOutOfDate: a snapshot older than the current one was offered.
	ErrSnapOutOfDate = errors.New("raft: requested snapshot is older than the existing snapshot")
	// ErrSnapshotTemporarilyUnavailable: the snapshot is being produced; retry later.
	ErrSnapshotTemporarilyUnavailable = errors.New("raft: snapshot is temporarily unavailable")
)

// Storage is the core's read-only view of the stable log. The core never
// writes to it: the driver persists what Ready reports (entries, hard state,
// snapshot) and only then calls Advance, after which Storage must reflect it.
//
// Implementations: MemoryStorage (tests, simulation) and the durable
// write-ahead log in raftnode/storage.
type Storage interface {
	// InitialState returns the persisted HardState and ConfState.
	InitialState() (HardState, ConfState, error)
	// Entries returns entries in [lo, hi), limited to maxBytes of Data in
	// total but always at least one entry if any is in range.
	// It returns ErrCompacted if lo <= the snapshot index and
	// ErrUnavailable if hi > LastIndex()+1.
	Entries(lo, hi, maxBytes uint64) ([]Entry, error)
	// Term returns the term of entry i, which must be in
	// [FirstIndex()-1, LastIndex()]; the term at FirstIndex()-1 is the
	// snapshot's term.
	Term(i uint64) (uint64, error)
	// LastIndex is the index of the last entry (the snapshot index if the
	// log is empty).
	LastIndex() (uint64, error)
	// FirstIndex is the index of the first retained entry (snapshot index+1).
	FirstIndex() (uint64, error)
	// Snapshot returns the most recent snapshot. The core reads only its
	// Meta (it never sends or receives snapshot data itself), so an
	// implementation whose snapshots are large should leave Data nil
	// rather than load it.
	Snapshot() (Snapshot, error)
}

// SnapshotStatus is how the transfer of a snapshot to a follower ended,
// as the driver reports it with Core.ReportSnapshot.
type SnapshotStatus uint8

const (
	// SnapshotFinish: the follower holds the snapshot's data, checked and
	// durable, and its driver has handed its core the MsgSnap that
	// installs it. The follower's core answers with a MsgAppResp.
	SnapshotFinish SnapshotStatus = iota
	// SnapshotFailure: the transfer did not complete (the follower could
	// not be reached, refused the snapshot, or its data failed a check;
	// the snapshot was replaced meanwhile).
	SnapshotFailure
)

// String names the status.
func (s SnapshotStatus) String() string {
	if s == SnapshotFinish {
		return "finish"
	}
	return "failure"
}

// IncarnationOf returns the incarnation cs records for member id; ok is
// false if it records none (any incarnation of id counts).
func (cs ConfState) IncarnationOf(id uint64) (inc uint64, ok bool) {
	for _, mi := range cs.Incarnations {
		if mi.ID == id {
			return mi.Incarnation, true
		}
	}
	return 0, false
}
