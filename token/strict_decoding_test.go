package token

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func prefixCaveat(p string) []byte { return encodeCaveat(cavPrefix, []byte(p)) }

// TestContradictoryPrefixesAreRefused: caveats whose prefixes are not
// nested grant no key; such a token is refused even when well signed.
func TestContradictoryPrefixesAreRefused(t *testing.T) {
	for _, ps := range [][]string{{"a/", "b/"}, {"app/x", "app/y"}, {"ab", "a", "ac"}, {"", "x", "y"}} {
		var cavs [][]byte
		for _, p := range ps {
			cavs = append(cavs, prefixCaveat(p))
		}
		_, err := Parse(signed(testKey, header(1, Client), cavs...))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "contradicts") {
			t.Errorf("prefixes %q: %v, want ErrMalformed saying they contradict", ps, err)
		}
	}
}

// TestNestedPrefixesNarrowToTheLongest, in any order.
func TestNestedPrefixesNarrowToTheLongest(t *testing.T) {
	for _, ps := range [][]string{{"a/", "a/b/"}, {"a/b/", "a/"}, {"", "a/b/", "a/", "a/b/"}} {
		var cavs [][]byte
		for _, p := range ps {
			cavs = append(cavs, prefixCaveat(p))
		}
		tok, err := Parse(signed(testKey, header(1, Client), cavs...))
		if err != nil {
			t.Fatalf("prefixes %q: %v", ps, err)
		}
		g, err := tok.Verify(testKey, testEpoch)
		if err != nil || !g.Restriction.RestrictPrefix || string(g.Restriction.Prefix) != "a/b/" {
			t.Errorf("prefixes %q: grant %+v, %v; want prefix a/b/", ps, g, err)
		}
	}
}

// TestWellSignedButUnreadableTokensAreRefused: what this code does not
// understand fails closed, even with a valid signature.
func TestWellSignedButUnreadableTokensAreRefused(t *testing.T) {
	hdr := header(1, Client)
	withVersion := func(v byte) []byte { h := append([]byte{}, hdr...); h[0] = v; return h }
	withRole := func(r byte) []byte { h := append([]byte{}, hdr...); h[len(h)-1] = r; return h }
	cases := []struct {
		name string
		text string
		want string
	}{
		{"version 0", signed(testKey, withVersion(0)), "version 0"},
		{"version 2", signed(testKey, withVersion(2)), "version 2"},
		{"role 0", signed(testKey, withRole(0)), "unknown role(0)"},
		{"role 3", signed(testKey, withRole(3)), "unknown role(3)"},
		{"zero id", signed(testKey, appendHeader(nil, 1, ID{}, Client)), "all zeros"},
		{"caveat type 0", signed(testKey, hdr, encodeCaveat(0, nil)), "unknown type 0"},
		{"caveat type 4", signed(testKey, hdr, encodeCaveat(4, []byte("x"))), "unknown type 4"},
		{"caveat type 255", signed(testKey, hdr, prefixCaveat("a"), encodeCaveat(255, nil)), "caveat 2: unknown type 255"},
		{"read-only with a value", signed(testKey, hdr, encodeCaveat(cavReadOnly, []byte{0})), "want none"},
		{"short expiry", signed(testKey, hdr, encodeCaveat(cavNotAfter, make([]byte, 7))), "want 8"},
		{"long expiry", signed(testKey, hdr, encodeCaveat(cavNotAfter, make([]byte, 9))), "want 8"},
		{"negative expiry", signed(testKey, hdr, encodeCaveat(cavNotAfter, bytes.Repeat([]byte{0xff}, 8))), "out of range"},
		{"non-minimal key id", signed(testKey, append([]byte{version, 0x81, 0x00}, hdr[2:]...)), "key id: varint is not minimal"},
		{"non-minimal caveat length", signed(testKey, hdr, []byte{cavPrefix, 0x81, 0x00, 'a'}), "length: varint is not minimal"},
		{"caveat length past the tag", signed(testKey, hdr, []byte{cavPrefix, 0x7f, 'a'}), "left before the tag"},
		{"caveat length overflows", signed(testKey, hdr, []byte{cavPrefix, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}), "overflows"},
		{"caveat cut off", signed(testKey, hdr, []byte{cavPrefix}), "cut off"},
	}
	for _, c := range cases {
		_, err := Parse(c.text)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrMalformed saying %q", c.name, err, c.want)
		}
	}
}

func TestParseBoundsSizeAndCaveats(t *testing.T) {
	hdr := header(1, Client)
	cavs := make([][]byte, MaxCaveats+1)
	for i := range cavs {
		cavs[i] = notAfterCaveat(testEpoch)
	}
	if _, err := Parse(signed(testKey, hdr, cavs[:MaxCaveats]...)); err != nil {
		t.Fatalf("%d caveats: %v", MaxCaveats, err)
	}
	if _, err := Parse(signed(testKey, hdr, cavs...)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "more than 64 caveats") {
		t.Errorf("%d caveats: %v, want ErrMalformed", MaxCaveats+1, err)
	}
	fill := MaxSize - len(hdr) - tagSize - 3 // a caveat of 3 header bytes and this much prefix: MaxSize exactly
	if _, err := Parse(signed(testKey, hdr, prefixCaveat(strings.Repeat("p", fill)))); err != nil {
		t.Fatalf("a token of %d bytes: %v", MaxSize, err)
	}
	big := signed(testKey, hdr, prefixCaveat(strings.Repeat("p", fill+1)))
	if _, err := Parse(big); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "a token may have") {
		t.Errorf("a token of %d bytes: %v, want ErrMalformed", MaxSize+1, err)
	}
	huge := textPrefix + strings.Repeat("A", 1<<20)
	if _, err := Parse(huge); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "characters") {
		t.Errorf("a megabyte of text: %v, want ErrMalformed", err)
	}
}

func TestParseExplainsWhatIsWrong(t *testing.T) {
	good := mustMint(t, Client, Restriction{NotAfter: testEpoch}).String()
	cases := []struct{ text, want string }{
		{"", `does not start with "capraft1."`},
		{"hello", `does not start with "capraft1."`},
		{"capraft2." + good[len(textPrefix):], "newer capraft"},
		{good + "\n", "white space"},
		{" " + good, "white space"},
		{good[:len(good)-1], ""},
		{textPrefix, "too short"},
		{textPrefix + "AAAA", "too short"},
		{textPrefix + "!!!!", "not unpadded base64url"},
		{good[:20] + "\n" + good[20:], "line breaks"},
	}
	for _, c := range cases {
		_, err := Parse(c.text)
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q): %v, want ErrMalformed saying %q", c.text, err, c.want)
		}
	}
}

func TestFarFutureExpiryIsClamped(t *testing.T) {
	tok := mustMint(t, Client, Restriction{NotAfter: time.Date(300000000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if _, err := tok.Verify(testKey, testEpoch); err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(tok.String()); err != nil {
		t.Fatal(err)
	}
}
