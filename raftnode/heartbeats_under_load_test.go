package raftnode_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/rpc/rpctest"
)

// slowSyncFS wraps vfs.OS; once armed, every file Sync takes delay
// longer: a slow disk.
type slowSyncFS struct {
	vfs.FS
	delay time.Duration
	armed atomic.Bool
	slow  atomic.Int64 // Syncs delayed
}

func (f *slowSyncFS) wrap(file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return slowFile{file, f}, nil
}

func (f *slowSyncFS) Create(name string) (vfs.File, error) { return f.wrap(f.FS.Create(name)) }
func (f *slowSyncFS) OpenRW(name string) (vfs.File, error) { return f.wrap(f.FS.OpenRW(name)) }

type slowFile struct {
	vfs.File
	fs *slowSyncFS
}

func (f slowFile) Sync() error {
	if f.fs.armed.Load() {
		f.fs.slow.Add(1)
		time.Sleep(f.fs.delay) // the injected fault: a disk that takes this long
	}
	return f.File.Sync()
}

// Heartbeats and votes travel on a lane of their own: with a follower's
// append lane saturated by its slow disk (every fsync takes 2.5 heartbeat
// intervals while the leader is loaded with writes), the follower still
// hears the leader and no election happens: no node changes role, term
// or leader during the load, and the follower catches up afterwards.
func TestHeartbeatsArriveWhileAFollowersAppendLaneIsSaturated(t *testing.T) {
	// Long enough that a loaded machine under -race does not stall a
	// node for an election timeout (10 heartbeats) by itself: at 20 ms a
	// CI run with other work on both cores saw spurious elections.
	const heartbeat = 50 * time.Millisecond
	bufs := map[uint64]*rpctest.LogBuffer{}
	fss := map[uint64]*slowSyncFS{}
	for id := uint64(1); id <= 3; id++ {
		_, bufs[id] = rpctest.BufferLogger(hclog.Info)
		fss[id] = &slowSyncFS{FS: vfs.OS, delay: 5 * heartbeat / 2}
	}
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: bufs[cfg.ID], Level: hclog.Info}).With("node", cfg.ID)
		cfg.StorageKnobs = &storeknobs.Knobs{FS: fss[cfg.ID]}
		cfg.HeartbeatInterval, cfg.ElectionTimeout = heartbeat, 10*heartbeat
	})
	t.Cleanup(func() {
		if t.Failed() {
			for id, b := range bufs {
				t.Logf("node %d log:\n%s", id, b)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead := c.leader()
	f := lead%3 + 1
	before := map[uint64]raftnode.NodeStatus{}
	roleChanges := map[uint64]int{}
	for id, n := range c.nodes {
		before[id] = n.Status(ctx)
		roleChanges[id] = strings.Count(bufs[id].String(), "role changed")
	}
	fss[f].armed.Store(true)

	// The load: writers through the leader until the follower's append
	// lane has been seen backed up many times over.
	const writers = 8
	var stop atomic.Bool
	var wg sync.WaitGroup
	var acked atomic.Int64
	for w := range writers {
		k := c.client(lead)
		k.openRetry(t, ctx)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				if _, err := k.put(ctx, fmt.Sprintf("w%d-%d", w, i), strings.Repeat("v", 512)); err == nil {
					acked.Add(1)
				}
			}
		}()
	}
	// Saturation: the leader has sent the follower appends it has not
	// taken yet (the data lane's calls in flight, or queued behind them),
	// seen in many separate samples.
	backedUp := 0
	rpctest.Eventually(t, 30*time.Second, "the follower's append lane backed up under the load", func() bool {
		st := raftnode.TransportStats(c.nodes[lead], f).Lanes[transport.LaneData]
		if st.InFlight+st.Queued > 0 {
			backedUp++
		}
		return backedUp >= 50 && fss[f].slow.Load() >= 50
	})
	stop.Store(true)
	wg.Wait()
	t.Logf("%d writes acknowledged; %d slow fsyncs on the follower", acked.Load(), fss[f].slow.Load())
	fss[f].armed.Store(false)

	for id, n := range c.nodes {
		st := n.Status(ctx)
		if st.Term != before[id].Term || st.Leader != lead {
			t.Errorf("node %d: leader %d in term %d after the load, want leader %d in term %d", id, st.Leader, st.Term, lead, before[id].Term)
		}
		if got := strings.Count(bufs[id].String(), "role changed"); got != roleChanges[id] {
			t.Errorf("node %d changed role %d times during the load (a spurious election)", id, got-roleChanges[id])
		}
	}
	rpctest.Eventually(t, 20*time.Second, "the follower catches up", func() bool {
		return c.nodes[f].Status(ctx).Applied >= c.nodes[lead].Status(ctx).Commit
	})
}
