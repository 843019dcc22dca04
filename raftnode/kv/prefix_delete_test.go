package kv

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func delPrefix(seq uint64, prefix string) WriteOp {
	return WriteOp{Seq: seq, Type: OpDelete, Key: []byte(prefix), Prefix: true}
}

// keys returns the store's keys in order.
func keys(s *Store) []string {
	kvs, _, _ := s.Range(nil, nil, 0)
	var out []string
	for _, kv := range kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// A prefix delete deletes every key under its prefix, and only those, at
// one revision: the store's revision moves by one, and a watch sees one
// delete event per key at it, in key order.
func TestDeletePrefixDeletesEveryKeyUnderItAtOneRevision(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.batch(sess, 0, put(1, "a", "0"), put(2, "p/1", "1"), put(3, "p/2", "2"), put(4, "p/sub/3", "3"), put(5, "p", "4"), put(6, "q/1", "5"))
	before := d.s.Revision()
	r := d.one(sess, delPrefix(7, "p/"))
	if r.Code != OK || !r.Succeeded || r.Deleted != 3 || r.Found || r.Revision != before+1 {
		t.Fatalf("delete prefix p/: %+v, want 3 keys deleted at revision %d", r, before+1)
	}
	if got, want := keys(d.s), []string{"a", "p", "q/1"}; !slices.Equal(got, want) {
		t.Fatalf("keys after deleting p/: %v, want %v", got, want)
	}
	if d.s.Revision() != before+1 {
		t.Fatalf("revision %d after one prefix delete from %d", d.s.Revision(), before)
	}
	page, err := d.s.ReadEvents(EventQuery{From: before + 1, WithPrev: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range page.Events {
		if e.Type != EventDelete || !e.HasPrev {
			t.Fatalf("event %+v, want a delete with its previous value", e)
		}
		got = append(got, fmt.Sprintf("%s=%s@%d", e.KV.Key, e.Prev.Value, e.Revision()))
	}
	want := []string{fmt.Sprintf("p/1=1@%d", before+1), fmt.Sprintf("p/2=2@%d", before+1), fmt.Sprintf("p/sub/3=3@%d", before+1)}
	if !slices.Equal(got, want) {
		t.Fatalf("events: %v, want %v", got, want)
	}

	// A prefix that selects nothing changes nothing.
	r = d.one(sess, delPrefix(8, "zzz"))
	if r.Code != OK || r.Succeeded || r.Deleted != 0 || r.Revision != before+1 || d.s.Revision() != before+1 {
		t.Fatalf("delete of an unused prefix: %+v (store at %d), want nothing changed at %d", r, d.s.Revision(), before+1)
	}
	checkInvariants(t, d.s)
}

// The empty prefix is refused, not taken as every key; so is a prefix
// over the key size limit.
func TestDeletePrefixRefusesTheEmptyPrefix(t *testing.T) {
	d := newDriver(t, Config{MaxKeySize: 8})
	sess := d.open()
	d.one(sess, put(1, "a", "1"))
	rev := d.s.Revision()
	if r := d.one(sess, delPrefix(2, "")); r.Code != InvalidArgument || r.Message != msgEmptyPrefix {
		t.Fatalf("empty prefix: %+v, want InvalidArgument %q", r, msgEmptyPrefix)
	}
	if r := d.one(sess, delPrefix(3, "123456789")); r.Code != TooLarge {
		t.Fatalf("prefix over the key limit: %+v, want TooLarge", r)
	}
	if !has(d.s, "a") || d.s.Revision() != rev {
		t.Fatal("a refused prefix delete changed the store")
	}
}

// Deleted keys leave their leases: revoking the lease afterwards deletes
// nothing more, and a key put again under the prefix is not attached.
func TestDeletePrefixDetachesLeases(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	id := d.grant(time.Minute, "")
	d.batch(sess, 0, leased(1, "p/1", "1", id), leased(2, "p/2", "2", id), leased(3, "q", "3", id))
	if info, ok := d.s.Lease(id); !ok || info.Keys != 3 {
		t.Fatalf("lease before: %+v %v, want 3 keys", info, ok)
	}
	if r := d.one(sess, delPrefix(4, "p/")); r.Deleted != 2 {
		t.Fatalf("delete prefix: %+v", r)
	}
	if info, ok := d.s.Lease(id); !ok || info.Keys != 1 {
		t.Fatalf("lease after the prefix delete: %+v %v, want 1 key", info, ok)
	}
	if got := d.s.LeaseKeys(id, nil, 10); len(got) != 1 || string(got[0]) != "q" {
		t.Fatalf("lease keys: %q, want [q]", got)
	}
	d.one(sess, put(5, "p/1", "again"))
	rev := d.s.Revision()
	d.leases(CmdLeaseRevoke, id)
	if !has(d.s, "p/1") || has(d.s, "q") || d.s.Revision() != rev+1 {
		t.Fatalf("after the revoke: keys %v at revision %d, want p/1 kept and q deleted at %d", keys(d.s), d.s.Revision(), rev+1)
	}
	checkLeaseInvariants(t, d.s)
}

// A retried prefix delete is answered from the session's saved result:
// the same count and revision, though the keys are gone (and new ones
// under the prefix are not deleted); the saved count survives a
// snapshot.
func TestRetriedDeletePrefixAnswersTheSameCount(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.batch(sess, 0, put(1, "p/1", "1"), put(2, "p/2", "2"))
	first := d.one(sess, delPrefix(3, "p/"))
	if first.Deleted != 2 {
		t.Fatalf("first: %+v", first)
	}
	d.one(sess, put(4, "p/3", "3"))
	if again := d.one(sess, delPrefix(3, "p/")); again.Deleted != 2 || again.Revision != first.Revision || !again.Succeeded {
		t.Fatalf("retry: %+v, want the first answer %+v", again, first)
	}
	if !has(d.s, "p/3") {
		t.Fatal("the retry ran again: it deleted a key put after the first delete")
	}

	b := snapBytes(t, d.s)
	r := restored(t, Config{}, b)
	if again := bytes.Clone(snapBytes(t, r)); !bytes.Equal(again, b) {
		t.Fatal("the restored store snapshots to other bytes")
	}
	d.s = r
	if again := d.one(sess, delPrefix(3, "p/")); again.Deleted != 2 || again.Revision != first.Revision {
		t.Fatalf("retry after a restore: %+v, want the first answer %+v", again, first)
	}
}

// A snapshot whose saved result flags a prefix delete of no key is not
// canonical: Restore refuses it.
func TestRestoreRefusesASavedZeroDeleteCount(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.one(sess, put(1, "p/1", "1"))
	d.one(sess, delPrefix(2, "p/"))
	b := snapBytes(t, d.s)
	// The saved result of seq 2: seq, code, flags, revision, message
	// length, then the count. Zero the count and fix the checksum.
	i := bytes.Index(b, []byte{2, byte(OK), resFlagSucceeded | resFlagDeleted, 2, 0, 1})
	if i < 0 {
		t.Fatal("saved result not found in the snapshot: the test needs updating")
	}
	bad := bytes.Clone(b)
	bad[i+5] = 0
	bad = reseal(bad)
	if err := New(Config{}).Restore(bytes.NewReader(bad)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Restore of a zero count: %v, want ErrMalformed", err)
	}
}

// The prefix flag round-trips, and only a delete may carry it.
func TestPrefixDeleteCodec(t *testing.T) {
	cmds := []Command{
		{Kind: CmdBatch, Session: 3, Ops: []WriteOp{delPrefix(1, "p/"), del(2, "p"),
			{Seq: 3, Type: OpTxn, Txn: &Txn{Then: []TxnOp{{Type: TxnDelete, Key: []byte("t/"), Prefix: true}, {Type: TxnGet, Key: []byte("u")}},
				Else: []TxnOp{{Type: TxnDelete, Key: []byte("e"), Prefix: true}}}},
		}},
	}
	for i, c := range cmds {
		got, err := DecodeCommand(enc(c))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !bytes.Equal(got.AppendBinary(nil), enc(c)) || !got.Ops[0].Prefix || got.Ops[1].Prefix ||
			!got.Ops[2].Txn.Then[0].Prefix || got.Ops[2].Txn.Then[1].Prefix || !got.Ops[2].Txn.Else[0].Prefix {
			t.Fatalf("%d: round trip: %+v", i, got)
		}
	}
	bad := map[string]Command{
		"put":    {Kind: CmdBatch, Ops: []WriteOp{{Seq: 1, Type: OpPut, Key: []byte("k"), Prefix: true}}},
		"cas":    {Kind: CmdBatch, Ops: []WriteOp{{Seq: 1, Type: OpCAS, Key: []byte("k"), Compare: CompareAbsent, Prefix: true}}},
		"txn":    {Kind: CmdBatch, Ops: []WriteOp{{Seq: 1, Type: OpTxn, Txn: &Txn{}, Prefix: true}}},
		"txnput": {Kind: CmdBatch, Ops: []WriteOp{{Seq: 1, Type: OpTxn, Txn: &Txn{Then: []TxnOp{{Type: TxnPut, Key: []byte("k"), Prefix: true}}}}}},
		"txnget": {Kind: CmdBatch, Ops: []WriteOp{{Seq: 1, Type: OpTxn, Txn: &Txn{Else: []TxnOp{{Type: TxnGet, Key: []byte("k"), Prefix: true}}}}}},
	}
	for name, c := range bad {
		if _, err := DecodeCommand(enc(c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s with the prefix flag: %v, want ErrMalformed", name, err)
		}
	}
	// A flag bit beyond the known ones is still refused.
	b := enc(Command{Kind: CmdBatch, Ops: []WriteOp{del(1, "k")}})
	i := bytes.Index(b, []byte{1, byte(OpDelete), 0, 0})
	b[i+3] = opFlagPrefix << 1
	if _, err := DecodeCommand(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown flag: %v, want ErrMalformed", err)
	}
}

// In a txn branch a prefix delete follows etcd's rule: no other write of
// the branch may touch a key under it, whatever the order, and two prefix
// deletes may not overlap. Disjoint writes run, at the txn's one
// revision, and reads after the delete see the keys gone.
func TestTxnPrefixDeleteFollowsEtcdsRule(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	d.batch(sess, 0, put(1, "p/1", "1"), put(2, "p/2", "2"), put(3, "q", "3"))
	pd := func(p string) TxnOp { return TxnOp{Type: TxnDelete, Key: []byte(p), Prefix: true} }
	tput := func(k string) TxnOp { return TxnOp{Type: TxnPut, Key: []byte(k), Value: []byte("x")} }
	tdel := func(k string) TxnOp { return TxnOp{Type: TxnDelete, Key: []byte(k)} }
	seq := uint64(10)
	run := func(ops ...TxnOp) Result {
		seq++
		return d.one(sess, WriteOp{Seq: seq, Type: OpTxn, Txn: &Txn{Then: ops}})
	}
	rev := d.s.Revision()
	for name, ops := range map[string][]TxnOp{
		"put after":       {pd("p/"), tput("p/3")},
		"put before":      {tput("p/3"), pd("p/")},
		"delete inside":   {tdel("p/1"), pd("p/")},
		"wider prefix":    {pd("p/"), pd("p")},
		"narrower prefix": {pd("p"), pd("p/x")},
		"same prefix":     {pd("p/"), pd("p/")},
		"empty prefix":    {pd("")},
	} {
		r := run(ops...)
		if r.Code != InvalidArgument {
			t.Errorf("%s: %+v, want InvalidArgument", name, r)
		}
	}
	if d.s.Revision() != rev || len(keys(d.s)) != 3 {
		t.Fatal("a refused txn changed the store")
	}
	// The decoder refuses the prefix flag on another operation; a Txn
	// built in memory is refused by the check.
	if code, msg := d.s.checkTxn(&Txn{Then: []TxnOp{{Type: TxnRange, Key: []byte("p/"), Prefix: true}}}, true); code != InvalidArgument || msg != msgTxnPrefixOp {
		t.Errorf("a range with the prefix flag: %v %q", code, msg)
	}
	r := run(TxnOp{Type: TxnRange, Key: []byte("p/")}, pd("p/"), tput("q/1"), pd("r/"), TxnOp{Type: TxnRange, Key: []byte("p/")})
	if r.Code != OK || r.Revision != rev+1 || r.Txn == nil {
		t.Fatalf("txn: %+v", r)
	}
	res := r.Txn.Results
	if len(res[0].KVs) != 2 || res[1].Deleted != 2 || res[1].Found || res[3].Deleted != 0 || len(res[4].KVs) != 0 {
		t.Fatalf("txn results: %+v", res)
	}
	if got, want := keys(d.s), []string{"q", "q/1"}; !slices.Equal(got, want) {
		t.Fatalf("keys: %v, want %v", got, want)
	}
	// A txn whose only write is a prefix delete of nothing leaves the
	// revision as it was.
	if r := run(pd("nothing/")); r.Code != OK || r.Revision != rev+1 || d.s.Revision() != rev+1 {
		t.Fatalf("txn deleting nothing: %+v", r)
	}
}

// A prefix delete whose keys and values (64 bytes more each) are over
// MaxDeleteBytes is refused, TooLarge, and deletes nothing; at the limit
// it runs. In a txn the branch's prefix deletes count together, and a
// refused txn runs nothing.
func TestDeletePrefixOverTheLimitDeletesNothing(t *testing.T) {
	per := eventOverhead + len("p/1") + len("vv") // each key's cost
	d := newDriver(t, Config{MaxDeleteBytes: 2 * per})
	sess := d.open()
	d.batch(sess, 0, put(1, "p/1", "vv"), put(2, "p/2", "vv"), put(3, "p/3", "vv"), put(4, "q/1", "vv"), put(5, "r/1", "vv"))
	rev := d.s.Revision()
	if r := d.one(sess, delPrefix(6, "p/")); r.Code != TooLarge || r.Message != msgDeleteTooLarge || r.Revision != rev {
		t.Fatalf("3 keys over a limit of 2: %+v", r)
	}
	if len(keys(d.s)) != 5 || d.s.Revision() != rev {
		t.Fatal("a refused prefix delete deleted keys")
	}
	pd := func(p string) TxnOp { return TxnOp{Type: TxnDelete, Key: []byte(p), Prefix: true} }
	tput := TxnOp{Type: TxnPut, Key: []byte("s"), Value: []byte("x")}
	if r := d.one(sess, WriteOp{Seq: 7, Type: OpTxn, Txn: &Txn{Then: []TxnOp{tput, pd("q/"), pd("r/"), pd("p/3")}}}); r.Code != TooLarge {
		t.Fatalf("a txn deleting 3 keys over a limit of 2: %+v", r)
	}
	if len(keys(d.s)) != 5 || d.s.Revision() != rev {
		t.Fatal("a refused txn ran")
	}
	if r := d.one(sess, WriteOp{Seq: 8, Type: OpTxn, Txn: &Txn{Then: []TxnOp{tput, pd("q/"), pd("r/")}}}); r.Code != OK || r.Txn.Results[1].Deleted != 1 || r.Txn.Results[2].Deleted != 1 {
		t.Fatalf("a txn deleting 2 keys at the limit: %+v", r)
	}
	d.one(sess, del(9, "p/3"))
	if r := d.one(sess, delPrefix(10, "p/")); r.Code != OK || r.Deleted != 2 {
		t.Fatalf("2 keys at a limit of 2: %+v", r)
	}
}
