package kv

import (
	"bytes"
	"flag"
	"math/rand"
	"testing"
	"time"
)

var seedFlag = flag.Int64("seed", 0, "seed for the randomized tests (0: time-based)")

// testSeed returns the seed to use and logs it so a failure can be replayed.
func testSeed(t testing.TB) int64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with: go test ./raftnode/kv -run '%s' -seed %d", t.Name(), seed)
		}
	})
	return seed
}

// enc encodes c.
func enc(c Command) []byte { return c.AppendBinary(nil) }

// snapBytes serializes a snapshot of s.
func snapBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := s.Snapshot().WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// restored returns a new store restored from b.
func restored(t testing.TB, cfg Config, b []byte) *Store {
	t.Helper()
	s := New(cfg)
	if err := s.Restore(bytes.NewReader(b)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s
}

// driver applies commands at consecutive indexes.
type driver struct {
	t   testing.TB
	s   *Store
	idx uint64
	now int64
}

func newDriver(t testing.TB, cfg Config) *driver {
	return &driver{t: t, s: New(cfg), now: int64(time.Hour)}
}

func (d *driver) apply(c Command) Applied {
	d.t.Helper()
	d.idx++
	if c.Time == 0 {
		c.Time = d.now
	}
	a := d.s.Apply(d.idx, enc(c))
	if a.Err != nil {
		d.t.Fatalf("Apply(%d, %+v): %v", d.idx, c, a.Err)
	}
	return a
}

func (d *driver) open() uint64 {
	d.t.Helper()
	return d.apply(Command{Kind: CmdOpenSession}).Session
}

func (d *driver) batch(sess, acked uint64, ops ...WriteOp) []Result {
	d.t.Helper()
	return d.apply(Command{Kind: CmdBatch, Session: sess, AckedBelow: acked, Ops: ops}).Results
}

func (d *driver) one(sess uint64, op WriteOp) Result {
	d.t.Helper()
	r := d.batch(sess, 0, op)
	if len(r) != 1 {
		d.t.Fatalf("%d results for one op", len(r))
	}
	return r[0]
}

func put(seq uint64, k, v string) WriteOp {
	return WriteOp{Seq: seq, Type: OpPut, Key: []byte(k), Value: []byte(v)}
}

func del(seq uint64, k string) WriteOp {
	return WriteOp{Seq: seq, Type: OpDelete, Key: []byte(k)}
}

// tokenKeyCmd returns a CmdTokenKey adding secret as key id.
func tokenKeyCmd(id uint64, secret []byte) Command {
	return Command{Kind: CmdTokenKey, TokenKey: TokenKey{ID: id, Secret: secret}}
}

// revokeCmd returns a CmdRevoke of token id until expires.
func revokeCmd(id [16]byte, expires int64) Command {
	return Command{Kind: CmdRevoke, Revoke: Revocation{ID: id, Expires: expires}}
}

// secret returns an n-byte secret of b.
func secret(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// tokenID returns a token id starting with b and ending with last.
func tokenID(b, last byte) [16]byte { return [16]byte{0: b, 15: last} }

// randBytes returns n random bytes from a small alphabet, nil when n == 0.
func randBytes(rng *rand.Rand, n int) []byte {
	if n == 0 {
		return nil
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = "abc\x00\xff"[rng.Intn(5)]
	}
	return b
}

// checkInvariants checks the store's internal bookkeeping: every session
// has exactly one key in the lazy expiry index, at or before its last
// activity; saved results are in ascending seq order at or above the
// forgotten mark; token keys are in ascending id order with valid
// secrets; and exactly the revocations with an expiry, none before the
// clock, are in their expiry index.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.expiry.Len() != s.sessions.Len() {
		t.Fatalf("%d expiry keys for %d sessions", s.expiry.Len(), s.sessions.Len())
	}
	s.sessions.Ascend(func(it sessItem) bool {
		ss := it.s
		if ss.id != it.id || ss.indexed > ss.lastActive || !s.expiry.Has(expKey{last: ss.indexed, id: ss.id}) {
			t.Fatalf("session %d: indexed at %d, last active %d, key present %v",
				ss.id, ss.indexed, ss.lastActive, s.expiry.Has(expKey{last: ss.indexed, id: ss.id}))
		}
		if len(ss.results) > s.cfg.MaxSavedResults {
			t.Fatalf("session %d: %d saved results", ss.id, len(ss.results))
		}
		for i, r := range ss.results {
			if r.seq < ss.low || r.seq == 0 || (i > 0 && r.seq <= ss.results[i-1].seq) {
				t.Fatalf("session %d: saved seqs out of order or below the mark %d", ss.id, ss.low)
			}
		}
		return true
	})
	for i, k := range s.tokenKeys {
		if k.id == 0 || (i > 0 && k.id <= s.tokenKeys[i-1].id) || len(k.secret) < MinTokenKeySize || len(k.secret) > MaxTokenKeySize {
			t.Fatalf("token key %d: id %d with a %d-byte secret, out of order or size", i, k.id, len(k.secret))
		}
	}
	expiring := 0
	s.revoked.Ascend(func(r revocation) bool {
		if r.expires != 0 {
			expiring++
			if r.expires < s.clock || !s.revExpiry.Has(r) {
				t.Fatalf("revocation %x expires at %d (clock %d), indexed %v", r.id, r.expires, s.clock, s.revExpiry.Has(r))
			}
		}
		return true
	})
	if expiring != s.revExpiry.Len() {
		t.Fatalf("%d expiring revocations, %d in the expiry index", expiring, s.revExpiry.Len())
	}
}
