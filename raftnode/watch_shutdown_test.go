package raftnode_test

import (
	"context"
	"testing"
	"time"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// closedWatcher is a Watcher that reports the code of its closed call.
type closedWatcher struct{ closed chan schema.ErrorCode }

func (w closedWatcher) Events(context.Context, schema.Watcher_events) error { return nil }

func (w closedWatcher) Closed(_ context.Context, call schema.Watcher_closed) error {
	select {
	case w.closed <- call.Args().Code():
	default:
	}
	return nil
}

// A node about to stop tells its watchers so (closed with shuttingDown)
// while their connections are still up, so that their clients resume on
// another node at once rather than find a dropped connection; the node's
// other services keep serving until it closes.
func TestWatchersAreToldWhenTheNodeStops(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := ctxT(t)
	id := c.leader()%3 + 1
	k := c.client(id)
	w := closedWatcher{closed: make(chan schema.ErrorCode, 1)}
	ex := rpc.NewExporter(nil)
	wcap := schema.Watcher(ex.Export(schema.Watcher_Methods(nil, w), w, nil))
	defer wcap.Release()
	f, rel := k.kv.Watch(ctx, func(p schema.KV_watch_Params) error {
		r, err := p.NewReq()
		if err != nil {
			return err
		}
		if err := r.SetPrefix([]byte("w/")); err != nil {
			return err
		}
		return p.SetWatcher(wcap.AddRef())
	})
	defer rel()
	res, err := f.Struct()
	if err != nil {
		t.Fatal(err)
	}
	if res.HasError() {
		e, _ := res.Error()
		m, _ := e.Message_()
		t.Fatalf("watch refused: %v %s", e.Code(), m)
	}

	if err := c.nodes[id].CloseWatches(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-w.closed:
		if code != schema.ErrorCode_shuttingDown {
			t.Fatalf("watch closed with %v, want shuttingDown", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watcher was not told the node is stopping")
	}
	k.openRetry(t, ctx)
	if _, err := k.put(ctx, "after", "v"); err != nil {
		t.Fatalf("a put through the node after its watches closed: %v", err)
	}
}
