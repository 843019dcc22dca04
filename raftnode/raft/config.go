package raft

import (
	"errors"
	"fmt"
)

// ReadOnlyOption selects how ReadIndex confirms leadership.
type ReadOnlyOption uint8

const (
	// ReadOnlySafe confirms leadership with one heartbeat round per
	// read batch (thesis §6.4). This is the default and the only mode
	// that does not depend on clocks.
	ReadOnlySafe ReadOnlyOption = iota
	// ReadOnlyLeaseBased answers reads from the leader's commit index
	// without a heartbeat round, trusting that no other leader can exist
	// within an election timeout of the last quorum contact (thesis
	// §6.4.1). It is only correct with bounded clock drift and requires
	// CheckQuorum.
	ReadOnlyLeaseBased
)

// Config configures one core. Zero values of the optional limits mean the
// documented defaults.
type Config struct {
	// ID identifies this node; it must be non-zero.
	ID uint64
	// Incarnation identifies this node's storage: a random non-zero
	// number chosen when the storage was created, and chosen anew when it
	// is lost or damaged. It travels on every message; a configuration
	// counts only the incarnation it records for a voter, so a node that
	// forgot its votes and log never counts as if it remembered them. A
	// leader that hears a voter answer with an incarnation the
	// configuration does not record demotes it to learner, and promotes it
	// back, recording the new incarnation, once it has caught up. Zero is
	// allowed (tests, storage without incarnations) and is then just one
	// more value.
	Incarnation uint64
	// Storage is the stable log as of the last completed persist.
	Storage Storage

	// ElectionTick is the election timeout in ticks; a follower waits a
	// random timeout in [ElectionTick, 2*ElectionTick) before campaigning.
	// Must exceed HeartbeatTick (10x is customary).
	ElectionTick int
	// HeartbeatTick is how many ticks pass between leader heartbeats.
	HeartbeatTick int
	// Seed seeds the core's private random source (election timeouts).
	// The same seed and inputs give the same outputs.
	Seed uint64

	// Applied is the index the application has already applied (only
	// needed on restart if the application persists its state beyond the
	// last snapshot). Storage's ConfState must then be the one as of
	// Applied. Zero means "the snapshot index".
	Applied uint64

	// PreVote enables the pre-vote phase (thesis §9.6).
	PreVote bool
	// CheckQuorum makes a leader step down when it has not heard from a
	// quorum for an election timeout, and makes followers ignore vote
	// requests while they hear from a leader (leader stickiness, §4.2.3).
	CheckQuorum bool
	// ReadOnlyOption selects ReadIndex behaviour (default ReadOnlySafe).
	ReadOnlyOption ReadOnlyOption

	// LazyCommit makes a leader that commits new entries leave the new
	// commit index for the next appends that carry entries (and for
	// heartbeats), instead of sending every follower an empty append
	// that carries only the index. Under a steady load that saves a
	// message and its answer per follower per commit. The application
	// announces an index left waiting with AnnounceCommit, typically once
	// it has been idle for a moment, so that followers do not apply a
	// heartbeat interval late. Safety does not depend on it: a follower's
	// commit index only ever lags.
	LazyCommit bool

	// MaxSizePerMsg caps the entry payload bytes per AppendEntries
	// (default 1 MiB; at least one entry is always sent).
	MaxSizePerMsg uint64
	// MaxEntriesPerMsg caps the entries per AppendEntries (default 4096).
	MaxEntriesPerMsg int
	// MaxInflightMsgs is the pipelining window per follower (default 256).
	MaxInflightMsgs int
	// MaxInflightBytes caps in-flight payload per follower (0 = no cap).
	MaxInflightBytes uint64
	// MaxUncommittedEntriesSize caps the payload of entries the leader has
	// appended but not yet committed; proposals beyond it fail with
	// ErrProposalDropped (default 64 MiB). A single proposal is always
	// accepted when nothing is uncommitted.
	MaxUncommittedEntriesSize uint64
	// MaxCommittedSizePerReady caps the payload of CommittedEntries in
	// one Ready (default 64 MiB).
	MaxCommittedSizePerReady uint64

	// bugs deliberately breaks the core; set only by tests that prove the
	// simulator's checkers can fail.
	bugs testBugs
}

// testBugs are deliberate safety violations for checker self-tests.
type testBugs struct {
	// commitOldTerm commits by counting replicas of entries from earlier
	// terms (violates the rule of §5.4.2 / Figure 8). It also skips the
	// election no-op, which would otherwise hide the mistake almost
	// always (the no-op travels with the old entries); without the
	// counting mistake, skipping the no-op alone is safe.
	commitOldTerm bool
	// doubleVote grants a vote to any candidate of the current term, even
	// after voting for another (violates election safety).
	doubleVote bool
	// readWithoutQuorum answers ReadIndex from the leader's commit index
	// without confirming leadership (the stale-read bug of etcd 0.4 and
	// Consul found by Jepsen; violates linearizability).
	readWithoutQuorum bool
	// ignoreIncarnation counts every incarnation's votes (a voter that
	// lost its disk votes as if it remembered its vote and its log) and
	// never demotes such a voter.
	ignoreIncarnation bool
	// admitNonMembers steps every message whatever its sender (no
	// membership filter, see admit).
	admitNonMembers bool
	// dropUnknownLeaders drops leader traffic from senders outside the
	// configuration too, without the exception of thesis §4.1: a node
	// whose configuration is behind (or empty, joining) never hears the
	// leader that would bring it up to date.
	dropUnknownLeaders bool
	// timeoutNowFromAnyone honours a TimeoutNow from any sender at any
	// term, not only from the leader followed.
	timeoutNowFromAnyone bool
	// readIndexFromAnyone takes a read index answer from any sender at
	// any term, not only from the leader followed.
	readIndexFromAnyone bool
	// staleConfigCounts counts votes and commits with the configuration
	// in effect alone, however many changes the log holds beyond it
	// (logconf.go).
	staleConfigCounts bool
}

func (c *Config) validate() error {
	if c.ID == 0 {
		return errors.New("raft: Config.ID must not be 0")
	}
	if c.Storage == nil {
		return errors.New("raft: Config.Storage is nil")
	}
	if c.HeartbeatTick <= 0 {
		return fmt.Errorf("raft: HeartbeatTick %d must be > 0", c.HeartbeatTick)
	}
	if c.ElectionTick <= c.HeartbeatTick {
		return fmt.Errorf("raft: ElectionTick %d must be > HeartbeatTick %d", c.ElectionTick, c.HeartbeatTick)
	}
	if c.ReadOnlyOption == ReadOnlyLeaseBased && !c.CheckQuorum {
		return errors.New("raft: ReadOnlyLeaseBased requires CheckQuorum")
	}
	if c.MaxSizePerMsg == 0 {
		c.MaxSizePerMsg = 1 << 20
	}
	if c.MaxEntriesPerMsg <= 0 {
		c.MaxEntriesPerMsg = 4096
	}
	if c.MaxInflightMsgs <= 0 {
		c.MaxInflightMsgs = 256
	}
	if c.MaxUncommittedEntriesSize == 0 {
		c.MaxUncommittedEntriesSize = 64 << 20
	}
	if c.MaxCommittedSizePerReady == 0 {
		c.MaxCommittedSizePerReady = 64 << 20
	}
	return nil
}

// Errors returned to callers of the core.
var (
	// ErrNotLeader: the call needs the leader; Status().Lead names it if known.
	ErrNotLeader = errors.New("raft: not the leader")
	// ErrProposalDropped: the leader refused the proposal (leadership
	// transfer in progress, uncommitted-size cap reached, or a
	// configuration change still pending); retry later.
	ErrProposalDropped = errors.New("raft: proposal dropped")
	// ErrNoLeader: a follower cannot forward a read with no known leader.
	ErrNoLeader = errors.New("raft: no known leader")
	// ErrBadTransferee: leadership can only go to another voter.
	ErrBadTransferee = errors.New("raft: transfer target is not another voter")
	// ErrInvalidMessage: Step ignored a malformed or misaddressed message.
	ErrInvalidMessage = errors.New("raft: invalid message ignored")
	// ErrBootstrapped: Bootstrap was called on a core that already has a
	// log or a configuration.
	ErrBootstrapped = errors.New("raft: already bootstrapped")
	// ErrNotMember: Step dropped a message from a node that is not a
	// member of this node's configuration (see "Who is heard" in doc.go).
	ErrNotMember = errors.New("raft: message from a node that is not a member ignored")
	// ErrNotFromLeader: Step dropped a TimeoutNow or a ReadIndex answer
	// that did not come from the leader this node follows, in its term.
	ErrNotFromLeader = errors.New("raft: message only the current leader may send ignored")
)
