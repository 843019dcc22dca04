package raft

import "fmt"

// MessageType says which RPC (or RPC response) a Message is. The kinds map
// one to one onto the wire schema's message types; conversion to and from
// Cap'n Proto lives in the transport, never here.
//
// Heartbeats have their own kind (MsgHeartbeat) rather than being empty
// appends: a heartbeat carries only a commit index that the follower is
// known to hold (min(Match, commit)), so it needs no log-matching check and
// never triggers a rejection; it also carries the read round (Seq) that
// ReadIndex confirms. On the wire it is an AppendEntries call with a
// heartbeat flag, no entries, and no previous-entry check.
type MessageType uint8

const (
	// MsgVote is RequestVote: Term, LastLogIndex, LastLogTerm, plus the
	// PreVote flag (a pre-vote does not change anyone's term or vote) and
	// the Transfer flag (an election forced by leadership transfer, which
	// bypasses leader stickiness).
	MsgVote MessageType = iota + 1
	// MsgVoteResp answers MsgVote: Granted, PreVote echoed.
	MsgVoteResp
	// MsgApp is AppendEntries: Index/LogTerm identify the entry preceding
	// Entries, Commit is the leader's commit index.
	MsgApp
	// MsgAppResp answers MsgApp (and an installed snapshot). On success
	// Index is the highest index known to match the leader's log. On
	// rejection Index echoes the rejected MsgApp's Index and the
	// fast-backtracking hints are set: ConflictTerm is the follower's term
	// at Index (0 if its log is shorter), ConflictIndex is the first index
	// the follower holds with ConflictTerm (or its last index + 1), and
	// LastIndex is the follower's last index.
	MsgAppResp
	// MsgHeartbeat is an AppendEntries without entries or log check:
	// Commit (already capped at the follower's Match) and Seq.
	MsgHeartbeat
	// MsgHeartbeatResp answers MsgHeartbeat, echoing Seq.
	MsgHeartbeatResp
	// MsgSnap is InstallSnapshot, metadata only: Snapshot names the
	// snapshot (index, term, configuration). Its data never passes
	// through the core. A leader's MsgSnap asks its driver to stream that
	// snapshot's data to To, beside the core, and to report how that
	// ended (ReportSnapshot); the leader sends To no appends until
	// then. A follower's driver steps a MsgSnap only once it holds the
	// data, checked and durable (see "Snapshots" in doc.go); the
	// follower's core then installs it and answers with MsgAppResp.
	MsgSnap
	// MsgTimeoutNow tells a caught-up follower to start an election at
	// once (leadership transfer). It is honoured only from the leader the
	// follower follows, in that leader's term.
	MsgTimeoutNow
	// MsgReadIndex is a follower forwarding a read request to the leader;
	// Context identifies the request.
	MsgReadIndex
	// MsgReadIndexResp returns the read index (Index) for Context. It is
	// honoured only from the leader the node follows, in its term.
	MsgReadIndexResp

	msgTypeEnd // sentinel for validation
)

var msgTypeNames = [...]string{
	MsgVote:          "MsgVote",
	MsgVoteResp:      "MsgVoteResp",
	MsgApp:           "MsgApp",
	MsgAppResp:       "MsgAppResp",
	MsgHeartbeat:     "MsgHeartbeat",
	MsgHeartbeatResp: "MsgHeartbeatResp",
	MsgSnap:          "MsgSnap",
	MsgTimeoutNow:    "MsgTimeoutNow",
	MsgReadIndex:     "MsgReadIndex",
	MsgReadIndexResp: "MsgReadIndexResp",
}

// String names the message type.
func (t MessageType) String() string {
	if t > 0 && t < msgTypeEnd {
		return msgTypeNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// NotMember is a node's word to a peer whose message its core ignored
// with ErrNotMember: its configuration, as of its applied Index (in its
// Term), does not include that peer. The core never sends it; a driver
// answers with it, and a removed node that hears it from a credible peer
// learns it was removed (the log that says so no longer reaches it). It
// is defined here so that the driver and the transport share one type.
type NotMember struct {
	// Index is the peer's applied index and Term its term.
	Index, Term uint64
}

// Message is one RPC or RPC response between two cores. Which fields are
// meaningful depends on Type (see the MessageType constants). Every
// message carries the sender's Term.
type Message struct {
	Type MessageType
	From uint64
	To   uint64
	Term uint64
	// Incarnation is the sender's storage incarnation (Config.Incarnation),
	// set on every message. A leader counts a peer's acknowledgements, and
	// a candidate its vote, only if it is the incarnation the configuration
	// records for that peer.
	Incarnation uint64
	// ToIncarnation, on a heartbeat, is the incarnation of the
	// recipient's storage that Commit is meant for: the one the leader
	// last heard from (or the recorded one). A recipient with other
	// storage ignores Commit: the leader's knowledge of what it holds
	// (Match) was about storage it no longer has, and its log may hold
	// entries the leader never sent.
	ToIncarnation uint64

	// RequestVote.
	LastLogIndex uint64
	LastLogTerm  uint64
	PreVote      bool
	Transfer     bool
	Granted      bool

	// AppendEntries and its response; Index is also the read index in
	// MsgReadIndexResp.
	Index         uint64
	LogTerm       uint64
	Entries       []Entry
	Commit        uint64
	Reject        bool
	ConflictIndex uint64
	ConflictTerm  uint64
	LastIndex     uint64

	// Heartbeat read round.
	Seq uint64

	// InstallSnapshot: the snapshot's metadata, nil except in MsgSnap.
	Snapshot *SnapshotMeta

	// ReadIndex request identifier, chosen by the application.
	Context []byte
}

// String renders the message compactly for logs and test failures.
func (m Message) String() string {
	s := fmt.Sprintf("%s %d->%d t%d", m.Type, m.From, m.To, m.Term)
	switch m.Type {
	case MsgVote:
		s += fmt.Sprintf(" last=%d/%d pre=%v transfer=%v", m.LastLogIndex, m.LastLogTerm, m.PreVote, m.Transfer)
	case MsgVoteResp:
		s += fmt.Sprintf(" granted=%v pre=%v", m.Granted, m.PreVote)
	case MsgApp:
		s += fmt.Sprintf(" prev=%d/%d n=%d commit=%d", m.Index, m.LogTerm, len(m.Entries), m.Commit)
	case MsgAppResp:
		s += fmt.Sprintf(" index=%d reject=%v hint=%d/%d last=%d", m.Index, m.Reject, m.ConflictIndex, m.ConflictTerm, m.LastIndex)
	case MsgHeartbeat, MsgHeartbeatResp:
		s += fmt.Sprintf(" commit=%d seq=%d", m.Commit, m.Seq)
	case MsgSnap:
		if m.Snapshot != nil {
			s += fmt.Sprintf(" snap=%d/%d", m.Snapshot.Index, m.Snapshot.Term)
		}
	case MsgReadIndexResp:
		s += fmt.Sprintf(" index=%d", m.Index)
	}
	return s
}

// sendableBeforePersist reports whether a message of this type, sent by a
// node whose term and vote are already durable (a leader if leader),
// depends only on state that may still be unpersisted without harm.
// Leader-originated traffic qualifies (thesis §10.2.1: the leader's
// entries may be sent before they are on its own disk, because the
// leader only counts itself toward a commit once Advance confirms its own
// write). So do, from any node, a heartbeat's answer, which only says
// that the sender is in the leader's term (durable) and still hears it,
// and a read index request: neither says anything of the sender's log.
// Sent early, the leader's read round need not wait for a follower's
// fsync of entries the round has nothing to do with. Acknowledgements of
// entries and votes never qualify: they promise that something is on
// disk.
func sendableBeforePersist(t MessageType, leader bool) bool {
	switch t {
	case MsgHeartbeatResp, MsgReadIndex:
		return true
	case MsgApp, MsgHeartbeat, MsgSnap, MsgTimeoutNow, MsgReadIndexResp:
		return leader
	}
	return false
}
