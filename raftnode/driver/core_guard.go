package driver

import "github.com/capraft/capraft/raftnode/raft"

// guardedCore is the Raft core as the node calls it. The core panics when
// a read of its storage fails (see "Storage errors" in raftnode/raft) or
// one of its invariants breaks; the node must then stop cleanly rather
// than crash or answer from a partial view, and run recovers that panic
// (recoverCorePanic). Only that one: each method here counts the call
// into the core under way, a call that panicked never uncounts itself,
// and run recovers a panic only while a call is counted. A panic in the
// node's own code is a bug and crashes the process.
//
// The getters that only read a field (Lead, Role, Term, ConfState) cannot
// panic and are not counted. Only the loop goroutine calls the core once
// the loop runs; New calls it before.
type guardedCore struct {
	c     *raft.Core
	calls int // calls into the core that have not returned
}

// panicked reports whether a call into the core did not return: the
// panic under way was raised inside the core.
func (g *guardedCore) panicked() bool { return g.calls > 0 }

func (g *guardedCore) Tick() { g.calls++; g.c.Tick(); g.calls-- }

func (g *guardedCore) Step(m raft.Message) error {
	g.calls++
	err := g.c.Step(m)
	g.calls--
	return err
}

func (g *guardedCore) ProposeBatch(data [][]byte) error {
	g.calls++
	err := g.c.ProposeBatch(data)
	g.calls--
	return err
}

func (g *guardedCore) ProposeConfChange(cc raft.ConfChange) error {
	g.calls++
	err := g.c.ProposeConfChange(cc)
	g.calls--
	return err
}

func (g *guardedCore) Bootstrap(s raft.Snapshot) error {
	g.calls++
	err := g.c.Bootstrap(s)
	g.calls--
	return err
}

func (g *guardedCore) TransferLeadership(to uint64) error {
	g.calls++
	err := g.c.TransferLeadership(to)
	g.calls--
	return err
}

func (g *guardedCore) ReadIndex(ctx []byte) error {
	g.calls++
	err := g.c.ReadIndex(ctx)
	g.calls--
	return err
}

func (g *guardedCore) ReportUnreachable(id uint64) { g.calls++; g.c.ReportUnreachable(id); g.calls-- }

func (g *guardedCore) ReportSnapshot(id, index uint64, status raft.SnapshotStatus) {
	g.calls++
	g.c.ReportSnapshot(id, index, status)
	g.calls--
}

func (g *guardedCore) CommitUnannounced() bool {
	g.calls++
	ok := g.c.CommitUnannounced()
	g.calls--
	return ok
}

func (g *guardedCore) AnnounceCommit() { g.calls++; g.c.AnnounceCommit(); g.calls-- }

func (g *guardedCore) HasReady() bool {
	g.calls++
	ok := g.c.HasReady()
	g.calls--
	return ok
}

func (g *guardedCore) Ready() raft.Ready {
	g.calls++
	rd := g.c.Ready()
	g.calls--
	return rd
}

func (g *guardedCore) Advance() { g.calls++; g.c.Advance(); g.calls-- }

func (g *guardedCore) Status() raft.Status {
	g.calls++
	st := g.c.Status()
	g.calls--
	return st
}

func (g *guardedCore) LastIndex() uint64 {
	g.calls++
	i := g.c.LastIndex()
	g.calls--
	return i
}

func (g *guardedCore) Lead() uint64              { return g.c.Lead() }
func (g *guardedCore) Role() raft.StateType      { return g.c.Role() }
func (g *guardedCore) Term() uint64              { return g.c.Term() }
func (g *guardedCore) ConfState() raft.ConfState { return g.c.ConfState() }
