package kv

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"
)

func TestPutGetDeleteRevisions(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	if sess != 1 {
		t.Fatalf("session id %d, want the entry index 1", sess)
	}
	r := d.one(sess, put(1, "k", "v1"))
	if r.Code != OK || r.Revision != 1 || r.Found {
		t.Fatalf("first put: %+v", r)
	}
	r = d.one(sess, put(2, "k", "v2"))
	want := KeyValue{Key: []byte("k"), Value: []byte("v1"), CreateRevision: 1, ModRevision: 1, Version: 1}
	if r.Revision != 2 || !r.Found || !reflect.DeepEqual(r.Prev, want) {
		t.Fatalf("overwrite: %+v", r)
	}
	kv, found, rev := d.s.Get([]byte("k"))
	want = KeyValue{Key: []byte("k"), Value: []byte("v2"), CreateRevision: 1, ModRevision: 2, Version: 2}
	if !found || rev != 2 || !reflect.DeepEqual(kv, want) {
		t.Fatalf("Get: %+v %v %d", kv, found, rev)
	}
	r = d.one(sess, del(3, "missing"))
	if r.Code != OK || r.Succeeded || r.Found || r.Revision != 2 {
		t.Fatalf("delete of a missing key: %+v", r)
	}
	r = d.one(sess, del(4, "k"))
	if !r.Succeeded || !r.Found || r.Revision != 3 || !reflect.DeepEqual(r.Prev, want) {
		t.Fatalf("delete: %+v", r)
	}
	if _, found, rev = d.s.Get([]byte("k")); found || rev != 3 {
		t.Fatalf("Get after delete: %v %d", found, rev)
	}
	// Re-created: a new life.
	d.one(sess, put(5, "k", "v3"))
	kv, _, _ = d.s.Get([]byte("k"))
	if kv.CreateRevision != 4 || kv.Version != 1 {
		t.Fatalf("re-created key: %+v", kv)
	}
}

func TestCAS(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	cas := func(seq uint64, cmp CompareKind, val string, rev uint64, nv string, delete bool) Result {
		op := WriteOp{Seq: seq, Type: OpCAS, Key: []byte("k"), Value: []byte(nv), Compare: cmp, CompareRevision: rev, DeleteOnSuccess: delete}
		if val != "" {
			op.CompareValue = []byte(val)
		}
		return d.one(sess, op)
	}
	if r := cas(1, CompareValue, "x", 0, "a", false); r.Succeeded || r.Found || r.Revision != 0 {
		t.Fatalf("value compare on a missing key: %+v", r)
	}
	if r := cas(2, CompareModRevision, "", 0, "a", false); !r.Succeeded || r.Revision != 1 {
		t.Fatalf("mod revision 0 on a missing key: %+v", r)
	}
	if r := cas(3, CompareAbsent, "", 0, "b", false); r.Succeeded || !r.Found || string(r.Prev.Value) != "a" || r.Revision != 1 {
		t.Fatalf("absent compare on an existing key: %+v", r)
	}
	if r := cas(4, CompareValue, "a", 0, "c", false); !r.Succeeded || r.Revision != 2 || string(r.Prev.Value) != "a" {
		t.Fatalf("value compare: %+v", r)
	}
	if r := cas(5, CompareModRevision, "", 1, "d", false); r.Succeeded || r.Prev.ModRevision != 2 {
		t.Fatalf("stale mod revision: %+v", r)
	}
	if r := cas(6, CompareModRevision, "", 2, "", true); !r.Succeeded || r.Revision != 3 {
		t.Fatalf("compare-and-delete: %+v", r)
	}
	if _, found, _ := d.s.Get([]byte("k")); found {
		t.Fatal("key survived compare-and-delete")
	}
	// Absent + delete on a missing key matches but changes nothing.
	if r := cas(7, CompareAbsent, "", 0, "", true); !r.Succeeded || r.Revision != 3 {
		t.Fatalf("absent compare-and-delete of a missing key: %+v", r)
	}
	if r := cas(8, 0, "", 0, "x", false); r.Code != InvalidArgument {
		t.Fatalf("zero compare kind: %+v", r)
	}
}

func TestInvalidOps(t *testing.T) {
	d := newDriver(t, Config{MaxKeySize: 4, MaxValueSize: 4})
	sess := d.open()
	rs := d.batch(sess, 0,
		put(0, "k", "v"),
		put(1, "", "v"),
		put(2, "kkkkk", "v"),
		put(3, "k", "vvvvv"),
		WriteOp{Seq: 4, Type: 9, Key: []byte("k")},
		put(5, "kkkk", "vvvv"),
	)
	want := []Code{InvalidArgument, InvalidArgument, TooLarge, TooLarge, InvalidArgument, OK}
	for i, r := range rs {
		if r.Code != want[i] {
			t.Errorf("op %d: %v %q, want %v", i, r.Code, r.Message, want[i])
		}
		if r.Code != OK && r.Message == "" {
			t.Errorf("op %d: %v without a message", i, r.Code)
		}
	}
	if d.s.Revision() != 1 {
		t.Fatalf("revision %d after one valid op", d.s.Revision())
	}
}

func TestExactlyOnce(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	first := d.one(sess, put(1, "k", "v1"))
	d.one(sess, put(2, "other", "x"))
	rev := d.s.Revision()
	// A retry of seq 1, even with another value, returns the first result.
	again := d.one(sess, put(1, "k", "changed"))
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("retry: %+v, first %+v", again, first)
	}
	if kv, _, _ := d.s.Get([]byte("k")); string(kv.Value) != "v1" || d.s.Revision() != rev {
		t.Fatalf("retry applied again: %q rev %d (was %d)", kv.Value, d.s.Revision(), rev)
	}
	// Twice in one batch: applied once.
	rs := d.batch(sess, 0, put(3, "n", "1"), put(3, "n", "2"))
	if !reflect.DeepEqual(rs[0], rs[1]) || d.s.Revision() != rev+1 {
		t.Fatalf("duplicate seq in a batch: %+v rev %d", rs, d.s.Revision())
	}
	// Errors are saved too: a retry of a rejected seq stays rejected.
	bad := d.one(sess, put(4, "", "v"))
	if r := d.one(sess, put(4, "fine", "v")); !reflect.DeepEqual(r, bad) {
		t.Fatalf("retry of a rejected seq: %+v", r)
	}
	// Another session's seq 1 is its own.
	other := d.open()
	if r := d.one(other, put(1, "k", "v2")); r.Code != OK || !r.Found {
		t.Fatalf("other session: %+v", r)
	}
}

func TestAckedBelowStale(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	for seq := uint64(1); seq <= 5; seq++ {
		d.one(sess, put(seq, fmt.Sprint("k", seq), "v"))
	}
	rev := d.s.Revision()
	// Ack seqs < 4, retry 3 (forgotten) and 4 (saved) in the same batch.
	rs := d.batch(sess, 4, put(3, "k3", "again"), put(4, "k4", "again"), put(6, "k6", "v"))
	if rs[0].Code != StaleSequence {
		t.Fatalf("seq 3 after ack 4: %+v", rs[0])
	}
	if rs[1].Code != OK || rs[1].Revision != 4 {
		t.Fatalf("seq 4 after ack 4: %+v", rs[1])
	}
	if rs[2].Code != OK || d.s.Revision() != rev+1 {
		t.Fatalf("seq 6: %+v rev %d", rs[2], d.s.Revision())
	}
	// The mark never goes down.
	if r := d.batch(sess, 2, put(3, "k3", "x"))[0]; r.Code != StaleSequence {
		t.Fatalf("seq 3 after a lower ack: %+v", r)
	}
}

func TestMaxSavedResults(t *testing.T) {
	d := newDriver(t, Config{MaxSavedResults: 3})
	sess := d.open()
	for seq := uint64(1); seq <= 4; seq++ {
		d.one(sess, put(seq, "k", fmt.Sprint(seq)))
	}
	rev := d.s.Revision()
	if r := d.one(sess, put(1, "k", "x")); r.Code != StaleSequence {
		t.Fatalf("evicted seq 1: %+v", r)
	}
	if r := d.one(sess, put(2, "k", "x")); r.Code != OK || r.Revision != 2 {
		t.Fatalf("saved seq 2: %+v", r)
	}
	// A seq below an evicted one that was never applied is stale too: it
	// cannot be told apart from a forgotten one.
	d.one(sess, put(10, "k", "x"))
	d.one(sess, put(11, "k", "x"))
	d.one(sess, put(12, "k", "x"))
	d.one(sess, put(13, "k", "x")) // saved: 11, 12, 13; 10 evicted
	if r := d.one(sess, put(6, "k", "x")); r.Code != StaleSequence {
		t.Fatalf("seq 6 below the evicted seq 10: %+v", r)
	}
	if d.s.Revision() != rev+4 {
		t.Fatalf("revision %d, want %d", d.s.Revision(), rev+4)
	}
}

func TestSessionExpiryLogTime(t *testing.T) {
	sec := int64(time.Second)
	d := newDriver(t, Config{SessionTTL: 10 * time.Second})
	t0 := d.now
	sess := d.apply(Command{Kind: CmdOpenSession, Time: t0}).Session
	if r := d.apply(Command{Kind: CmdKeepAlive, Session: sess, Time: t0 + 5*sec}).Results; r[0].Code != OK {
		t.Fatalf("keepalive: %+v", r)
	}
	// last activity t0+5s; alive through t0+15s inclusive.
	if r := d.apply(Command{Kind: CmdBatch, Session: sess, Time: t0 + 15*sec, Ops: []WriteOp{put(1, "k", "v")}}).Results; r[0].Code != OK {
		t.Fatalf("write at the TTL boundary: %+v", r)
	}
	// The clock never goes back: a command stamped earlier runs at t0+15s.
	if r := d.apply(Command{Kind: CmdKeepAlive, Session: sess, Time: t0}).Results; r[0].Code != OK {
		t.Fatalf("keepalive with an old time: %+v", r)
	}
	if d.s.Clock() != t0+15*sec {
		t.Fatalf("clock %d, want %d", d.s.Clock(), t0+15*sec)
	}
	// Another session's entries move the clock past the TTL.
	other := d.apply(Command{Kind: CmdOpenSession, Time: t0 + 25*sec}).Session
	if d.s.Sessions() != 2 {
		t.Fatalf("%d sessions at t0+25s, want 2", d.s.Sessions())
	}
	d.apply(Command{Kind: CmdKeepAlive, Session: other, Time: t0 + 25*sec + 1})
	if d.s.Sessions() != 1 {
		t.Fatalf("%d sessions after the TTL, want 1", d.s.Sessions())
	}
	// Even with an old time stamp, the expired session stays expired.
	rs := d.apply(Command{Kind: CmdBatch, Session: sess, Time: t0, Ops: []WriteOp{put(2, "k", "x"), put(3, "k", "y")}}).Results
	for _, r := range rs {
		if r.Code != SessionExpired {
			t.Fatalf("write on an expired session: %+v", r)
		}
	}
	if kv, _, _ := d.s.Get([]byte("k")); string(kv.Value) != "v" {
		t.Fatalf("expired session's write applied: %q", kv.Value)
	}
	if r := d.apply(Command{Kind: CmdCloseSession, Session: sess}).Results; r[0].Code != SessionExpired {
		t.Fatalf("close of an expired session: %+v", r)
	}
	if r := d.apply(Command{Kind: CmdCloseSession, Session: other}).Results; r[0].Code != OK || d.s.Sessions() != 0 {
		t.Fatalf("close: %+v, %d sessions", r, d.s.Sessions())
	}
	if r := d.apply(Command{Kind: CmdKeepAlive, Session: other}).Results; r[0].Code != SessionExpired {
		t.Fatalf("keepalive of a closed session: %+v", r)
	}
}

func TestExpiryExtremeTimes(t *testing.T) {
	d := newDriver(t, Config{SessionTTL: time.Second})
	sess := d.apply(Command{Kind: CmdOpenSession, Time: math.MaxInt64 - 10}).Session
	if r := d.apply(Command{Kind: CmdKeepAlive, Session: sess, Time: math.MaxInt64}).Results[0]; r.Code != OK {
		t.Fatalf("keepalive near the end of time: %+v", r)
	}
	if r := d.apply(Command{Kind: CmdKeepAlive, Session: sess, Time: math.MinInt64}).Results[0]; r.Code != OK {
		t.Fatalf("keepalive with the minimum time: %+v", r)
	}
}

func TestMaxSessionsEviction(t *testing.T) {
	run := func() []byte {
		d := newDriver(t, Config{MaxSessions: 3})
		t0 := d.now
		a := d.apply(Command{Kind: CmdOpenSession, Time: t0}).Session
		b := d.apply(Command{Kind: CmdOpenSession, Time: t0 + 1}).Session
		c := d.apply(Command{Kind: CmdOpenSession, Time: t0 + 2}).Session
		d.apply(Command{Kind: CmdKeepAlive, Session: a, Time: t0 + 3})
		// Full: opening evicts the least recently active, b.
		e := d.apply(Command{Kind: CmdOpenSession, Time: t0 + 3}).Session
		if d.s.Sessions() != 3 {
			t.Fatalf("%d sessions, want 3", d.s.Sessions())
		}
		if r := d.apply(Command{Kind: CmdKeepAlive, Session: b, Time: t0 + 3}).Results[0]; r.Code != SessionExpired {
			t.Fatalf("evicted session b: %+v", r)
		}
		// Now a and e are at t0+3 (keepalive and open), c at t0+2: c goes.
		d.apply(Command{Kind: CmdOpenSession, Time: t0 + 3})
		if r := d.apply(Command{Kind: CmdKeepAlive, Session: c, Time: t0 + 3}).Results[0]; r.Code != SessionExpired {
			t.Fatalf("evicted session c: %+v", r)
		}
		// Tie at t0+3 between a, e and the newest: the lowest id, a, goes.
		d.apply(Command{Kind: CmdOpenSession, Time: t0 + 3})
		if r := d.apply(Command{Kind: CmdKeepAlive, Session: a, Time: t0 + 3}).Results[0]; r.Code != SessionExpired {
			t.Fatalf("tie: session a survived: %+v", r)
		}
		if r := d.apply(Command{Kind: CmdKeepAlive, Session: e, Time: t0 + 3}).Results[0]; r.Code != OK {
			t.Fatalf("tie: session e evicted: %+v", r)
		}
		return snapBytes(t, d.s)
	}
	if !bytes.Equal(run(), run()) {
		t.Fatal("two runs of the same entries differ")
	}
}

func TestApplyIndexAndNoops(t *testing.T) {
	s := New(Config{})
	if a := s.Apply(0, nil); !errors.Is(a.Err, ErrIndex) {
		t.Fatalf("Apply(0): %v", a.Err)
	}
	if a := s.Apply(3, nil); a.Err != nil || s.AppliedIndex() != 3 {
		t.Fatalf("no-op at 3: %v, applied %d", a.Err, s.AppliedIndex())
	}
	if a := s.Apply(3, nil); !errors.Is(a.Err, ErrIndex) || s.AppliedIndex() != 3 {
		t.Fatalf("Apply(3) again: %v", a.Err)
	}
	s.SetApplied(7)
	s.SetApplied(5)
	if s.AppliedIndex() != 7 {
		t.Fatalf("applied %d after SetApplied(7), SetApplied(5)", s.AppliedIndex())
	}
	before := snapBytes(t, s)
	a := s.Apply(8, []byte{commandVersion, 42})
	if !errors.Is(a.Err, ErrMalformed) || s.AppliedIndex() != 8 {
		t.Fatalf("garbage entry: %v, applied %d", a.Err, s.AppliedIndex())
	}
	after := snapBytes(t, s)
	// Only the applied index (bytes 9..17 of the snapshot) changed.
	before[9], after[9] = 0, 0
	if !bytes.Equal(before[:len(before)-4], after[:len(after)-4]) {
		t.Fatal("garbage entry changed the state beyond the applied index")
	}
	// Open session id is the entry's index, with gaps.
	a = s.Apply(12, enc(Command{Kind: CmdOpenSession, ID: 77}))
	if a.Err != nil || a.Session != 12 || a.ID != 77 || a.Kind != CmdOpenSession {
		t.Fatalf("open at 12: %+v", a)
	}
}

// TestKeysDoNotAlias checks the store copies what it keeps.
func TestKeysDoNotAlias(t *testing.T) {
	s := New(Config{})
	s.Apply(1, enc(Command{Kind: CmdOpenSession}))
	data := enc(Command{Kind: CmdBatch, Session: 1, Ops: []WriteOp{put(1, "key", "value")}})
	s.Apply(2, data)
	for i := range data {
		data[i] = 'X'
	}
	kv, found, _ := s.Get([]byte("key"))
	if !found || string(kv.Key) != "key" || string(kv.Value) != "value" {
		t.Fatalf("stored key-value changed with the entry's buffer: %q %q %v", kv.Key, kv.Value, found)
	}
}

func TestRangePaging(t *testing.T) {
	d := newDriver(t, Config{MaxRangeLimit: 3})
	sess := d.open()
	keys := []string{"a", "b/1", "b/2", "b/3", "b/4", "b/5", "c"}
	for i, k := range keys {
		d.one(sess, put(uint64(i+1), k, k))
	}
	var got []string
	var after []byte
	for pages := 0; ; pages++ {
		kvs, more, rev := d.s.Range([]byte("b/"), after, 0)
		if rev != uint64(len(keys)) || len(kvs) > 3 || pages > 3 {
			t.Fatalf("page %d: %d kvs rev %d", pages, len(kvs), rev)
		}
		for _, kv := range kvs {
			got = append(got, string(kv.Key))
		}
		if !more {
			break
		}
		after = kvs[len(kvs)-1].Key
	}
	if fmt.Sprint(got) != "[b/1 b/2 b/3 b/4 b/5]" {
		t.Fatalf("pages: %v", got)
	}
	if kvs, more, _ := d.s.Range(nil, []byte("b/5"), 10); len(kvs) != 1 || more || string(kvs[0].Key) != "c" {
		t.Fatalf("after b/5: %v %v", kvs, more)
	}
	if kvs, more, _ := d.s.Range([]byte("b/"), []byte("a"), 2); len(kvs) != 2 || !more || string(kvs[0].Key) != "b/1" {
		t.Fatalf("after before the prefix: %v %v", kvs, more)
	}
	if kvs, more, _ := d.s.Range([]byte("b/"), []byte("c"), 2); len(kvs) != 0 || more {
		t.Fatalf("after past the prefix: %v %v", kvs, more)
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []fmt.Stringer{OK, SessionExpired, StaleSequence, InvalidArgument, TooLarge, Internal, Code(99),
		CmdBatch, CmdOpenSession, CmdKeepAlive, CmdCloseSession, CommandKind(0),
		OpPut, OpDelete, OpCAS, OpType(0), CompareValue, CompareModRevision, CompareAbsent, CompareKind(0)} {
		if c.String() == "" {
			t.Errorf("%#v has an empty String", c)
		}
	}
	if Code(99).String() != "Code(99)" || TooLarge.String() != "TooLarge" {
		t.Errorf("Code strings: %v %v", Code(99), TooLarge)
	}
	if got := New(Config{}).Config(); got.SessionTTL != DefaultSessionTTL || got.MaxRangeLimit != DefaultMaxRangeLimit {
		t.Errorf("defaults: %+v", got)
	}
}

// TestEntrySizes writes keys and values around the inline buffer sizes.
func TestEntrySizes(t *testing.T) {
	d := newDriver(t, Config{})
	sess := d.open()
	var seq uint64
	for _, n := range []int{0, 1, 39, 40, 41, 56, 57, 88, 89, 184, 185, 4000} {
		for _, klen := range []int{1, n / 2, n} {
			if klen == 0 || klen > n && n > 0 {
				continue
			}
			key := bytes.Repeat([]byte{'k'}, klen)
			key = append(key, fmt.Sprint(n)...)
			value := bytes.Repeat([]byte{'v'}, max(0, n-klen))
			seq++
			if r := d.one(sess, put(seq, string(key), string(value))); r.Code != OK {
				t.Fatalf("put %d+%d: %+v", len(key), len(value), r)
			}
			kv, found, _ := d.s.Get(key)
			if !found || !bytes.Equal(kv.Key, key) || !bytes.Equal(kv.Value, value) || (len(value) == 0) != (kv.Value == nil) {
				t.Fatalf("get %d+%d: %q %q %v", len(key), len(value), kv.Key, kv.Value, found)
			}
			if cap(kv.Key) != len(kv.Key) {
				t.Fatalf("key %d+%d: capacity %d lets an append overwrite the value", len(key), len(value), cap(kv.Key))
			}
		}
	}
	if b := snapBytes(t, d.s); !bytes.Equal(snapBytes(t, restored(t, Config{}, b)), b) {
		t.Fatal("round trip differs")
	}
}
