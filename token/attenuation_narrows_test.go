package token

import (
	"bytes"
	"errors"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// allows is the meaning of a Restriction: may its holder touch key (and
// write it) at time at?
func allows(r Restriction, key string, write bool, at time.Time) bool {
	if r.RestrictPrefix && !strings.HasPrefix(key, string(r.Prefix)) {
		return false
	}
	if write && r.ReadOnly {
		return false
	}
	return r.NotAfter.IsZero() || !at.After(r.NotAfter)
}

// probeKeys returns every string over the prefixes' alphabet up to length 5,
// so every prefix boundary is probed from both sides.
func probeKeys() []string {
	keys := []string{""}
	for i := 0; i < len(keys); i++ {
		if len(keys[i]) == 5 {
			continue
		}
		for _, c := range "ab/" {
			keys = append(keys, keys[i]+string(c))
		}
	}
	return keys
}

func randomPrefix(rng *rand.Rand, cur Restriction) []byte {
	var p []byte
	if cur.RestrictPrefix && rng.Intn(2) == 0 {
		p = append(p, cur.Prefix...) // usually extend the current prefix, so most steps succeed
	}
	for n := rng.Intn(3); n > 0; n-- {
		p = append(p, "ab/"[rng.Intn(3)])
	}
	return p
}

func randomRestriction(rng *rand.Rand, cur Restriction) Restriction {
	var r Restriction
	if rng.Intn(2) == 0 {
		r.RestrictPrefix, r.Prefix = true, randomPrefix(rng, cur)
	}
	r.ReadOnly = rng.Intn(4) == 0
	if rng.Intn(3) == 0 {
		r.NotAfter = testEpoch.Add(time.Duration(1+rng.Intn(5)) * time.Minute)
	}
	return r
}

// TestAttenuateOnlyNarrows attenuates random tokens by random restrictions
// and checks that each result allows exactly what both its parent and the
// restriction allow, for every probe key, write or not, at several times;
// and that a prefix outside the current one is refused.
func TestAttenuateOnlyNarrows(t *testing.T) {
	rng := seeded(t)
	keys := probeKeys()
	times := []time.Time{testEpoch, testEpoch.Add(2 * time.Minute), testEpoch.Add(4 * time.Minute), testEpoch.Add(time.Hour)}
	for chain := 0; chain < 300; chain++ {
		role, minted := Operator, Restriction{}
		if rng.Intn(2) == 0 {
			role, minted = Client, randomRestriction(rng, Restriction{})
		}
		tok := mustMint(t, role, minted)
		for step := 0; step < 8; step++ {
			cur := tok.Restriction()
			r := randomRestriction(rng, cur)
			next, err := tok.Attenuate(r)
			outside := r.RestrictPrefix && cur.RestrictPrefix && !bytes.HasPrefix(r.Prefix, cur.Prefix)
			if outside {
				if !errors.Is(err, ErrWiden) || !strings.Contains(err.Error(), "not within") {
					t.Fatalf("chain %d step %d: attenuating %+v by prefix %q: error %v, want ErrWiden", chain, step, cur, r.Prefix, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("chain %d step %d: attenuating %+v by %+v: %v", chain, step, cur, r, err)
			}
			// What travels is text: check the parsed form.
			next, err = Parse(next.String())
			if err != nil {
				t.Fatalf("chain %d step %d: Parse: %v", chain, step, err)
			}
			if next.ID() != tok.ID() || next.KeyID() != tok.KeyID() || next.Role() != role {
				t.Fatalf("chain %d step %d: attenuation changed id, key id or role", chain, step)
			}
			got := next.Restriction()
			for _, at := range times {
				g, verr := next.Verify(testKey, at)
				live := got.NotAfter.IsZero() || !at.After(got.NotAfter)
				if live != (verr == nil) || (!live && !errors.Is(verr, ErrExpired)) {
					t.Fatalf("chain %d step %d: Verify at %v with NotAfter %v: %v", chain, step, at, got.NotAfter, verr)
				}
				if verr == nil {
					wantRole := role
					if got.RestrictPrefix || got.ReadOnly {
						wantRole = Client
					}
					if g.Role != wantRole {
						t.Fatalf("chain %d step %d: grant role %v for token minted %v with %+v", chain, step, g.Role, role, got)
					}
					if !sameRestriction(g.Restriction, got) {
						t.Fatalf("chain %d step %d: grant %+v differs from Restriction() %+v", chain, step, g.Restriction, got)
					}
				}
				for _, k := range keys {
					for _, w := range []bool{false, true} {
						want := allows(cur, k, w, at) && allows(r, k, w, at)
						if allows(got, k, w, at) != want {
							t.Fatalf("chain %d step %d: %+v attenuated by %+v gave %+v; key %q write %v at %v: allowed %v, want %v",
								chain, step, cur, r, got, k, w, at, !want, want)
						}
					}
				}
			}
			tok = next
		}
	}
}

func TestAttenuateRefusesPrefixOutsideCurrent(t *testing.T) {
	tok := mustMint(t, Client, Restriction{RestrictPrefix: true, Prefix: []byte("app/")})
	for _, p := range []string{"", "ap", "other/", "app", "APP/x"} {
		_, err := tok.Attenuate(Restriction{RestrictPrefix: true, Prefix: []byte(p)})
		if !errors.Is(err, ErrWiden) || !strings.Contains(err.Error(), `not within the token's prefix "app/"`) {
			t.Errorf("Attenuate to prefix %q: %v, want ErrWiden naming the current prefix", p, err)
		}
	}
}

func TestAttenuateLaterExpiryDoesNotExtend(t *testing.T) {
	tok := mustMint(t, Client, Restriction{NotAfter: testEpoch.Add(time.Minute)})
	later, err := tok.Attenuate(Restriction{NotAfter: testEpoch.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if got := later.Restriction().NotAfter; !got.Equal(testEpoch.Add(time.Minute)) {
		t.Fatalf("NotAfter %v after asking for a later one, want the earlier %v", got, testEpoch.Add(time.Minute))
	}
	if _, err := later.Verify(testKey, testEpoch.Add(2*time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("Verify after the first expiry: %v, want ErrExpired", err)
	}
}

func TestAttenuatedOperatorIsAClient(t *testing.T) {
	op := mustMint(t, Operator, Restriction{})
	for _, r := range []Restriction{
		{RestrictPrefix: true, Prefix: []byte{}},
		{RestrictPrefix: true, Prefix: []byte("x")},
		{ReadOnly: true},
	} {
		tok, err := op.Attenuate(r)
		if err != nil {
			t.Fatal(err)
		}
		g, err := tok.Verify(testKey, testEpoch)
		if err != nil {
			t.Fatal(err)
		}
		if g.Role != Client || tok.Role() != Operator {
			t.Errorf("operator token narrowed by %+v: grant role %v (minted %v), want client", r, g.Role, tok.Role())
		}
	}
	tok, err := op.Attenuate(Restriction{NotAfter: testEpoch.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if g, err := tok.Verify(testKey, testEpoch); err != nil || g.Role != Operator {
		t.Errorf("operator token with only an expiry: grant %+v, %v; want operator", g, err)
	}
}

func TestAttenuateWithNothingNewReturnsTheSameToken(t *testing.T) {
	tok := caveatedToken(t)
	cur := tok.Restriction()
	for _, r := range []Restriction{{}, cur, {ReadOnly: true}, {NotAfter: cur.NotAfter.Add(time.Second)}} {
		got, err := tok.Attenuate(r)
		if err != nil || got.String() != tok.String() {
			t.Errorf("Attenuate(%+v) = %v; want the same token", r, err)
		}
	}
}

func TestAttenuateStopsAtMaxCaveats(t *testing.T) {
	tok := mustMint(t, Client, Restriction{})
	var err error
	for i := 0; i < MaxCaveats; i++ {
		if tok, err = tok.Attenuate(Restriction{NotAfter: testEpoch.Add(-time.Duration(i) * time.Second)}); err != nil {
			t.Fatalf("caveat %d: %v", i+1, err)
		}
	}
	if _, err := Parse(tok.String()); err != nil {
		t.Fatalf("a token with %d caveats does not parse: %v", MaxCaveats, err)
	}
	if _, err = tok.Attenuate(Restriction{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "more than the 64") {
		t.Fatalf("caveat %d: %v, want a refusal", MaxCaveats+1, err)
	}
}
