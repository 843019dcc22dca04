package kv

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
)

// storedExpiry returns the expiry s keeps for a revoked id, and whether it
// keeps the id at all.
func storedExpiry(s *Store, id [16]byte) (int64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.revoked.Get(revocation{id: id})
	return r.expires, ok
}

// TestRevokingAgainKeepsTheLaterExpiry checks the merge of revocations of
// one id: the later expiry wins and never beats any expiry.
func TestRevokingAgainKeepsTheLaterExpiry(t *testing.T) {
	d := newDriver(t, Config{})
	later := func(s time.Duration) int64 { return d.now + int64(s) }
	a, b := tokenID(1, 0), tokenID(2, 0)
	steps := []struct {
		id       [16]byte
		expires  int64
		want     int64
		succeeds bool
	}{
		{a, later(time.Minute), later(time.Minute), true},
		{a, later(time.Second), later(time.Minute), false}, // earlier: kept
		{a, later(time.Hour), later(time.Hour), true},      // later: extends
		{a, 0, 0, true},                     // never beats any expiry
		{a, later(2 * time.Hour), 0, false}, // and stays
		{b, 0, 0, true},
		{b, 0, 0, false},
	}
	for i, st := range steps {
		r := d.apply(revokeCmd(st.id, st.expires)).Results[0]
		if r.Code != OK || r.Succeeded != st.succeeds {
			t.Fatalf("step %d: revoke %x until %d: %+v, want succeeded %v", i, st.id, st.expires, r, st.succeeds)
		}
		if exp, ok := storedExpiry(d.s, st.id); !ok || exp != st.want || !d.s.Revoked(st.id) {
			t.Fatalf("step %d: revocation %x kept %v until %d, want %d", i, st.id, ok, exp, st.want)
		}
		checkInvariants(t, d.s)
	}
	if d.s.Revoked(tokenID(3, 0)) {
		t.Fatal("an id never revoked is revoked")
	}
}

// TestRevocationsAreForgottenOnceTheClockPassesTheirExpiry checks a
// revocation is kept while the log clock is at or before its expiry and
// forgotten by the first entry after, on every store alike; one that
// expired before it was applied is not kept, and never-expiring ones stay.
func TestRevocationsAreForgottenOnceTheClockPassesTheirExpiry(t *testing.T) {
	d := newDriver(t, Config{SessionTTL: 24 * time.Hour})
	t0 := d.now
	soon, later, never := tokenID(1, 0), tokenID(2, 0), tokenID(3, 0)
	d.apply(revokeCmd(soon, t0+int64(5*time.Second)))
	d.apply(revokeCmd(later, t0+int64(10*time.Second)))
	d.apply(revokeCmd(never, 0))
	twin := restored(t, Config{SessionTTL: 24 * time.Hour}, snapBytes(t, d.s))
	steps := []struct {
		at                  int64
		soon, later, never2 bool
	}{
		{t0 + int64(5*time.Second), true, true, true}, // at the expiry: kept
		{t0 + int64(5*time.Second) + 1, false, true, true},
		{t0, false, true, true}, // the clock never goes back
		{t0 + int64(10*time.Second) + 1, false, false, true},
		{t0 + int64(time.Hour), false, false, true},
	}
	for i, st := range steps {
		c := Command{Kind: CmdOpenSession, Time: st.at}
		d.apply(c)
		twin.Apply(d.idx, enc(c))
		got := [3]bool{d.s.Revoked(soon), d.s.Revoked(later), d.s.Revoked(never)}
		if want := [3]bool{st.soon, st.later, st.never2}; got != want {
			t.Fatalf("step %d at clock %d: revoked %v, want %v", i, d.s.Clock(), got, want)
		}
		checkInvariants(t, d.s)
		if !bytes.Equal(snapBytes(t, d.s), snapBytes(t, twin)) {
			t.Fatalf("step %d: a restored twin forgets differently", i)
		}
	}
	// Already expired when applied: OK, nothing kept.
	r := d.apply(revokeCmd(soon, d.s.Clock()-1)).Results[0]
	if r.Code != OK || r.Succeeded || d.s.Revoked(soon) {
		t.Fatalf("revocation expired before it was applied: %+v, revoked %v", r, d.s.Revoked(soon))
	}
	// Expiring at the clock: kept.
	if r := d.apply(revokeCmd(soon, d.s.Clock())).Results[0]; r.Code != OK || !r.Succeeded || !d.s.Revoked(soon) {
		t.Fatalf("revocation expiring at the clock: %+v, revoked %v", r, d.s.Revoked(soon))
	}
}

// TestRevokeRejectsANegativeExpiry checks a negative expiry answers
// InvalidArgument and revokes nothing.
func TestRevokeRejectsANegativeExpiry(t *testing.T) {
	d := newDriver(t, Config{})
	r := d.apply(revokeCmd(tokenID(1, 0), -1)).Results[0]
	if r.Code != InvalidArgument || r.Message == "" || r.Succeeded || d.s.Revoked(tokenID(1, 0)) {
		t.Fatalf("negative expiry: %+v, revoked %v", r, d.s.Revoked(tokenID(1, 0)))
	}
}

// TestRevocationEpochCountsRevocationsAndRestores checks the epoch moves
// with every applied revocation and every restore, and with nothing else.
func TestRevocationEpochCountsRevocationsAndRestores(t *testing.T) {
	d := newDriver(t, Config{})
	epoch := d.s.RevocationEpoch()
	step := func(name string, moved bool) {
		t.Helper()
		now := d.s.RevocationEpoch()
		if (now != epoch) != moved || now < epoch {
			t.Fatalf("%s: epoch %d -> %d, want moved %v", name, epoch, now, moved)
		}
		epoch = now
	}
	sess := d.open()
	d.one(sess, put(1, "k", "v"))
	d.apply(tokenKeyCmd(1, secret(32, 1)))
	step("no revocation yet", false)
	d.apply(revokeCmd(tokenID(1, 0), 0))
	step("a revocation", true)
	d.apply(revokeCmd(tokenID(1, 0), 0))
	step("the same revocation again", true)
	d.apply(revokeCmd(tokenID(1, 0), -1))
	step("a malformed revocation", false)
	good := snapBytes(t, d.s)
	if err := d.s.Restore(bytes.NewReader(good[:len(good)-1])); err == nil {
		t.Fatal("a truncated snapshot restored")
	}
	step("a failed restore", false)
	if err := d.s.Restore(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	step("a restore", true)
}

// TestRevocationsAreCapped fills the revocations to MaxRevocations: a new
// id answers TooLarge, a known id may still be extended, and the full
// store snapshots and restores (Restore's cap admits every state Apply
// can reach).
func TestRevocationsAreCapped(t *testing.T) {
	if testing.Short() {
		t.Skip("fills MaxRevocations (262144) revocations")
	}
	d := newDriver(t, Config{})
	for i := range uint64(MaxRevocations) {
		var id [16]byte
		binary.BigEndian.PutUint64(id[8:], i)
		d.s.revoked.ReplaceOrInsert(revocation{id: id}) // as MaxRevocations CmdRevokes would
	}
	if r := d.apply(revokeCmd(tokenID(1, 0), 0)).Results[0]; r.Code != TooLarge || d.s.Revoked(tokenID(1, 0)) {
		t.Fatalf("a new revocation over the cap: %+v", r)
	}
	if r := d.apply(revokeCmd([16]byte{15: 7}, d.now+1)).Results[0]; r.Code != OK {
		t.Fatalf("a known revocation at the cap: %+v", r)
	}
	if r := d.apply(revokeCmd(tokenID(1, 0), d.now-1)).Results[0]; r.Code != OK || r.Succeeded {
		t.Fatalf("an expired revocation at the cap: %+v", r)
	}
	b := snapBytes(t, d.s)
	if r := restored(t, Config{}, b); !r.Revoked([16]byte{15: 7}) {
		t.Fatal("the restored full store lost a revocation")
	}
}
