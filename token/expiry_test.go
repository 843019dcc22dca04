package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokenExpiresAfterNotAfter(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 8e6, time.UTC)
	tok := mustMint(t, Operator, Restriction{NotAfter: at})
	for _, now := range []time.Time{at.Add(-time.Hour), at.Add(-time.Millisecond), at} {
		if g, err := tok.Verify(testKey, now); err != nil || !g.Restriction.NotAfter.Equal(at) {
			t.Errorf("Verify at %v (expiry %v): %+v, %v; want valid", now, at, g, err)
		}
	}
	for _, now := range []time.Time{at.Add(time.Nanosecond), at.Add(time.Millisecond), at.AddDate(1, 0, 0)} {
		_, err := tok.Verify(testKey, now)
		if !errors.Is(err, ErrExpired) {
			t.Fatalf("Verify at %v (expiry %v): %v, want ErrExpired", now, at, err)
		}
		for _, want := range []string{"expired at 2026-03-04T05:06:07.008Z", "raftctl token create", tok.ID().String()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
	}
}

// TestEarliestExpiryWins: whatever order the not-after caveats come in,
// even ones Attenuate would not add, the earliest counts.
func TestEarliestExpiryWins(t *testing.T) {
	early, late := testEpoch, testEpoch.Add(time.Hour)
	for _, order := range [][]time.Time{{early, late}, {late, early}, {late, early, late}} {
		var cavs [][]byte
		for _, at := range order {
			cavs = append(cavs, notAfterCaveat(at))
		}
		tok, err := Parse(signed(testKey, header(1, Client), cavs...))
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Restriction().NotAfter; !got.Equal(early) {
			t.Errorf("expiries %v: NotAfter %v, want %v", order, got, early)
		}
		if _, err := tok.Verify(testKey, early.Add(time.Minute)); !errors.Is(err, ErrExpired) {
			t.Errorf("expiries %v: Verify after the earliest: %v, want ErrExpired", order, err)
		}
	}
}

// TestExpiredAndForgedIsASignatureError: the expiry of a token that does
// not verify is not to be trusted, so it is not what the error reports.
func TestExpiredAndForgedIsASignatureError(t *testing.T) {
	tok := mustMint(t, Client, Restriction{NotAfter: testEpoch})
	if _, err := tok.Verify(otherKey, testEpoch.Add(time.Hour)); !errors.Is(err, ErrSignature) {
		t.Fatalf("Verify of an expired token with another key: %v, want ErrSignature", err)
	}
}
