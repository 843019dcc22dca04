package token

import (
	"errors"
	"testing"
	"time"
)

// FuzzParse feeds Parse arbitrary text. It must never panic; what it
// accepts must print back to the same text and parse again to the same
// token; Verify and Attenuate on it must not panic, and a token that does
// not verify must fail with one of the package's errors. Plain go test runs
// only the seed corpus; go test -fuzz=FuzzParse ./token/ explores.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"", "capraft1.", "capraft1.AAAA", "capraft2.AQ", "capraft1.\n", "capraft1.====",
		mustMint(f, Operator, Restriction{}).String(),
		mustMint(f, Client, Restriction{RestrictPrefix: true, Prefix: []byte{}, ReadOnly: true}).String(),
		caveatedToken(f).String(),
		signed(testKey, header(1, Client), prefixCaveat("a"), prefixCaveat("b")),
		signed(testKey, header(1<<63, Operator), encodeCaveat(9, []byte("future"))),
		signed(testKey, header(1, Client), notAfterCaveat(testEpoch), notAfterCaveat(testEpoch.Add(time.Hour))),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if tok != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse failed with %v and token %v; want ErrMalformed and nil", err, tok)
			}
			return
		}
		if tok.String() != s {
			t.Fatalf("Parse(%q).String() = %q", s, tok.String())
		}
		again, err := Parse(tok.String())
		if err != nil || again.ID() != tok.ID() || again.KeyID() != tok.KeyID() || again.Role() != tok.Role() ||
			!sameRestriction(again.Restriction(), tok.Restriction()) {
			t.Fatalf("reparsing %q: %v, or it differs", s, err)
		}
		if _, err := tok.Verify(testKey, testEpoch); err != nil &&
			!errors.Is(err, ErrSignature) && !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify: %v, want nil, ErrSignature or ErrExpired", err)
		}
		cur := tok.Restriction()
		narrower, err := tok.Attenuate(Restriction{RestrictPrefix: true, Prefix: append(cur.Prefix, 'x'), ReadOnly: true,
			NotAfter: testEpoch})
		if err != nil {
			return // e.g. too many caveats or too large
		}
		if _, err := Parse(narrower.String()); err != nil {
			t.Fatalf("Parse(Attenuate(Parse(%q))): %v", s, err)
		}
	})
}
