package kv

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"
	"time"
)

// leaseCommands covers the lease kinds' fields and a leased op, valid or
// not (the decoder leaves the validation to Apply).
func leaseCommands() []Command {
	return []Command{
		{Kind: CmdLeaseGrant, ID: 30, Time: 11, Lease: LeaseCommand{TTL: 5 * time.Second, Prefix: []byte("p/")}},
		{Kind: CmdLeaseGrant, Time: -1, Lease: LeaseCommand{TTL: math.MaxInt64}},
		{Kind: CmdLeaseKeepAlive, ID: 31, Time: 12, Lease: LeaseCommand{IDs: []uint64{1, math.MaxUint64, 3}}},
		{Kind: CmdLeaseRevoke, Lease: LeaseCommand{IDs: []uint64{7}, Prefix: []byte("q")}},
		{Kind: CmdLeaseExpire, Time: 13},
		{Kind: CmdBatch, Session: 7, Ops: []WriteOp{
			{Seq: 1, Type: OpPut, Key: []byte("k"), Value: []byte("v"), Lease: 9},
			{Seq: 2, Type: OpTxn, Txn: &Txn{Then: []TxnOp{{Type: TxnPut, Key: []byte("t"), Lease: math.MaxUint64}, {Type: TxnGet, Key: []byte("u")}}}},
		}},
	}
}

// grant grants a lease of ttl confined to prefix and returns its id.
func (d *driver) grant(ttl time.Duration, prefix string) uint64 {
	d.t.Helper()
	a := d.apply(Command{Kind: CmdLeaseGrant, Lease: LeaseCommand{TTL: ttl, Prefix: []byte(prefix)}})
	if len(a.Results) != 1 || a.Results[0].Code != OK || len(a.Leases) != 1 || a.Leases[0].ID != d.idx {
		d.t.Fatalf("grant %v %q: %+v", ttl, prefix, a)
	}
	return a.Leases[0].ID
}

// leases applies a lease command of kind on ids and returns its results.
func (d *driver) leases(kind CommandKind, ids ...uint64) []Result {
	d.t.Helper()
	return d.apply(Command{Kind: kind, Lease: LeaseCommand{IDs: ids}}).Results
}

func leased(seq uint64, k, v string, lease uint64) WriteOp {
	op := put(seq, k, v)
	op.Lease = lease
	return op
}

// has reports whether key exists in s.
func has(s *Store, key string) bool {
	_, found, _ := s.Get([]byte(key))
	return found
}

// checkLeaseInvariants checks the lease bookkeeping: every lease is in the
// deadline index once, and the attachments are exactly the keys whose
// entry names a lease, each an existing lease's.
func checkLeaseInvariants(t testing.TB, s *Store) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lt.leases.Len() != s.lt.leaseExp.Len() {
		t.Fatalf("%d leases, %d in the deadline index", s.lt.leases.Len(), s.lt.leaseExp.Len())
	}
	s.lt.leases.Ascend(func(l lease) bool {
		if !s.lt.leaseExp.Has(leaseExp{deadline: l.deadline, id: l.id}) {
			t.Fatalf("lease %d not indexed at its deadline %d", l.id, l.deadline)
		}
		return true
	})
	attached := 0
	s.kv.Ascend(func(e *entry) bool {
		if e.lease == 0 {
			return true
		}
		attached++
		if !s.lt.leases.Has(lease{id: e.lease}) || !s.lt.attached.Has(attachment{lease: e.lease, key: e.key}) {
			t.Fatalf("key %q: lease %d present %v, attached %v", e.key, e.lease, s.lt.leases.Has(lease{id: e.lease}), s.lt.attached.Has(attachment{lease: e.lease, key: e.key}))
		}
		return true
	})
	if attached != s.lt.attached.Len() {
		t.Fatalf("%d keys with a lease, %d attachments", attached, s.lt.attached.Len())
	}
}

// A lease ends only by an expire entry applied after its deadline in log
// time: entries applied long past it do not expire it, an expire entry
// before it (or after a keepalive moved it) leaves it, and the one after
// it deletes its keys at one revision, once.
func TestLeaseExpiresOnlyThroughTheLogPastItsDeadline(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	id := d.grant(10*time.Second, "")
	d.batch(sess, 0, leased(1, "a", "1", id), leased(2, "b", "2", id), put(3, "c", "3"))

	d.now += int64(time.Minute)
	d.batch(sess, 0, put(4, "d", "4")) // long past the deadline: nothing expires by itself
	if !has(d.s, "a") || d.s.LeaseCount() != 1 {
		t.Fatal("the lease expired without an expire entry")
	}

	// Another store sees the expire entry proposed before a keepalive
	// applied after the leader saw the lease due: it is kept.
	d.leases(CmdLeaseKeepAlive, id)
	if r := d.leases(CmdLeaseExpire, id); r[0].Code != OK || r[0].Succeeded {
		t.Fatalf("expire right after a keepalive: %+v", r[0])
	}
	d.now += int64(10 * time.Second) // at the deadline, not past it
	if r := d.leases(CmdLeaseExpire, id); r[0].Succeeded {
		t.Fatalf("expired at its deadline: %+v", r[0])
	}

	rev := d.s.Revision()
	d.now++
	r := d.leases(CmdLeaseExpire, id, id+1000)
	if !r[0].Succeeded || r[0].Revision != rev+1 || r[1].Code != LeaseNotFound {
		t.Fatalf("expire past the deadline: %+v (revision before %d)", r, rev)
	}
	if has(d.s, "a") || has(d.s, "b") || !has(d.s, "c") || !has(d.s, "d") || d.s.LeaseCount() != 0 {
		t.Fatal("the expiry deleted the wrong keys")
	}
	// A second expire (a new leader proposing it again) changes nothing.
	if r := d.leases(CmdLeaseExpire, id); r[0].Code != LeaseNotFound || r[0].Revision != rev+1 {
		t.Fatalf("second expire: %+v", r[0])
	}
	checkLeaseInvariants(t, d.s)
}

// Revoking leases deletes every key still attached to them, in one
// revision; a key re-put without the lease or deleted is no longer its.
func TestLeaseRevokeDeletesItsKeysInOneRevision(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	l1, l2 := d.grant(time.Minute, ""), d.grant(time.Minute, "")
	d.batch(sess, 0, leased(1, "a", "1", l1), leased(2, "b", "2", l1), leased(3, "c", "3", l2),
		leased(4, "d", "4", l1), put(5, "d", "5"), // detached by a put without the lease
		leased(6, "e", "6", l1), del(7, "e"), leased(8, "f", "8", l2), leased(9, "f", "9", l1)) // moved to l1
	if info, ok := d.s.Lease(l1); !ok || info.Keys != 3 {
		t.Fatalf("lease l1 before the revoke: %+v %v", info, ok)
	}
	rev := d.s.Revision()
	r := d.leases(CmdLeaseRevoke, l1, l2)
	if !r[0].Succeeded || !r[1].Succeeded || r[0].Revision != rev+1 || r[1].Revision != rev+1 {
		t.Fatalf("revoke: %+v (revision before %d)", r, rev)
	}
	for _, k := range []string{"a", "b", "c", "f"} {
		if has(d.s, k) {
			t.Fatalf("key %s survived its lease's revocation", k)
		}
	}
	if kv, found, _ := d.s.Get([]byte("d")); !found || kv.Lease != 0 || string(kv.Value) != "5" {
		t.Fatalf("detached key d: %+v %v", kv, found)
	}
	checkLeaseInvariants(t, d.s)
}

// Writing a key with a lease that does not exist, or outside the lease's
// prefix, fails that op alone and applies nothing of it; a transaction
// with such a put runs nothing of its branch.
func TestWritesWithABadLeaseFailCleanly(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	l := d.grant(time.Minute, "p/")
	rev := d.s.Revision()
	r := d.batch(sess, 0, leased(1, "p/a", "1", l+1), leased(2, "q", "1", l), leased(3, "p/b", "1", l))
	if r[0].Code != LeaseNotFound || r[1].Code != InvalidArgument || r[2].Code != OK || r[2].Revision != rev+1 {
		t.Fatalf("results: %+v", r)
	}
	if has(d.s, "p/a") || has(d.s, "q") || !has(d.s, "p/b") {
		t.Fatal("a write with a bad lease was applied")
	}
	tx := &Txn{Then: []TxnOp{tput("p/c", "1"), {Type: TxnPut, Key: []byte("p/d"), Lease: 12345}}}
	if r := d.one(sess, txnOf(4, tx)); r.Code != LeaseNotFound || has(d.s, "p/c") || r.Revision != rev+1 {
		t.Fatalf("txn with an unknown lease: %+v, p/c present %v", r, has(d.s, "p/c"))
	}
	d.leases(CmdLeaseRevoke, l)
	if r := d.one(sess, leased(5, "p/e", "1", l)); r.Code != LeaseNotFound {
		t.Fatalf("put with a revoked lease: %+v", r)
	}
	// The saved result of a retried seq is answered as it was.
	if r := d.one(sess, leased(1, "p/a", "1", l+1)); r.Code != LeaseNotFound {
		t.Fatalf("retried seq 1: %+v", r)
	}
	checkLeaseInvariants(t, d.s)
}

// Grants outside the TTL bounds are refused, as are grants beyond
// MaxLeases; keepalives and revokes of unknown leases say so.
func TestLeaseGrantLimits(t *testing.T) {
	d := newDriver(t, Config{MinLeaseTTL: time.Second, MaxLeaseTTL: time.Hour, MaxLeases: 2})
	for _, ttl := range []time.Duration{0, time.Second - 1, time.Hour + 1} {
		a := d.apply(Command{Kind: CmdLeaseGrant, Lease: LeaseCommand{TTL: ttl}})
		if a.Results[0].Code != InvalidArgument || len(a.Leases) != 0 {
			t.Fatalf("grant of ttl %v: %+v", ttl, a)
		}
	}
	d.grant(time.Second, "")
	d.grant(time.Hour, "")
	if a := d.apply(Command{Kind: CmdLeaseGrant, Lease: LeaseCommand{TTL: time.Minute}}); a.Results[0].Code != TooLarge {
		t.Fatalf("grant beyond MaxLeases: %+v", a)
	}
	if r := d.leases(CmdLeaseKeepAlive, 999); r[0].Code != LeaseNotFound {
		t.Fatalf("keepalive of an unknown lease: %+v", r)
	}
	if r := d.leases(CmdLeaseRevoke, 999); r[0].Code != LeaseNotFound {
		t.Fatalf("revoke of an unknown lease: %+v", r)
	}
}

// A keepalive or revoke scoped to a prefix leaves the leases whose prefix
// does not lie within it alone, as unknown.
func TestLeaseCommandsOutsideTheirScopeFindNothing(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	wide, narrow := d.grant(time.Minute, "a"), d.grant(time.Minute, "ab")
	d.batch(sess, 0, leased(1, "ax", "1", wide), leased(2, "abx", "2", narrow))
	scoped := func(kind CommandKind, id uint64) Result {
		return d.apply(Command{Kind: kind, Lease: LeaseCommand{IDs: []uint64{id}, Prefix: []byte("ab")}}).Results[0]
	}
	if r := scoped(CmdLeaseKeepAlive, wide); r.Code != LeaseNotFound {
		t.Fatalf("keepalive of a wider lease: %+v", r)
	}
	if r := scoped(CmdLeaseRevoke, wide); r.Code != LeaseNotFound || !has(d.s, "ax") {
		t.Fatalf("revoke of a wider lease: %+v", r)
	}
	if r := scoped(CmdLeaseRevoke, narrow); !r.Succeeded || has(d.s, "abx") {
		t.Fatalf("revoke of a lease within the scope: %+v", r)
	}
	if ls, _ := d.s.Leases([]byte("ab"), 0, 10); len(ls) != 0 {
		t.Fatalf("leases within ab: %+v", ls)
	}
	if ls, _ := d.s.Leases(nil, 0, 10); len(ls) != 1 || ls[0].ID != wide {
		t.Fatalf("all leases: %+v", ls)
	}
}

// DueLeases lists the leases past their deadline at a time, earliest
// first, and the next deadline after it; a keepalive moves a lease's.
func TestDueLeasesFollowDeadlines(t *testing.T) {
	d := newDriver(t, Config{})
	a := d.grant(3*time.Second, "")
	b := d.grant(time.Second, "")
	c := d.grant(2*time.Second, "")
	now := d.now
	due, next, ok := d.s.DueLeases(now+int64(2500*time.Millisecond), 10)
	if len(due) != 2 || due[0].ID != b || due[1].ID != c || due[0].TTL != time.Second || !ok || next != now+int64(3*time.Second) {
		t.Fatalf("due at +2.5s: %v, next %d %v", due, next-now, ok)
	}
	if due, _, _ := d.s.DueLeases(now+int64(time.Hour), 1); len(due) != 1 || due[0].ID != b {
		t.Fatalf("limit 1: %v", due)
	}
	d.now += int64(time.Second)
	d.leases(CmdLeaseKeepAlive, b)
	if due, _, _ := d.s.DueLeases(now+int64(1500*time.Millisecond), 10); len(due) != 0 {
		t.Fatalf("due at +1.5s after b's keepalive at +1s: %v", due)
	}
	if info, ok := d.s.Lease(a); !ok || info.Remaining != 2*time.Second || info.TTL != 3*time.Second {
		t.Fatalf("lease a: %+v", info)
	}
}

// Leases survive a snapshot: the restored store snapshots to the same
// bytes and expires the same keys at the same revision.
func TestLeasesSnapshotRoundTrip(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	l1, l2 := d.grant(5*time.Second, "k"), d.grant(time.Minute, "")
	d.batch(sess, 0, leased(1, "k1", "1", l1), leased(2, "k2", "2", l1), leased(3, "x", "3", l2), put(4, "y", "4"))
	b := snapBytes(t, d.s)
	s2 := restored(t, Config{}, b)
	if !bytes.Equal(snapBytes(t, s2), b) {
		t.Fatal("the restored store snapshots differently")
	}
	checkLeaseInvariants(t, s2)
	d.now += int64(6 * time.Second)
	exp := enc(Command{Kind: CmdLeaseExpire, Time: d.now, Lease: LeaseCommand{IDs: []uint64{l1, l2}}})
	a1, a2 := d.s.Apply(d.idx+1, exp), s2.Apply(d.idx+1, exp)
	if a1.Results[0].Revision != a2.Results[0].Revision || !a1.Results[0].Succeeded || !a2.Results[0].Succeeded || a1.Results[1].Succeeded {
		t.Fatalf("expire on the original %+v, on the restored %+v", a1.Results, a2.Results)
	}
	if !bytes.Equal(snapBytes(t, d.s), snapBytes(t, s2)) || has(s2, "k1") || !has(s2, "x") {
		t.Fatal("the original and the restored store differ after the expiry")
	}
}

// Random lease traffic keeps the bookkeeping consistent, and a store
// restored from a snapshot taken midway, applying the same entries,
// reaches the same bytes.
func TestLeasesRandomTrafficIsDeterministic(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewSource(seed))
	d := newDriver(t, Config{MaxSavedResults: 8})
	sess := d.open()
	var ids []uint64
	var twin *Store
	keys := []string{"a", "b", "c", "d", "e", "f"}
	seq := uint64(0)
	for step := 0; step < 2000; step++ {
		if step == 1000 {
			twin = restored(t, Config{MaxSavedResults: 8}, snapBytes(t, d.s))
		}
		d.now += int64(rng.Intn(int(2 * time.Second)))
		var c Command
		pick := func() uint64 {
			if len(ids) == 0 || rng.Intn(8) == 0 {
				return uint64(rng.Intn(int(d.idx) + 2))
			}
			return ids[rng.Intn(len(ids))]
		}
		switch rng.Intn(6) {
		case 0:
			c = Command{Kind: CmdLeaseGrant, Lease: LeaseCommand{TTL: time.Duration(1+rng.Intn(5)) * time.Second}}
		case 1:
			c = Command{Kind: CmdLeaseKeepAlive, Lease: LeaseCommand{IDs: []uint64{pick(), pick()}}}
		case 2:
			c = Command{Kind: CmdLeaseExpire, Lease: LeaseCommand{IDs: []uint64{pick()}}}
		case 3:
			c = Command{Kind: CmdLeaseRevoke, Lease: LeaseCommand{IDs: []uint64{pick()}}}
		default:
			var ops []WriteOp
			for i := rng.Intn(4); i >= 0; i-- {
				seq++
				k := keys[rng.Intn(len(keys))]
				switch rng.Intn(4) {
				case 0:
					ops = append(ops, del(seq, k))
				case 1:
					ops = append(ops, put(seq, k, "v"))
				case 2:
					ops = append(ops, txnOf(seq, &Txn{Then: []TxnOp{{Type: TxnPut, Key: []byte(k), Lease: pick()}}}))
				default:
					ops = append(ops, leased(seq, k, "v", pick()))
				}
			}
			c = Command{Kind: CmdBatch, Session: sess, Ops: ops}
		}
		c.Time = d.now
		a := d.apply(c)
		if c.Kind == CmdLeaseGrant && len(a.Leases) == 1 {
			ids = append(ids, a.Leases[0].ID)
		}
		if twin != nil {
			if a2 := twin.Apply(d.idx, enc(c)); a2.Err != nil {
				t.Fatalf("step %d: the twin failed: %v", step, a2.Err)
			}
		}
		if step%100 == 0 {
			checkLeaseInvariants(t, d.s)
		}
	}
	checkLeaseInvariants(t, d.s)
	checkLeaseInvariants(t, twin)
	if !bytes.Equal(snapBytes(t, d.s), snapBytes(t, twin)) {
		t.Fatal("the store restored midway differs from the original")
	}
}

// BenchmarkLeaseKeepAliveEntry measures applying one keepalive entry that
// renews MaxLeaseIDs leases (of 100,000): what one client keeping that
// many leases alive costs each node per interval.
func BenchmarkLeaseKeepAliveEntry(b *testing.B) {
	d := newDriver(b, Config{})
	ids := make([]uint64, 0, MaxLeaseIDs)
	for i := range 100_000 {
		id := d.grant(time.Minute, "")
		if i%(100_000/MaxLeaseIDs) == 0 && len(ids) < MaxLeaseIDs {
			ids = append(ids, id)
		}
	}
	b.ResetTimer()
	for range b.N {
		d.now += int64(time.Millisecond)
		d.leases(CmdLeaseKeepAlive, ids...)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(ids)), "ns/lease")
}

// BenchmarkLeaseRevoke1000Keys measures revoking a lease with 1,000 keys
// (in a store of 100,000): one entry, one revision.
func BenchmarkLeaseRevoke1000Keys(b *testing.B) {
	d := newDriver(b, Config{})
	sess := d.open()
	seq := uint64(0)
	for i := range 100_000 {
		seq++
		d.batch(sess, 0, put(seq, fmt.Sprintf("other/%06d", i), "v"))
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		id := d.grant(time.Minute, "")
		ops := make([]WriteOp, 0, 1000)
		for i := range 1000 {
			seq++
			ops = append(ops, leased(seq, fmt.Sprintf("leased/%04d", i), "v", id))
		}
		d.batch(sess, 0, ops...)
		b.StartTimer()
		d.leases(CmdLeaseRevoke, id)
	}
}

// A lease's revocation and its expiry delete its keys where watches see
// them: one delete event per key, at the revision that ended the lease.
func TestLeaseEndsAreSeenByWatches(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	revoked, expiring := d.grant(time.Minute, ""), d.grant(time.Second, "")
	d.batch(sess, 0, leased(1, "a", "1", revoked), leased(2, "b", "2", revoked), leased(3, "c", "3", expiring))
	rev := d.s.Revision()
	if r := d.leases(CmdLeaseRevoke, revoked); !r[0].Succeeded {
		t.Fatalf("revoke: %+v", r)
	}
	d.now += int64(time.Minute)
	if r := d.leases(CmdLeaseExpire, expiring); !r[0].Succeeded || has(d.s, "c") {
		t.Fatal("the expired lease's key survived: the test checks nothing")
	}
	page, err := d.s.ReadEvents(EventQuery{From: rev + 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range page.Events {
		if e.Type != EventDelete {
			t.Fatalf("event %+v, want only deletes", e)
		}
		got = append(got, fmt.Sprintf("%s@%d", e.KV.Key, e.KV.ModRevision))
	}
	want := []string{fmt.Sprintf("a@%d", rev+1), fmt.Sprintf("b@%d", rev+1), fmt.Sprintf("c@%d", rev+2)}
	if !slices.Equal(got, want) {
		t.Fatalf("watch events after the lease ends: %v, want %v", got, want)
	}
}
