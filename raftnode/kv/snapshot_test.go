package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// richStore returns a driver whose store has keys (one bigger than the
// snapshot buffers), several sessions with saved results (found, not
// found, errors) and an acked mark, token keys and revocations (one
// forgotten by the entries to come), plus the entries still to come.
func richStore(t testing.TB) (*driver, []Command) {
	d := newDriver(t, Config{MaxSavedResults: 8, SessionTTL: time.Minute})
	s1, s2 := d.open(), d.open()
	big := bytes.Repeat([]byte("0123456789abcdef"), 40<<10) // 640 KiB
	for i := range 2000 {
		d.one(s1, put(uint64(i+1), fmt.Sprintf("key/%05d", i), fmt.Sprint(i)))
	}
	d.batch(s1, 1995, put(2001, "big", string(big)), del(2002, "key/00003"), put(2003, "", ""))
	d.batch(s2, 0, WriteOp{Seq: 1, Type: OpCAS, Key: []byte("key/00004"), Compare: CompareValue, CompareValue: []byte("nope")})
	d.apply(tokenKeyCmd(1, secret(32, 1)))
	d.apply(tokenKeyCmd(3, secret(64, 3)))
	d.apply(revokeCmd(tokenID(1, 0), d.now+int64(time.Minute)))
	d.apply(revokeCmd(tokenID(2, 0), d.now+int64(time.Hour)))
	d.apply(revokeCmd(tokenID(3, 0), 0))
	d.s.SetApplied(d.idx + 3)
	d.idx += 3
	d.open()
	next := []Command{
		{Kind: CmdBatch, Session: s1, Ops: []WriteOp{put(2001, "retry", "x"), put(1990, "stale", "x"), put(2004, "big", "small")}},
		{Kind: CmdBatch, Session: s2, Ops: []WriteOp{{Seq: 1, Type: OpDelete, Key: []byte("key/00004")}, del(2, "key/00005")}},
		{Kind: CmdKeepAlive, Session: s1, Time: d.now + int64(50*time.Second)},
		{Kind: CmdOpenSession, Time: d.now + int64(70*time.Second)}, // s2 and the third expire
		{Kind: CmdBatch, Session: s2, Ops: []WriteOp{put(3, "k", "v")}},
		{Kind: CmdBatch, Session: s1, AckedBelow: 2004, Ops: []WriteOp{put(2005, "key/00006", "")}},
		tokenKeyCmd(2, secret(40, 2)),
		tokenKeyCmd(3, secret(40, 9)),
		revokeCmd(tokenID(2, 0), 0),
		revokeCmd(tokenID(4, 0), d.now+int64(2*time.Minute)),
	}
	return d, next
}

// TestSnapshotRoundTrip restores mid-stream and checks the restored store
// answers the next entries (retries of saved results included) like the
// original and snapshots to the same bytes.
func TestSnapshotRoundTrip(t *testing.T) {
	d, next := richStore(t)
	b := snapBytes(t, d.s)
	if sn := d.s.Snapshot(); sn.Index() != d.idx || sn.Revision() != d.s.Revision() {
		t.Fatalf("snapshot index %d revision %d, store %d %d", sn.Index(), sn.Revision(), d.idx, d.s.Revision())
	}
	r := restored(t, d.s.Config(), b)
	if !bytes.Equal(snapBytes(t, r), b) {
		t.Fatal("re-snapshot of the restored store differs")
	}
	if r.AppliedIndex() != d.s.AppliedIndex() || r.Revision() != d.s.Revision() || r.Sessions() != d.s.Sessions() ||
		r.Len() != d.s.Len() || r.Clock() != d.s.Clock() {
		t.Fatal("restored counters differ")
	}
	kvs1, more1, _ := d.s.Range(nil, nil, 0)
	kvs2, more2, _ := r.Range(nil, nil, 0)
	if more1 != more2 || !reflect.DeepEqual(kvs1, kvs2) {
		t.Fatal("restored keys differ")
	}
	for i, c := range next {
		if c.Time == 0 {
			c.Time = d.now
		}
		d.now = max(d.now, c.Time)
		d.idx++
		data := enc(c)
		want, got := d.s.Apply(d.idx, data), r.Apply(d.idx, data)
		if want.Err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("entry %d after restore:\n got  %+v\n want %+v", i, got, want)
		}
		if i == 0 && (want.Results[0].Revision != 2001 || want.Results[1].Code != StaleSequence) {
			t.Fatalf("saved result not returned after restore: %+v", want.Results)
		}
		if !bytes.Equal(snapBytes(t, d.s), snapBytes(t, r)) {
			t.Fatalf("entry %d: snapshots differ", i)
		}
	}
	// The entries forgot an expired revocation and added auth state.
	if id, _, _ := r.CurrentTokenKey(); r.Revoked(tokenID(1, 0)) || !r.Revoked(tokenID(4, 0)) || id != 3 {
		t.Fatalf("restored store after the entries: revoked %v %v, current key %d",
			r.Revoked(tokenID(1, 0)), r.Revoked(tokenID(4, 0)), id)
	}
}

// TestSnapshotIsolation checks a Snapshot does not see later changes,
// even when written while Apply goes on.
func TestSnapshotIsolation(t *testing.T) {
	d, next := richStore(t)
	sn := d.s.Snapshot()
	var first bytes.Buffer
	if _, err := sn.WriteTo(&first); err != nil {
		t.Fatal(err)
	}
	done := make(chan []byte)
	go func() {
		var buf bytes.Buffer
		_, _ = sn.WriteTo(&buf) // error checked through the bytes
		done <- buf.Bytes()
	}()
	for _, c := range next {
		d.apply(c)
		d.s.Snapshot() // more generations
	}
	for i := range 3000 {
		d.one(1, put(uint64(3000+i), fmt.Sprintf("key/%05d", i%2100), "changed"))
	}
	concurrent := <-done
	var last bytes.Buffer
	if _, err := sn.WriteTo(&last); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), last.Bytes()) || !bytes.Equal(first.Bytes(), concurrent) {
		t.Fatal("snapshot changed after later entries")
	}
	if bytes.Equal(first.Bytes(), snapBytes(t, d.s)) {
		t.Fatal("the store did not change")
	}
}

// reseal replaces b's trailing checksum with the right one.
func reseal(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli))
}

// TestRestoreRejects feeds corrupt snapshots to a store with state and
// checks each is refused with the store unchanged.
func TestRestoreRejects(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewSource(seed))
	src := newDriver(t, Config{})
	sess := src.open()
	src.batch(sess, 0, put(1, "a", "1"), put(2, "b", "2"), put(3, "c", ""), put(4, "a", "3"))
	good := snapBytes(t, src.s)

	target, _ := richStore(t)
	before := snapBytes(t, target.s)
	checkR := func(name string, r io.Reader) {
		t.Helper()
		err := target.s.Restore(r)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, errReader) {
			t.Fatalf("%s: error %v wraps neither ErrMalformed nor the read error", name, err)
		}
		if !bytes.Equal(snapBytes(t, target.s), before) {
			t.Fatalf("%s: store changed", name)
		}
	}
	check := func(name string, b []byte) {
		t.Helper()
		checkR(name, bytes.NewReader(b))
	}
	for n := range len(good) {
		check(fmt.Sprint("truncated to ", n), good[:n])
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= byte(1 + rng.Intn(255))
		check(fmt.Sprint("byte ", i, " flipped"), b)
	}
	check("trailing byte", append(bytes.Clone(good), 0))
	checkR("read error", io.MultiReader(bytes.NewReader(good[:20]), iotest.ErrReader(errReader)))

	// Content errors behind a valid checksum.
	// hdr is a header and leases (none unless given).
	hdr := func(applied, rev uint64, leases ...[]byte) []byte {
		b := append([]byte(snapMagic), snapVersion)
		b = binary.LittleEndian.AppendUint64(b, applied)
		b = binary.LittleEndian.AppendUint64(b, rev)
		b = binary.LittleEndian.AppendUint64(b, 100)
		b = append(b, byte(len(leases)))
		return append(b, bytes.Join(leases, nil)...)
	}
	lease := func(id, ttl byte, prefix string) []byte {
		b := append([]byte{id, ttl}, make([]byte, 8)...)
		return append(append(b, byte(len(prefix))), prefix...)
	}
	sealed := func(parts ...[]byte) []byte {
		return reseal(append(bytes.Join(parts, nil), 0, 0, 0, 0))
	}
	kvl := func(k string, create, mod, ver, lease byte) []byte {
		return append(append([]byte{byte(len(k))}, k...), 0, create, mod, ver, lease)
	}
	kv := func(k string, create, mod, ver byte) []byte { return kvl(k, create, mod, ver, 0) }
	noSessions, noAuth, noKeys := []byte{0}, []byte{0, 0}, []byte{0}
	cases := map[string][]byte{
		"magic":            reseal(append([]byte("XRKVSNAP"), good[8:]...)),
		"version":          reseal(append(append([]byte(snapMagic), snapVersion+1), good[9:]...)),
		"format version 0": reseal(append(append([]byte(snapMagic), 0), good[9:]...)),
		"v1 with auth":     reseal(append(append([]byte(snapMagic), snapVersionV1), good[9:]...)),
		"keys unordered":   sealed(hdr(5, 5), []byte{2}, kv("b", 1, 1, 1), kv("a", 2, 2, 1), noSessions, noAuth),
		"duplicate key":    sealed(hdr(5, 5), []byte{2}, kv("a", 1, 1, 1), kv("a", 2, 2, 1), noSessions, noAuth),
		"empty key":        sealed(hdr(5, 5), []byte{1}, kv("", 1, 1, 1), noSessions, noAuth),
		"mod above rev":    sealed(hdr(5, 5), []byte{1}, kv("a", 1, 6, 1), noSessions, noAuth),
		"create above":     sealed(hdr(5, 5), []byte{1}, kv("a", 3, 2, 1), noSessions, noAuth),
		"version 0":        sealed(hdr(5, 5), []byte{1}, kv("a", 1, 1, 0), noSessions, noAuth),
		"key length huge":  sealed(hdr(5, 5), []byte{1, 0xff, 0xff, 0xff, 0xff, 0x0f}, noSessions),
		"key count huge":   sealed(hdr(5, 5), []byte{0xff, 0xff, 0xff, 0xff, 0x0f}),
		"session above":    sealed(hdr(5, 5), []byte{0, 1, 6}, make([]byte, 8), []byte{0, 0}, noAuth),
		"session order":    sealed(hdr(5, 5), []byte{0, 2, 3}, make([]byte, 8), []byte{0, 0, 2}, make([]byte, 8), []byte{0, 0}, noAuth),
		"session future":   sealed(hdr(5, 5), []byte{0, 1, 3}, binary.LittleEndian.AppendUint64(nil, 101), []byte{0, 0}, noAuth),
		"seq 0":            sealed(hdr(5, 5), []byte{0, 1, 3}, make([]byte, 8), []byte{0, 1, 0, 0, 0, 0, 0}, noAuth),
		"seq below mark":   sealed(hdr(5, 5), []byte{0, 1, 3}, make([]byte, 8), []byte{4, 1, 3, 0, 0, 0, 0}, noAuth),
		"bad code":         sealed(hdr(5, 5), []byte{0, 1, 3}, make([]byte, 8), []byte{0, 1, 1, 9, 0, 0, 0}, noAuth),
		"bad flags":        sealed(hdr(5, 5), []byte{0, 1, 3}, make([]byte, 8), []byte{0, 1, 1, 0, 4, 0, 0}, noAuth),
		"result rev":       sealed(hdr(5, 5), []byte{0, 1, 3}, make([]byte, 8), []byte{0, 1, 1, 0, 0, 6, 0}, noAuth),
		"non-minimal":      sealed(hdr(5, 5), []byte{0x80, 0}, noSessions, noAuth),
		"unknown lease":    sealed(hdr(5, 5, lease(2, 1, "")), []byte{1}, kvl("a", 1, 1, 1, 3), noSessions, noAuth),
		"lease prefix":     sealed(hdr(5, 5, lease(2, 1, "b")), []byte{1}, kvl("a", 1, 1, 1, 2), noSessions, noAuth),
		"leases unordered": sealed(hdr(5, 5, lease(3, 1, ""), lease(2, 1, "")), noKeys, noSessions, noAuth),
		"lease above":      sealed(hdr(5, 5, lease(6, 1, "")), noKeys, noSessions, noAuth),
		"lease ttl 0":      sealed(hdr(5, 5, lease(2, 0, "")), noKeys, noSessions, noAuth),
		"prev with lease":  sealed(hdr(5, 5, lease(2, 1, "")), []byte{1}, kv("a", 1, 2, 2), []byte{1, 3}, make([]byte, 8), []byte{0, 1, 1, 0, resFlagFound, 2, 0}, kvl("a", 1, 1, 1, 2), noAuth),
	}
	for name, b := range cases {
		check(name, b)
	}

	// The auth section, each refused for its own reason.
	key := func(id byte, n int) []byte { return append([]byte{id, byte(n)}, secret(n, id)...) }
	rv := func(id [16]byte, expires int64) []byte {
		return binary.LittleEndian.AppendUint64(id[:], uint64(expires))
	}
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"key id 0":              {sealed(hdr(5, 5), noKeys, noSessions, []byte{1}, key(0, 32), []byte{0}), "token key id 0"},
		"keys unordered":        {sealed(hdr(5, 5), noKeys, noSessions, []byte{2}, key(2, 32), key(1, 32), []byte{0}), "id 1 not after 2"},
		"duplicate key":         {sealed(hdr(5, 5), noKeys, noSessions, []byte{2}, key(1, 32), key(1, 40), []byte{0}), "id 1 not after 1"},
		"short secret":          {sealed(hdr(5, 5), noKeys, noSessions, []byte{1}, key(1, 31), []byte{0}), "31-byte secret"},
		"long secret":           {sealed(hdr(5, 5), noKeys, noSessions, []byte{1}, key(1, 65), []byte{0}), "length 65 over the limit"},
		"key count":             {sealed(hdr(5, 5), noKeys, noSessions, binary.AppendUvarint(nil, MaxTokenKeys+1)), "token keys, over the limit"},
		"revocations unordered": {sealed(hdr(5, 5), noKeys, noSessions, []byte{0, 2}, rv(tokenID(2, 0), 0), rv(tokenID(1, 9), 0)), "not after"},
		"duplicate revocation":  {sealed(hdr(5, 5), noKeys, noSessions, []byte{0, 2}, rv(tokenID(1, 0), 0), rv(tokenID(1, 0), 200)), "not after"},
		"revocation expired":    {sealed(hdr(5, 5), noKeys, noSessions, []byte{0, 1}, rv(tokenID(1, 0), 99)), "before the clock"},
		"negative expiry":       {sealed(hdr(5, 5), noKeys, noSessions, []byte{0, 1}, rv(tokenID(1, 0), -1)), "before the clock"},
		"revocation count":      {sealed(hdr(5, 5), noKeys, noSessions, []byte{0}, binary.AppendUvarint(nil, MaxRevocations+1)), "revocations, over the limit"},
		"revocation truncated":  {sealed(hdr(5, 5), noKeys, noSessions, []byte{0, 1}, rv(tokenID(1, 0), 0)[:12]), "truncated"},
	} {
		check(name, c.b)
		if err := target.s.Restore(bytes.NewReader(c.b)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to say %q", name, err, c.want)
		}
	}

	// The hand-made encoding is right: valid ones pass.
	for _, ok := range [][]byte{
		sealed(hdr(5, 5), []byte{1}, kv("a", 1, 2, 2), []byte{1, 3}, make([]byte, 8), []byte{0, 1, 1, 0, resFlagFound, 2, 0}, kv("a", 1, 1, 1), noAuth),
		sealed(hdr(5, 5), noKeys, noSessions, []byte{2}, key(1, 32), key(2, 64), []byte{3}, rv(tokenID(1, 0), 0), rv(tokenID(1, 1), 100), rv(tokenID(2, 0), 101)),
		sealed(hdr(5, 5, lease(2, 1, "a"), lease(4, 9, "")), []byte{3}, kvl("a", 1, 1, 1, 2), kvl("ab", 1, 1, 1, 2), kvl("b", 1, 1, 1, 4), noSessions, noAuth),
	} {
		s := New(Config{})
		if err := s.Restore(bytes.NewReader(ok)); err != nil {
			t.Fatalf("hand-made valid snapshot: %v", err)
		}
		if !bytes.Equal(snapBytes(t, s), ok) {
			t.Fatal("hand-made snapshot re-encodes differently")
		}
	}
}

var errReader = errors.New("disk on fire")

// errWriter fails after n bytes.
type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		n := w.n
		w.n = 0
		return n, errReader
	}
	w.n -= len(p)
	return len(p), nil
}

func TestWriteToError(t *testing.T) {
	d, _ := richStore(t)
	sn := d.s.Snapshot()
	full, err := sn.WriteTo(io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 10, 300 << 10, int(full) - 2} {
		w := &errWriter{n: n}
		got, err := sn.WriteTo(w)
		if !errors.Is(err, errReader) || got != int64(n) {
			t.Fatalf("writer failing after %d: %d, %v", n, got, err)
		}
	}
}

// TestRestoreLyingLength checks a huge length is not allocated up front.
func TestRestoreLyingLength(t *testing.T) {
	b := append([]byte(snapMagic), snapVersion)
	b = append(b, make([]byte, 24)...)
	b = append(b, 1)                                  // one key
	b = binary.AppendUvarint(b, maxSnapBytes)         // of 1 GiB
	b = append(b, bytes.Repeat([]byte{'k'}, 1000)...) // but 1000 bytes
	s := New(Config{})
	var ms1, ms2 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	err := s.Restore(bytes.NewReader(b))
	runtime.ReadMemStats(&ms2)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("lying length: %v", err)
	}
	if grew := ms2.TotalAlloc - ms1.TotalAlloc; grew > 8<<20 {
		t.Fatalf("Restore of a lying 1 GiB length allocated %d bytes", grew)
	}
}
