package client_test

import (
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/capraft/capraft/client"
)

// A counter incremented by transactions guarded on its mod revision,
// from several clients at once, ends equal to the number of transactions
// that succeeded: none is lost, none applied twice.
func TestTxnCounterUnderContention(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	setup := newClient(t, addr)
	if _, err := setup.Put(ctx(t), "ctr", []byte("0")); err != nil {
		t.Fatal(err)
	}
	const workers, tries = 4, 25
	var mu sync.Mutex
	won := 0
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		c := newClient(t, addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tries {
				kv, err := c.Get(ctx(t), "ctr")
				if err != nil {
					errs <- err
					return
				}
				n, _ := strconv.Atoi(string(kv.Value))
				resp, err := c.Txn(ctx(t)).
					If(client.ModRevision("ctr").Equal(kv.ModRevision)).
					Then(client.OpPut("ctr", []byte(strconv.Itoa(n+1)))).
					Commit()
				if err != nil {
					errs <- err
					return
				}
				if resp.Succeeded {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	kv, err := setup.Get(ctx(t), "ctr")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := strconv.Atoi(string(kv.Value)); got != won || won == 0 {
		t.Fatalf("counter %d after %d successful transactions", got, won)
	}
}

// A transaction's response says which branch ran and answers each of its
// operations; one that only reads runs without a session; a key written
// twice is refused before anything is sent.
func TestTxnBranchesAndResults(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newClient(t, addr)
	if _, err := c.Put(ctx(t), "a/1", []byte("one")); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Txn(ctx(t)).
		If(client.Value("a/1").Equal([]byte("one")), client.Absent("a/2")).
		Then(client.OpPut("a/2", []byte("two")), client.OpDelete("a/1"), client.OpRange("a/", 0), client.OpGet("a/1")).
		Else(client.OpGet("a/1")).
		Commit()
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Succeeded || resp.Replayed || len(resp.Results) != 4 {
		t.Fatalf("response %+v", resp)
	}
	if r := resp.Results[1]; !r.Found || string(r.KV.Value) != "one" {
		t.Errorf("delete: %+v", r)
	}
	if p := resp.Results[2].Page; len(p.KVs) != 1 || p.KVs[0].Key != "a/2" || p.KVs[0].ModRevision != resp.Revision {
		t.Errorf("range: %+v (txn at %d)", p, resp.Revision)
	}
	if r := resp.Results[3]; r.Found {
		t.Errorf("get after delete: %+v", r)
	}
	// Read-only, else branch.
	ro, err := c.Txn(ctx(t)).If(client.Present("a/1")).Else(client.OpGet("a/2")).Serializable().Commit()
	if err != nil || ro.Succeeded || len(ro.Results) != 1 || string(ro.Results[0].KV.Value) != "two" || ro.Revision != resp.Revision {
		t.Fatalf("read-only txn: %+v %v", ro, err)
	}
	_, err = c.Txn(ctx(t)).Then(client.OpPut("k", nil), client.OpDelete("k")).Commit()
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != client.CodeInvalidArgument {
		t.Fatalf("key written twice: %v", err)
	}
}
