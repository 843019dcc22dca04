package kv

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestConcurrentReadsDuringApply runs Get, Range, the token key and
// revocation reads and snapshot writes on other goroutines while entries
// are applied; run it with -race. Every value written is the revision of
// its write, so readers can check what they see is consistent; token key
// i's secret is 32 bytes of i, and token i is revoked before key i+1 is
// added.
func TestConcurrentReadsDuringApply(t *testing.T) {
	const entries = 4000
	d := newDriver(t, Config{MaxRangeLimit: 50})
	sess := d.open()
	stop := make(chan struct{})
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	reader := func(id int) {
		defer wg.Done()
		var lastRev uint64
		deadline := time.Now().Add(time.Minute)
		for i := 0; time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%3 == 1 {
				epoch := d.s.RevocationEpoch()
				kid, key, ok := d.s.CurrentTokenKey()
				if ok && !bytes.Equal(key, secret(32, byte(kid))) {
					errs <- fmt.Errorf("reader %d: token key %d is %x", id, kid, key)
					return
				}
				if ok && kid > 1 && (!d.s.Revoked(tokenID(byte(kid-1), 0)) || d.s.RevocationEpoch() < epoch) {
					errs <- fmt.Errorf("reader %d: token key %d without revocation %d, epoch %d", id, kid, kid-1, epoch)
					return
				}
				continue
			}
			if i%3 == 0 {
				kv, found, rev := d.s.Get([]byte(fmt.Sprintf("key/%03d", (i*7+id)%200)))
				if found && (string(kv.Value) != strconv.FormatUint(kv.ModRevision, 10) || kv.ModRevision > rev) {
					errs <- fmt.Errorf("reader %d: Get: %+v at revision %d", id, kv, rev)
					return
				}
				if rev < lastRev {
					errs <- fmt.Errorf("reader %d: revision went back from %d to %d", id, lastRev, rev)
					return
				}
				lastRev = rev
				continue
			}
			kvs, _, rev := d.s.Range([]byte("key/"), nil, 0)
			for j, kv := range kvs {
				if j > 0 && bytes.Compare(kvs[j-1].Key, kv.Key) >= 0 || kv.ModRevision > rev ||
					string(kv.Value) != strconv.FormatUint(kv.ModRevision, 10) {
					errs <- fmt.Errorf("reader %d: Range item %d: %+v at revision %d", id, j, kv, rev)
					return
				}
			}
		}
	}
	for id := range 3 {
		wg.Add(1)
		go reader(id)
	}
	snaps := make(chan *Snapshot, entries/500+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for sn := range snaps {
			if _, err := sn.WriteTo(io.Discard); err != nil {
				errs <- err
				return
			}
		}
	}()
	for i := range entries {
		rev := d.s.Revision() + 1
		op := put(uint64(i+1), fmt.Sprintf("key/%03d", i%200), strconv.FormatUint(rev, 10))
		if i%5 == 4 {
			op = del(uint64(i+1), fmt.Sprintf("key/%03d", (i*3)%200))
		}
		if r := d.batch(sess, uint64(i), op)[0]; r.Code != OK {
			t.Fatalf("entry %d: %+v", i, r)
		}
		if i%500 == 0 {
			snaps <- d.s.Snapshot()
		}
		if i%20 == 0 && i/20 < 200 {
			k := byte(i/20 + 1)
			d.apply(revokeCmd(tokenID(k-1, 0), 0))
			d.apply(tokenKeyCmd(uint64(k), secret(32, k)))
		}
	}
	close(stop)
	close(snaps)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
