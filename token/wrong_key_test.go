package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerifyWithAnotherKeyFails(t *testing.T) {
	for _, tok := range []*Token{mustMint(t, Operator, Restriction{}), caveatedToken(t)} {
		_, err := tok.Verify(otherKey, testEpoch)
		if !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify with another key: %v, want ErrSignature", err)
		}
		if !strings.Contains(err.Error(), tok.ID().String()) || !strings.Contains(err.Error(), "raftctl token create") {
			t.Errorf("error %q does not name the token id and what to do", err)
		}
		if strings.Contains(err.Error(), tok.String()[len(textPrefix):]) {
			t.Errorf("error %q reveals the token", err)
		}
		// A key that differs in its last byte only.
		near := append([]byte{}, testKey...)
		near[len(near)-1] ^= 1
		if _, err := tok.Verify(near, testEpoch); !errors.Is(err, ErrSignature) {
			t.Fatalf("Verify with a key one bit off: %v, want ErrSignature", err)
		}
	}
}

// TestVerifyRefusesAShortKey: a missing key looked up as nil must not
// verify tokens anyone can sign with the empty key.
func TestVerifyRefusesAShortKey(t *testing.T) {
	forged, err := Parse(signed(nil, header(7, Operator)))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range [][]byte{nil, {}, testKey[:MinKeySize-1]} {
		if _, err := forged.Verify(key, testEpoch); err == nil || !strings.Contains(err.Error(), "want at least 32") {
			t.Errorf("Verify with a %d-byte key: %v, want a refusal", len(key), err)
		}
	}
}

// TestVerifyRefusesZeroTime: a zero now would never be after any expiry.
func TestVerifyRefusesZeroTime(t *testing.T) {
	tok := mustMint(t, Client, Restriction{NotAfter: testEpoch})
	if _, err := tok.Verify(testKey, time.Time{}); err == nil || !strings.Contains(err.Error(), "no current time") {
		t.Fatalf("Verify at the zero time: %v, want a refusal", err)
	}
}
