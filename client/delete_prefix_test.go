package client_test

import (
	"errors"
	"testing"

	"github.com/capraft/capraft/client"
)

// DeletePrefix removes every key under the prefix at one revision and
// says how many; the empty prefix is refused before anything is sent;
// in a transaction OpDeletePrefix answers its count, and a branch that
// also writes under the prefix is refused.
func TestDeletePrefix(t *testing.T) {
	_, addr := startNode(t, "127.0.0.1:0")
	c := newClient(t, addr)
	for _, k := range []string{"p/1", "p/2", "p/3/x", "q"} {
		if _, err := c.Put(ctx(t), k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Range(ctx(t), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	n, rev, err := c.DeletePrefix(ctx(t), "p/")
	if err != nil || n != 3 || rev != page.Revision+1 {
		t.Fatalf("DeletePrefix = %d, %d, %v; want 3 keys at revision %d", n, rev, err, page.Revision+1)
	}
	if page, err := c.Range(ctx(t), "", 0); err != nil || len(page.KVs) != 1 || page.KVs[0].Key != "q" {
		t.Fatalf("left: %+v %v", page, err)
	}
	if n, again, err := c.DeletePrefix(ctx(t), "p/"); err != nil || n != 0 || again != rev {
		t.Fatalf("DeletePrefix of nothing = %d, %d, %v; want 0 at %d", n, again, err, rev)
	}
	var se *client.ServerError
	if _, _, err := c.DeletePrefix(ctx(t), ""); !errors.As(err, &se) || se.Code != client.CodeInvalidArgument {
		t.Fatalf("empty prefix: %v", err)
	}
	if existed, _, err := c.Delete(ctx(t), "q"); err != nil || !existed {
		t.Fatalf("Delete = %v, %v", existed, err)
	}

	for _, k := range []string{"t/1", "t/2"} {
		if _, err := c.Put(ctx(t), k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := c.Txn(ctx(t)).Then(client.OpRange("t/", 0), client.OpDeletePrefix("t/"), client.OpPut("u", []byte("v")), client.OpDelete("nope")).Commit()
	if err != nil || !resp.Succeeded || len(resp.Results) != 4 {
		t.Fatalf("txn: %+v %v", resp, err)
	}
	if r := resp.Results; len(r[0].Page.KVs) != 2 || r[1].Deleted != 2 || r[1].Found || r[3].Deleted != 0 {
		t.Fatalf("txn results: %+v", r)
	}
	_, err = c.Txn(ctx(t)).Then(client.OpPut("u/1", nil), client.OpDeletePrefix("u")).Commit()
	if !errors.As(err, &se) || se.Code != client.CodeInvalidArgument {
		t.Fatalf("put under a deleted prefix: %v", err)
	}
}
