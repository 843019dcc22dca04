package raftnode_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

func transferLeadership(ctx context.Context, c *testCluster, via, to uint64) error {
	cc := rpctest.Dial(c.t, c.addrs[via], rpc.DialConfig{})
	af, arel := cc.Node().Admin(ctx, nil)
	defer arel()
	f, rel := af.Admin().TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(to); return nil })
	defer rel()
	r, err := f.Struct()
	if err != nil {
		return err
	}
	if !r.HasError() {
		return nil
	}
	// Read the error before the result is released (adminCall in
	// cluster_test.go reads it after: a use after release).
	e, err := r.Error()
	if err != nil {
		return err
	}
	msg, _ := e.Message_()
	return &codeError{e.Code(), msg}
}

// Leadership moves many times (Admin.transferLeadership) while writers
// put through every node, retrying unknown outcomes with the same session
// and sequence number: every key ends with exactly as many versions as
// writes acknowledged (each applied exactly once), acknowledged revisions
// are distinct, a retry of an applied write returns its first revision,
// and a write answered "unavailable" (not applied) is not visible before
// its retry.
func TestTransferUnderLoadExactlyOnce(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = time.Second })
	c.leader()
	ctx := ctxT(t)
	const writers, perWriter = 9, 60
	type ack struct {
		key string
		seq uint64
		rev uint64
	}
	var mu sync.Mutex
	var acks []ack
	var problems []string
	unknown, dropped := 0, 0
	report := func(format string, args ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	clients := make([]*kvClient, writers)
	for w := range writers {
		clients[w] = c.client(uint64(w%3 + 1))
		clients[w].openRetry(t, ctx)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := clients[w]
			key := fmt.Sprintf("w%d", w)
			for seq := uint64(1); seq <= perWriter; seq++ {
				var revs []uint64
				// A leader refuses writes at once while it hands
				// leadership over, so retries are bounded in time,
				// not in number.
				giveUp := time.Now().Add(10 * time.Second)
				for {
					if time.Now().After(giveUp) {
						report("%s seq %d: no success within 10s", key, seq)
						return
					}
					rev, err := k.putCode(ctx, seq, key, strconv.FormatUint(seq, 10))
					if err == nil {
						for _, r := range revs {
							if r != rev {
								report("%s seq %d: retry returned revision %d, an earlier attempt %d", key, seq, rev, r)
							}
						}
						mu.Lock()
						acks = append(acks, ack{key, seq, rev})
						mu.Unlock()
						break
					}
					code, ok := errCode(err)
					switch {
					case ok && code == schema.ErrorCode_outcomeUnknown:
						mu.Lock()
						unknown++
						mu.Unlock()
					case ok && code == schema.ErrorCode_unavailable:
						mu.Lock()
						dropped++
						mu.Unlock()
						// "Not applied": the key must not show this seq yet.
						if v, _, _, found, gerr := k.getCode(ctx, key, false); gerr == nil && found && v == strconv.FormatUint(seq, 10) {
							report("%s seq %d: answered %v but the write is visible", key, seq, err)
						}
					default:
						report("%s seq %d: unexpected error %v", key, seq, err)
						return
					}
				}
			}
		}()
	}
	// Move leadership around while the writers run.
	transfers := 0
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 10 && time.Now().Before(deadline); i++ {
		lead := c.leader()
		via := uint64(rng.IntN(3) + 1) // through the leader or a follower
		if err := transferLeadership(ctx, c, via, 0); err == nil {
			transfers++
		} else {
			t.Logf("transfer %d via %d (leader %d): %v", i, via, lead, err)
		}
	}
	close(stop)
	wg.Wait()
	if transfers < 3 {
		t.Errorf("only %d leadership transfers succeeded; the test meant to exercise them", transfers)
	}
	t.Logf("%d transfers, %d acked writes, %d unknown outcomes, %d unavailable", transfers, len(acks), unknown, dropped)
	for _, p := range problems {
		t.Error(p)
	}
	seen := map[uint64]ack{}
	for _, a := range acks {
		if o, dup := seen[a.rev]; dup {
			t.Errorf("revision %d acknowledged for %s seq %d and %s seq %d", a.rev, o.key, o.seq, a.key, a.seq)
		}
		seen[a.rev] = a
	}
	k := c.client(c.leader())
	for w := range writers {
		key := fmt.Sprintf("w%d", w)
		v, version, _, found, err := k.getCode(ctx, key, false)
		if err != nil || !found {
			t.Fatalf("%s: %v %v", key, found, err)
		}
		if version != perWriter || v != strconv.Itoa(perWriter) {
			t.Errorf("%s: version %d value %q after %d acknowledged puts (seed %d)", key, version, v, perWriter, seed)
		}
	}
}
