package services

import (
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// A revision whose events alone exceed a watcher's queue bound (a large
// value, a big transaction, a lease's many keys) is still delivered to a
// watcher that keeps up: the bound is on how far a watcher falls behind,
// and a watch that could never get past one revision would be cancelled
// again at every resume.
func TestARevisionLargerThanTheQueueBoundIsDelivered(t *testing.T) {
	sv, ctx := singleNode(t, func(c *Config) { c.Watch = watch.Config{QueueBytes: 16 << 10} })
	k := schema.KV(sv.kvCapability(rpc.NewExporter(nil), kvScope{}))
	defer k.Release()
	wr := newWriter(t, sv, ctx)
	w := newTestWatcher(false)
	c := schema.Watcher_ServerToClient(w)
	defer c.Release()
	h, _, err := watchOn(ctx, k, c, func(r schema.WatchRequest) { r.SetPrefix([]byte("big/")) })
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	wr.write(wput("big/1", strings.Repeat("v", 64<<10)))
	wr.write(wput("big/2", "small"))
	rpctest.Eventually(t, 30*time.Second, "the watcher up to revision 2, or closed", func() bool { return w.upTo() >= 2 || w.isClosed() })
	if w.isClosed() {
		t.Fatalf("the watch was closed: %s", w.closed)
	}
	if got := w.events(t); len(got) != 2 {
		t.Fatalf("got %d events, want 2", len(got))
	}
}
