// Package driverbugs lists deliberate bugs of the driver
// (raftnode/driver), each guarded by a flag that only the whole-node
// simulator's tests switch on (raftnode/internal/nodesim), to show that
// its checkers catch each one: checkers that cannot fail prove nothing.
//
// The package is internal to raftnode: nothing outside this module can
// import it, so no build of capraft can switch a bug on from outside.
// Every flag is false unless a test sets it; each hook in the driver is
// one read of a global bool, a branch that is always predicted.
//
// Tests that set a flag must not run in parallel with other tests of
// their binary (the flags are global) and must reset it (Set's return).
package driverbugs

// Flags are the injected bugs.
type Flags struct {
	// AckBeforePersist sends the messages that promise the disk holds
	// what they acknowledge (append acknowledgements, vote grants:
	// raft.Ready.MessagesAfterPersist) before the write they depend on.
	AckBeforePersist bool
	// ReadBeforeApplied releases a linearizable read as soon as its read
	// index is known, before the state machine has applied up to it.
	ReadBeforeApplied bool
	// UnknownAsDropped answers a proposal whose outcome the driver does
	// not know (it stopped, or a snapshot jumped over its entry) with
	// ErrDropped, "not applied, retry", instead of ErrOutcomeUnknown: a
	// client that takes it at its word writes again, and the write is
	// applied twice.
	UnknownAsDropped bool
	// CountWipedVoters takes every vote (pre-votes too) as if it came from
	// the storage the configuration counts for its voter: a voter that
	// lost its disk (and its vote, and its log) is counted as before, as
	// if disk-loss recovery did not exist.
	CountWipedVoters bool
	// InstallUnverified installs a snapshot a leader sent without the
	// state machine's verification and without checking its size and
	// checksum against the offer.
	InstallUnverified bool
}

// On holds the bugs switched on: none, outside tests.
var On Flags

// Set switches on the bugs f holds (and off the others) and returns a
// function that restores the previous flags.
func Set(f Flags) (restore func()) {
	prev := On
	On = f
	return func() { On = prev }
}
