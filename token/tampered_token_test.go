package token

import (
	"errors"
	"testing"
)

// refused reports whether text fails Parse or Verify with testKey, with one
// of the errors a tampered token must give.
func refused(t *testing.T, text string) bool {
	t.Helper()
	tok, err := Parse(text)
	if err == nil {
		_, err = tok.Verify(testKey, testEpoch)
	}
	if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) {
		t.Fatalf("tampered token: unexpected error %v", err)
	}
	return err != nil
}

func rawOf(t *testing.T, tok *Token) []byte {
	t.Helper()
	raw, err := b64.DecodeString(tok.String()[len(textPrefix):])
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func encodeRaw(raw []byte) string { return textPrefix + b64.EncodeToString(raw) }

func TestEveryBitFlipIsRefused(t *testing.T) {
	tok := caveatedToken(t)
	if refused(t, tok.String()) {
		t.Fatal("the untampered token is refused")
	}
	raw := rawOf(t, tok)
	for i := range raw {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte{}, raw...)
			b[i] ^= 1 << bit
			if !refused(t, encodeRaw(b)) {
				t.Fatalf("flipping bit %d of byte %d of %d is accepted", bit, i, len(raw))
			}
		}
	}
}

func TestEveryByteValueIsRefused(t *testing.T) {
	raw := rawOf(t, caveatedToken(t))
	for i := range raw {
		for v := 0; v < 256; v++ {
			if byte(v) == raw[i] {
				continue
			}
			b := append([]byte{}, raw...)
			b[i] = byte(v)
			if !refused(t, encodeRaw(b)) {
				t.Fatalf("byte %d of %d set to %#x is accepted", i, len(raw), v)
			}
		}
	}
}

func TestEveryByteDeletedOrInsertedIsRefused(t *testing.T) {
	raw := rawOf(t, caveatedToken(t))
	for i := 0; i <= len(raw); i++ {
		if i < len(raw) {
			b := append(append([]byte{}, raw[:i]...), raw[i+1:]...)
			if !refused(t, encodeRaw(b)) {
				t.Fatalf("deleting byte %d of %d is accepted", i, len(raw))
			}
		}
		for _, v := range []byte{0, 1, 2, 3, 0x80, 0xff} {
			b := append(append(append([]byte{}, raw[:i]...), v), raw[i:]...)
			if !refused(t, encodeRaw(b)) {
				t.Fatalf("inserting %#x at byte %d of %d is accepted", v, i, len(raw))
			}
		}
	}
}

// TestEveryCharacterChangeIsRefused changes each character of the text
// form, including to characters that decode to the same bytes in lax
// base64 (the last character's spare bits, line breaks, padding).
func TestEveryCharacterChangeIsRefused(t *testing.T) {
	text := caveatedToken(t).String()
	chars := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.\n\r \x00\xff"
	for i := 0; i < len(text); i++ {
		for j := 0; j < len(chars); j++ {
			if chars[j] == text[i] {
				continue
			}
			if !refused(t, text[:i]+chars[j:j+1]+text[i+1:]) {
				t.Fatalf("changing character %d of %d to %q is accepted", i, len(text), chars[j])
			}
		}
		if !refused(t, text[:i]+text[i+1:]) {
			t.Fatalf("deleting character %d of %d is accepted", i, len(text))
		}
	}
	for _, extra := range []string{"\n", " ", "=", "A", "\r\n"} {
		if !refused(t, text+extra) || !refused(t, extra+text) {
			t.Fatalf("adding %q is accepted", extra)
		}
	}
	if !refused(t, text[:40]+"\n"+text[40:]) {
		t.Fatal("a line break inside is accepted")
	}
}

// TestRemovingACaveatIsRefused: with the tags at hand (the parent's and the
// child's), dropping the caveat the child added is still refused.
func TestRemovingACaveatIsRefused(t *testing.T) {
	parent := mustMint(t, Client, Restriction{RestrictPrefix: true, Prefix: []byte("app/")})
	child, err := parent.Attenuate(Restriction{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	p, c := rawOf(t, parent), rawOf(t, child)
	pBody, cTag := p[:len(p)-tagSize], c[len(c)-tagSize:]
	cBody, pTag := c[:len(c)-tagSize], p[len(p)-tagSize:]
	if !refused(t, encodeRaw(append(append([]byte{}, pBody...), cTag...))) {
		t.Fatal("the child's tag on the parent's caveats is accepted")
	}
	if !refused(t, encodeRaw(append(append([]byte{}, cBody...), pTag...))) {
		t.Fatal("the parent's tag on the child's caveats is accepted")
	}
}

// TestSpareBase64BitsAreRefused: when the binary form is not a multiple of
// three bytes, the last character carries spare bits that lax base64
// ignores; a token with them set is refused, so each token has one text.
func TestSpareBase64BitsAreRefused(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for _, p := range []string{"a", "ab", "abc"} {
		text := mustMint(t, Client, Restriction{RestrictPrefix: true, Prefix: []byte(p)}).String()
		last := len(text) - 1
		for j := range alphabet {
			if alphabet[j] != text[last] && !refused(t, text[:last]+alphabet[j:j+1]) {
				t.Fatalf("prefix %q: last character %q changed to %q is accepted", p, text[last], alphabet[j])
			}
		}
	}
}
