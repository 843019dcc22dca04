package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMutexNeverHasTwoHoldersUnderFaults: clients, each with its own
// connection and session, loop lock -> write a shared record "enter T"
// -> write it "exit T" -> unlock, where T is the lock's fencing token
// and each write is a transaction guarded by the lock (IsOwner) and by
// the record's last revision, while nodes (the leader or a follower,
// drawn from the seed) are killed with -9 and restarted, and after each
// restart a client dies holding the lock (its session is abandoned: the
// lock passes on when its lease expires). A watch of the
// whole history then checks that whenever the record says "enter T",
// the key created at T was first in the lock's queue (no other session
// held the lock), that the tokens of successive holders strictly
// increase, and that every "exit T" follows its own "enter T".
func TestMutexNeverHasTwoHoldersUnderFaults(t *testing.T) {
	e := newEnv(t, envConfig{})
	e.waitLeader(e.c.IDs(), 10*time.Second)
	const (
		prefix   = "mutex-e2e/"
		name     = prefix + "lock"
		record   = prefix + "record"
		nClients = 4
		maxIters = 5000 // per client
		rounds   = 4    // kill and restart
		ttl      = 3 * time.Second
	)
	addrs := e.c.Addrs()
	admin := e.client(addrs...)

	// The checker's watch starts before any lock is taken.
	ctx, cancel := opCtx()
	start, err := admin.Put(ctx, prefix+"start", []byte("x"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	var (
		histMu sync.Mutex
		hist   []watchEvent
		upTo   atomic.Uint64
	)
	watchErr := make(chan error, 1)
	go func() {
		for b := range admin.Watch(wctx, prefix, start+1) {
			if b.err != nil {
				watchErr <- b.err
				return
			}
			histMu.Lock()
			hist = append(hist, b.events...)
			histMu.Unlock()
			upTo.Store(b.upTo)
		}
		watchErr <- nil
	}()

	var (
		entered, fenced, failed, crashed atomic.Int64
		crash                            atomic.Bool // the next client to enter dies holding the lock
		wg                               sync.WaitGroup
	)
	cctx, stop := context.WithCancel(context.Background())
	defer stop()
	fail := func(client int, step string, err error) {
		if n := failed.Add(1); n <= 10 {
			t.Logf("client %d: %s: %v", client, step, err) // faults make some; the first few say which
		}
	}
	for i := range nClients {
		rot := append(append([]string(nil), addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		l := e.lockClient(name, ttl, rot...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < maxIters && cctx.Err() == nil; it++ {
				lctx, cancel := context.WithTimeout(cctx, 30*time.Second)
				tok, err := l.Lock(lctx)
				cancel()
				if err != nil {
					if cctx.Err() == nil {
						fail(i, "lock", err)
					}
					backoff(cctx)
					continue
				}
				octx, cancel := opCtx()
				_, mod, err := l.Read(octx, record)
				var ok bool
				if err == nil {
					ok, mod, err = l.GuardedPut(octx, record, mod, fmt.Appendf(nil, "enter %d client=%d iter=%d", tok, i, it))
				}
				if err == nil && ok {
					entered.Add(1)
					if crash.CompareAndSwap(true, false) {
						// Die holding the lock: the next holder waits for the TTL.
						cancel()
						l.Crash()
						crashed.Add(1)
						continue
					}
					ok, _, err = l.GuardedPut(octx, record, mod, fmt.Appendf(nil, "exit %d client=%d iter=%d", tok, i, it))
				}
				cancel()
				switch {
				case err != nil:
					fail(i, "critical section", err)
				case !ok:
					fenced.Add(1) // the lock was lost (its session ended), or the record moved: the checker says which
				}
				uctx, cancel := opCtx()
				if err := l.Unlock(uctx); err != nil && !sessionLost(err) {
					fail(i, "unlock", err)
				}
				cancel()
			}
		}()
	}

	progress := func(n int64, what string) {
		t.Helper()
		target := entered.Load() + n
		e.waitFor(60*time.Second, what, func() (bool, string) {
			return entered.Load() >= target, fmt.Sprintf("%d critical sections entered", entered.Load())
		})
	}
	progress(10, "critical sections before the faults")
	for round := range rounds {
		lead := e.waitLeader(e.c.IDs(), 10*time.Second)
		victim, what := lead, "leader"
		if e.rng.Intn(2) == 1 {
			victim = e.c.IDs()[e.rng.Intn(len(e.c.IDs()))]
			what = "node"
		}
		if err := e.c.Kill(victim); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed %s %d with -9 (leader was %d)", round, what, victim, lead)
		progress(5, "critical sections with a node down")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := e.c.Restart(ctx, victim)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		progress(5, "critical sections after the restart")
		crash.Store(true)
		progress(5, "critical sections after a holder died")
	}
	stop()
	wg.Wait()

	// Let the watch catch up with everything written, then check.
	ctx, cancel = opCtx()
	end, err := admin.Put(ctx, prefix+"end", []byte("x"))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	e.waitFor(30*time.Second, "the checker's watch up to the end", func() (bool, string) {
		select {
		case err := <-watchErr:
			t.Fatalf("the checker's watch ended: %v", err)
		default:
		}
		return upTo.Load() >= end, fmt.Sprintf("up to %d of %d", upTo.Load(), end)
	})
	stopWatch()
	histMu.Lock()
	defer histMu.Unlock()
	enters := checkMutexHistory(t, hist, name+"/", record)
	t.Logf("%d critical sections entered (%d in the history), %d holders died holding the lock, %d fenced off, %d failed steps",
		entered.Load(), enters, crashed.Load(), fenced.Load(), failed.Load())
	if int64(enters) < entered.Load() {
		t.Fatalf("the history holds %d enters, the clients made %d", enters, entered.Load())
	}
}

// checkMutexHistory replays the lock's queue (the keys under queue, in
// revision order) and the record's writes, and fails the test for an
// "enter T" whose key (created at T) was not first in the queue, a token
// not above the last holder's, or an "exit T" not right after "enter
// T". It returns how many enters it saw.
func checkMutexHistory(t *testing.T, hist []watchEvent, queue, record string) int {
	t.Helper()
	keys := map[string]uint64{} // queued key -> create revision
	var last uint64             // the last holder's token
	prev := ""                  // the record's last value
	enters := 0
	for _, ev := range hist {
		switch {
		case strings.HasPrefix(ev.key, queue):
			if ev.del {
				delete(keys, ev.key)
			} else if _, ok := keys[ev.key]; !ok {
				keys[ev.key] = ev.rev // a queue key is written once: at its creation
			}
		case ev.key == record && !ev.del:
			var kind string
			var tok uint64
			if _, err := fmt.Sscanf(ev.value, "%s %d", &kind, &tok); err != nil {
				t.Fatalf("revision %d: record %q: %v", ev.rev, ev.value, err)
			}
			switch kind {
			case "enter":
				var head uint64
				found := false
				for _, cr := range keys {
					if head == 0 || cr < head {
						head = cr
					}
					found = found || cr == tok
				}
				switch {
				case !found:
					t.Errorf("revision %d: %q, but no queued key was created at %d", ev.rev, ev.value, tok)
				case head != tok:
					t.Errorf("revision %d: %q while the key created at %d was first in the queue: two holders", ev.rev, ev.value, head)
				case tok <= last:
					t.Errorf("revision %d: %q after a holder with token %d: tokens must increase", ev.rev, ev.value, last)
				}
				last = tok
				enters++
			case "exit":
				if want := fmt.Sprintf("enter %d ", tok); !strings.HasPrefix(prev, want) {
					t.Errorf("revision %d: %q right after %q", ev.rev, ev.value, prev)
				}
			default:
				t.Fatalf("revision %d: record %q", ev.rev, ev.value)
			}
			prev = ev.value
		}
	}
	return enters
}
