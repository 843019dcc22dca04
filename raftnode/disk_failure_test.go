package raftnode_test

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// failFS wraps vfs.OS; once armed, every file Sync and WriteAt after the
// first `after` ones fails.
type failFS struct {
	vfs.FS
	armed      atomic.Bool
	after      int64
	syncs      atomic.Int64
	writes     atomic.Int64
	failWrites bool
	failed     atomic.Int64
}

var errInjected = errors.New("injected disk failure")

func (f *failFS) wrap(file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return failFile{file, f}, nil
}

func (f *failFS) Create(name string) (vfs.File, error) { return f.wrap(f.FS.Create(name)) }
func (f *failFS) OpenRW(name string) (vfs.File, error) { return f.wrap(f.FS.OpenRW(name)) }

type failFile struct {
	vfs.File
	fs *failFS
}

func (f failFile) Sync() error {
	if f.fs.armed.Load() && !f.fs.failWrites && f.fs.syncs.Add(1) > f.fs.after {
		f.fs.failed.Add(1)
		return errInjected
	}
	return f.File.Sync()
}

func (f failFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.armed.Load() && f.fs.failWrites && f.fs.writes.Add(1) > f.fs.after {
		f.fs.failed.Add(1)
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

// A disk failure (fsync or write) on the leader or on a follower stops
// that node cleanly: Done is closed, Err says why, its requests are
// answered with shuttingDown, Close returns, and the other two nodes keep
// serving writes.
func TestDiskFailureStopsNodeCleanly(t *testing.T) {
	for _, tc := range []struct {
		name       string
		leader     bool
		failWrites bool
	}{
		{"leader-sync", true, false},
		{"follower-sync", false, false},
		{"leader-write", true, true},
		{"follower-write", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fss := map[uint64]*failFS{}
			for id := uint64(1); id <= 3; id++ {
				fss[id] = &failFS{FS: vfs.OS, after: 3, failWrites: tc.failWrites}
			}
			c := newTestCluster(t, 3, func(cfg *raftnode.Config) {
				cfg.StorageKnobs = &storeknobs.Knobs{FS: fss[cfg.ID]}
				cfg.RequestTimeout = 2 * time.Second
			})
			lead := c.leader()
			victim := lead
			if !tc.leader {
				victim = lead%3 + 1
			}
			survivor := victim%3 + 1
			ctx := ctxT(t)
			kv := c.client(victim)
			kv.openRetry(t, ctx)
			ks := c.client(survivor)
			ks.openRetry(t, ctx)
			fss[victim].armed.Store(true)
			n := c.nodes[victim]
			for i := uint64(1); i <= 200; i++ {
				if _, err := ks.putCode(ctx, i, fmt.Sprintf("k%d", i), "v"); err != nil && !isCode(err, schema.ErrorCode_unavailable, schema.ErrorCode_outcomeUnknown) {
					t.Fatalf("put through the survivor: %v", err)
				}
				if isClosedCh(n.Done()) {
					break
				}
			}
			select {
			case <-n.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("node %d did not stop after its disk failed (%d injected failures)", victim, fss[victim].failed.Load())
			}
			if n.Err() == nil || !errors.Is(n.Err(), errInjected) && !strings.Contains(n.Err().Error(), errInjected.Error()) {
				t.Errorf("Err after a disk failure: %v", n.Err())
			}
			if _, err := kv.putCode(ctx, 1, "on-victim", "v"); !isCode(err, schema.ErrorCode_shuttingDown) {
				t.Errorf("write to the stopped node: %v, want shuttingDown", err)
			}
			if _, _, _, _, err := kv.getCode(ctx, "k1", false); !isCode(err, schema.ErrorCode_shuttingDown) {
				t.Errorf("linearizable read from the stopped node: %v, want shuttingDown", err)
			}
			if _, _, _, _, err := kv.getCode(ctx, "k1", true); !isCode(err, schema.ErrorCode_shuttingDown) {
				t.Errorf("serializable read from the stopped node: %v, want shuttingDown", err)
			}
			if st := n.Status(ctx); st.Role != schema.Role_stopped || st.StopReason == "" {
				t.Errorf("status of the stopped node: role %v reason %q", st.Role, st.StopReason)
			}
			// The two others keep serving.
			rpctest.Eventually(t, 10*time.Second, "the survivors serve writes", func() bool {
				_, err := ks.putCode(ctx, 1000, "after-failure", "v")
				return err == nil
			})
			closed := make(chan struct{})
			go func() { n.Close(); close(closed) }()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close of the stopped node hangs")
			}
		})
	}
}

func isClosedCh(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
