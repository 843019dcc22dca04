package raftnode_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// snapshotOffer is what a forged or stale leader says of a snapshot.
type snapshotOffer struct {
	from, to, term uint64
	meta           raft.SnapshotMeta
	size           uint64
	sum            uint32
}

// streamSnapshot plays a leader streaming a snapshot to the node at addr
// (of the test clusters, which have no security and the default cluster
// name) over a connection of its own, as the transport does: the offer,
// the data in writes of chunk bytes, then finish. It returns the first
// error a step returned.
func streamSnapshot(ctx context.Context, addr string, o snapshotOffer, data []byte, chunk int) error {
	cc, err := rpc.Dial(ctx, addr, rpc.DialConfig{})
	if err != nil {
		return err
	}
	var releases []func()
	defer func() {
		cc.Close()
		for _, r := range releases {
			r()
		}
	}()
	rf, rrel := cc.Node().Raft(ctx, nil)
	releases = append(releases, rrel)
	of, orel := rf.Raft().InstallSnapshot(ctx, func(p schema.Raft_installSnapshot_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		h.SetClusterId(raftnode.ClusterID("capraft"))
		h.SetFrom(o.from)
		h.SetTo(o.to)
		off, err := p.NewOffer()
		if err != nil {
			return err
		}
		off.SetTerm(o.term)
		off.SetSize(o.size)
		off.SetChecksum(o.sum)
		m, err := off.NewMeta()
		if err != nil {
			return err
		}
		m.SetIndex(o.meta.Index)
		m.SetTerm(o.meta.Term)
		cs, err := m.NewConfState()
		if err != nil {
			return err
		}
		return setVotersList(cs, o.meta.ConfState.Voters)
	})
	releases = append(releases, orel)
	res, err := of.Struct()
	if err != nil {
		return fmt.Errorf("offer: %w", err)
	}
	st := res.Stream()
	for off := 0; off < len(data); off += chunk {
		b := data[off:min(off+chunk, len(data))]
		wf, wrel := st.Write(ctx, func(p schema.SnapshotStream_write_Params) error { return p.SetData(b) })
		_, err := wf.Struct()
		wrel()
		if err != nil {
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	ff, frel := st.Finish(ctx, nil)
	releases = append(releases, frel)
	if _, err := ff.Struct(); err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	return nil
}

func setVotersList(cs schema.ConfState, ids []uint64) error {
	if len(ids) == 0 {
		return errors.New("test: a snapshot offer without voters")
	}
	l, err := cs.NewVoters(int32(len(ids)))
	if err != nil {
		return err
	}
	for i, id := range ids {
		l.Set(i, id)
	}
	return nil
}
