package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMintParseVerifyRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		role Role
		r    Restriction
		want Role // the granted role
	}{
		{"operator", Operator, Restriction{}, Operator},
		{"operator with expiry", Operator, Restriction{NotAfter: testEpoch.Add(time.Hour)}, Operator},
		{"client", Client, Restriction{}, Client},
		{"client prefix", Client, Restriction{RestrictPrefix: true, Prefix: []byte("tenant/a/")}, Client},
		{"client empty prefix", Client, Restriction{RestrictPrefix: true, Prefix: []byte{}}, Client},
		{"client binary prefix", Client, Restriction{RestrictPrefix: true, Prefix: []byte{0, 0xff, '\n'}}, Client},
		{"client everything", Client, Restriction{RestrictPrefix: true, Prefix: []byte("p"), ReadOnly: true,
			NotAfter: testEpoch.Add(time.Minute)}, Client},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			minted, err := Mint(testKey, 1<<40, testID, c.role, c.r)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			text := minted.String()
			if !strings.HasPrefix(text, "capraft1.") {
				t.Fatalf("text %q does not start with capraft1.", text)
			}
			tok, err := Parse(text)
			if err != nil {
				t.Fatalf("Parse(Mint().String()): %v", err)
			}
			if tok.String() != text || tok.ID() != testID || tok.KeyID() != 1<<40 || tok.Role() != c.role {
				t.Fatalf("parsed token differs: id %s key %d role %v", tok.ID(), tok.KeyID(), tok.Role())
			}
			if !sameRestriction(tok.Restriction(), c.r) {
				t.Fatalf("Restriction() = %+v, want %+v", tok.Restriction(), c.r)
			}
			g, err := tok.Verify(testKey, testEpoch)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if g.ID != testID || g.Role != c.want || !sameRestriction(g.Restriction, c.r) {
				t.Fatalf("grant %+v, want id %s role %v restriction %+v", g, testID, c.want, c.r)
			}
		})
	}
}

func TestRestrictionIsACopy(t *testing.T) {
	tok := mustMint(t, Client, Restriction{RestrictPrefix: true, Prefix: []byte("abc")})
	tok.Restriction().Prefix[0] = 'X'
	g, err := tok.Verify(testKey, testEpoch)
	if err != nil {
		t.Fatal(err)
	}
	g.Restriction.Prefix[1] = 'Y'
	if got := string(tok.Restriction().Prefix); got != "abc" {
		t.Fatalf("changing a returned prefix changed the token: %q", got)
	}
	if _, err := tok.Verify(testKey, testEpoch); err != nil {
		t.Fatalf("changing a returned prefix broke the token: %v", err)
	}
}

func TestNotAfterKeepsMillisecondsRoundingDown(t *testing.T) {
	at := testEpoch.Add(1500 * time.Microsecond)
	tok := mustMint(t, Client, Restriction{NotAfter: at})
	if got, want := tok.Restriction().NotAfter, testEpoch.Add(time.Millisecond); !got.Equal(want) {
		t.Fatalf("NotAfter %v, want %v", got, want)
	}
}

func TestIDStringParseID(t *testing.T) {
	id := NewID()
	if id == (ID{}) || id == NewID() {
		t.Fatalf("NewID is not random: %s", id)
	}
	s := id.String()
	if len(s) != 32 || strings.ToLower(s) != s {
		t.Fatalf("ID.String() = %q, want 32 lowercase hex digits", s)
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		got, err := ParseID(in)
		if err != nil || got != id {
			t.Fatalf("ParseID(%q) = %s, %v; want %s", in, got, err, id)
		}
	}
	for _, bad := range []string{"", s[:31], s + "0", "g" + s[1:], " " + s[1:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}

func TestMintRefusesBadArguments(t *testing.T) {
	cases := []struct {
		name string
		key  []byte
		id   ID
		role Role
		r    Restriction
		want string
	}{
		{"short key", testKey[:MinKeySize-1], testID, Client, Restriction{}, "at least 32"},
		{"no key", nil, testID, Client, Restriction{}, "at least 32"},
		{"zero id", testKey, ID{}, Client, Restriction{}, "NewID"},
		{"no role", testKey, testID, 0, Restriction{}, "unknown role(0)"},
		{"unknown role", testKey, testID, 3, Restriction{}, "unknown role(3)"},
		{"restricted operator", testKey, testID, Operator, Restriction{ReadOnly: true}, "mint a client token"},
		{"prefixed operator", testKey, testID, Operator, Restriction{RestrictPrefix: true}, "mint a client token"},
		{"prefix without RestrictPrefix", testKey, testID, Client, Restriction{Prefix: []byte("a")}, "RestrictPrefix"},
		{"expiry before 1970", testKey, testID, Client, Restriction{NotAfter: time.Unix(-1, 0)}, "before 1970"},
		{"prefix too long", testKey, testID, Client,
			Restriction{RestrictPrefix: true, Prefix: make([]byte, MaxSize)}, "more than the 4096"},
	}
	for _, c := range cases {
		_, err := Mint(c.key, 1, c.id, c.role, c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Mint error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

func TestZeroTokenIsRefused(t *testing.T) {
	for _, tok := range []*Token{nil, {}} {
		if _, err := tok.Verify(testKey, testEpoch); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify of %#v: %v, want ErrMalformed", tok, err)
		}
		if _, err := tok.Attenuate(Restriction{ReadOnly: true}); !errors.Is(err, ErrMalformed) {
			t.Errorf("Attenuate of %#v: %v, want ErrMalformed", tok, err)
		}
	}
}
