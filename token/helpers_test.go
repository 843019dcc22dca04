package token

import (
	"bytes"
	"encoding/binary"
	"flag"
	"math/rand"
	"testing"
	"time"
)

var seedFlag = flag.Int64("seed", 0, "seed for the randomized token tests (0: a new one, printed on failure)")

// seeded returns a random source for t, printing its seed if t fails so the
// failure can be replayed with -seed.
func seeded(t *testing.T) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random restrictions from seed %d (rerun with -seed %d)", seed, seed)
		}
	})
	return rand.New(rand.NewSource(seed))
}

var (
	testKey   = bytes.Repeat([]byte{0x5a}, MinKeySize)
	otherKey  = bytes.Repeat([]byte{0xa5}, MinKeySize)
	testID    = ID{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	testEpoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
)

// signed builds the text of a token from any header and caveats, signed
// with key: a way to make well-signed tokens Mint and Attenuate refuse to.
func signed(key, header []byte, cavs ...[]byte) string {
	raw := append([]byte{}, header...)
	tag := link(key, header)
	for _, c := range cavs {
		raw = append(raw, c...)
		tag = link(tag, c)
	}
	return textPrefix + b64.EncodeToString(append(raw, tag...))
}

func header(keyID uint64, role Role) []byte { return appendHeader(nil, keyID, testID, role) }

func notAfterCaveat(at time.Time) []byte {
	return encodeCaveat(cavNotAfter, binary.BigEndian.AppendUint64(nil, uint64(at.UnixMilli())))
}

// mustMint mints with testKey and fails the test on error.
func mustMint(t testing.TB, role Role, r Restriction) *Token {
	t.Helper()
	tok, err := Mint(testKey, 7, testID, role, r)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// caveatedToken is a token with every caveat type, some twice.
func caveatedToken(t testing.TB) *Token {
	t.Helper()
	tok := mustMint(t, Client, Restriction{RestrictPrefix: true, Prefix: []byte("app/"), NotAfter: testEpoch.Add(time.Hour)})
	tok, err := tok.Attenuate(Restriction{RestrictPrefix: true, Prefix: []byte("app/reports/"), ReadOnly: true,
		NotAfter: testEpoch.Add(time.Minute)})
	if err != nil {
		t.Fatalf("Attenuate: %v", err)
	}
	return tok
}

func sameRestriction(a, b Restriction) bool {
	return a.RestrictPrefix == b.RestrictPrefix && bytes.Equal(a.Prefix, b.Prefix) &&
		a.ReadOnly == b.ReadOnly && a.NotAfter.Equal(b.NotAfter)
}
