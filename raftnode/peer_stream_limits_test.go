package raftnode_test

import (
	"strings"
	"testing"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// A connection holding the Raft capability opens a bounded number of
// streams, however many times it asks for the capability: the bound is
// the connection's, not each capability's.
func TestRaftStreamsAreBoundedPerConnection(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := ctxT(t)
	cc, err := rpc.Dial(ctx, c.addrs[1], rpc.DialConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	raftCap := func() schema.Raft {
		rf, rel := cc.Node().Raft(ctx, nil)
		t.Cleanup(rel)
		res, err := rf.Struct()
		if err != nil {
			t.Fatal(err)
		}
		return res.Raft()
	}
	caps := []schema.Raft{raftCap(), raftCap()}
	// The streams are kept to the end: a released one frees its slot.
	var streams []schema.PeerStream
	defer func() {
		for _, st := range streams {
			st.Release()
		}
	}()
	open := func(rc schema.Raft) error {
		of, orel := rc.Open(ctx, func(p schema.Raft_open_Params) error {
			h, err := p.NewHeader()
			if err != nil {
				return err
			}
			h.SetClusterId(raftnode.ClusterID("capraft"))
			h.SetFrom(2)
			h.SetTo(1)
			return nil
		})
		defer orel()
		res, err := of.Struct()
		if err == nil {
			streams = append(streams, res.Stream().AddRef())
		}
		return err
	}
	// Far more than any bound a legitimate peer needs (one stream per
	// lane per connection): one capability opens streams until refused,
	// then the other must be refused too.
	const tries = 64
	opened := 0
	for ; opened < tries; opened++ {
		if err := open(caps[0]); err != nil {
			checkOverloaded(t, "a stream beyond the bound", err)
			break
		}
	}
	if opened == tries {
		t.Fatalf("%d streams opened on one connection: no bound", tries)
	}
	checkOverloaded(t, "a stream on another Raft capability of the same connection", open(caps[1]))
	t.Logf("%d streams opened before the bound", opened)
}

// checkOverloaded fails the test unless err refuses a stream as
// overloaded, naming the bound.
func checkOverloaded(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !exc.IsType(err, exc.Overloaded) || !strings.Contains(err.Error(), "open at once (") {
		t.Fatalf("%s: %v, want overloaded naming the bound", what, err)
	}
}
