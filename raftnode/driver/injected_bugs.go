package driver

import (
	"io"

	"github.com/capraft/capraft/raftnode/internal/driverbugs"
	"github.com/capraft/capraft/raftnode/raft"
)

// What the injected bugs (raftnode/internal/driverbugs) need beyond a
// flag at their site. Production never switches them on.

// outcomeUnknown is the answer to a proposal whose outcome the driver
// does not know: ErrOutcomeUnknown (ErrDropped with the injected bug
// UnknownAsDropped).
func outcomeUnknown() error {
	if driverbugs.On.UnknownAsDropped {
		return ErrDropped
	}
	return ErrOutcomeUnknown
}

// countedIncarnation is the incarnation of m's sender: with the
// injected bug CountWipedVoters, on a vote, the one the configuration
// counts for it, whatever storage it answers from (pre-votes too).
func (d *Driver) countedIncarnation(m raft.Message) uint64 {
	if m.Type != raft.MsgVoteResp {
		return m.Incarnation
	}
	if rec, ok := d.core.ConfState().IncarnationOf(m.From); ok {
		return rec
	}
	return m.Incarnation
}

// discardStream reads a snapshot's data without verifying it (the
// injected bug InstallUnverified).
func discardStream(r io.Reader, _ uint64) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
