package driver

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/capraft/capraft/raftnode/raft"
)

// forceNewCluster makes this node the only voter of its cluster, keeping
// its data: the way out when a majority of the voters lost their data for
// good (see docs/OPERATIONS.md, "A majority lost its data"). Every entry
// in its log counts as committed, even one the old cluster never
// committed; the state machine applies them all and the node writes a
// snapshot at its last entry whose configuration names itself alone (with
// its storage incarnation). Other nodes are added back afterwards with
// member add. It runs before the core starts, on a node that holds data.
func (d *Driver) forceNewCluster() error {
	last, _ := d.store.LastIndex()
	snapMeta, hasSnap := d.store.SnapshotMeta()
	if !hasSnap && last == 0 {
		return errors.New("--force-new-cluster: this node holds no data to start a cluster from; start it without the flag")
	}
	from := snapMeta.Index + 1
	for lo := from; lo <= last; {
		ents, err := d.store.Entries(lo, last+1, 64<<20)
		if err != nil {
			return fmt.Errorf("--force-new-cluster: read entries %d-%d: %w", lo, last, err)
		}
		// Entries the state machine holds already are ignored by it.
		if _, err := d.sm.Apply(machineEntries(nil, ents)); err != nil {
			return fmt.Errorf("--force-new-cluster: apply entries %d-%d: %w", lo, ents[len(ents)-1].Index, err)
		}
		lo = ents[len(ents)-1].Index + 1
	}
	term, err := d.store.Term(last)
	if err != nil {
		return fmt.Errorf("--force-new-cluster: term of entry %d: %w", last, err)
	}
	addrs := map[uint64]string{d.cfg.ID: d.cfg.Advertise}
	smSnap, err := d.sm.Snapshot()
	if err != nil {
		return fmt.Errorf("--force-new-cluster: snapshot the state machine: %w", err)
	}
	var buf bytes.Buffer
	err = writeSnapshot(&buf, addrs, smSnap)
	smSnap.Release()
	if err != nil {
		return fmt.Errorf("--force-new-cluster: snapshot the state: %w", err)
	}
	inc := d.store.Incarnation()
	sn := raft.Snapshot{
		Meta: raft.SnapshotMeta{Index: last, Term: term, ConfState: raft.ConfState{
			Voters: []uint64{d.cfg.ID}, Incarnations: []raft.MemberIncarnation{{ID: d.cfg.ID, Incarnation: inc}},
		}},
		Data: buf.Bytes(),
	}
	hs, _, err := d.store.InitialState()
	if err != nil {
		return fmt.Errorf("--force-new-cluster: %w", err)
	}
	hs.Commit = last
	if hs.Term < term {
		hs.Term, hs.Vote = term, 0
	}
	if sn.Meta.Index == snapMeta.Index {
		// Nothing after the snapshot: a snapshot must be newer than the
		// one it replaces, so take the configuration in a new term's
		// empty entry, then snapshot at it.
		e := raft.Entry{Index: last + 1, Term: hs.Term + 1}
		hs.Term, hs.Vote, hs.Commit = e.Term, 0, e.Index
		if err := d.store.Save(hs, []raft.Entry{e}, nil); err != nil {
			return fmt.Errorf("--force-new-cluster: %w", err)
		}
		if _, err := d.sm.Apply(machineEntries(nil, []raft.Entry{e})); err != nil {
			return fmt.Errorf("--force-new-cluster: %w", err)
		}
		sn.Meta.Index, sn.Meta.Term = e.Index, e.Term
	}
	if err := d.store.Save(hs, nil, &sn); err != nil {
		return fmt.Errorf("--force-new-cluster: write the new configuration: %w", err)
	}
	if err := d.restore(sn); err != nil {
		return fmt.Errorf("--force-new-cluster: %w", err)
	}
	d.log.Warn("forced a new cluster of this node alone from its data: every entry in its log is now committed. "+
		"Remove --force-new-cluster before the next restart, and add the other nodes back with `raftctl member add` "+
		"(their data directories emptied first)", "index", sn.Meta.Index)
	return nil
}
