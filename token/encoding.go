package token

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"
)

// Limits on a token's binary form, so that decoding one costs little and a
// token fits in a header, a flag or an environment variable.
const (
	MaxSize    = 4096 // bytes of the binary form
	MaxCaveats = 64
)

const (
	textPrefix = "capraft1."
	version    = 1
	idSize     = len(ID{})
	tagSize    = 32 // HMAC-SHA256
	headerMax  = 1 + binary.MaxVarintLen64 + idSize + 1
	minSize    = 1 + 1 + idSize + 1 + tagSize
	maxText    = len(textPrefix) + (MaxSize*8+5)/6 // unpadded base64 of MaxSize bytes
)

// Caveat types. Each only restricts; a new one must too, or old tokens
// could be widened by appending it.
const (
	cavPrefix   = 1 // value: the key prefix
	cavReadOnly = 2 // value: empty
	cavNotAfter = 3 // value: 8 bytes, big-endian unix milliseconds, at most MaxInt64
)

var b64 = base64.RawURLEncoding.Strict()

// Parse reads a token's text form. It checks syntax only (Verify checks the
// signature) and never echoes the token, a secret, in its errors. The text
// must be exact: trim the line break off a token read from a file first.
func Parse(s string) (*Token, error) {
	if len(s) > maxText {
		return nil, fmt.Errorf("%w: %d characters, more than the %d a token may have", ErrMalformed, len(s), maxText)
	}
	if strings.TrimSpace(s) != s {
		return nil, fmt.Errorf("%w: it has leading or trailing white space (trim what you read from a file)", ErrMalformed)
	}
	if !strings.HasPrefix(s, textPrefix) {
		if strings.HasPrefix(s, "capraft") {
			return nil, fmt.Errorf("%w: not a %q token (made by a newer capraft?)", ErrMalformed, textPrefix)
		}
		return nil, fmt.Errorf("%w: it does not start with %q", ErrMalformed, textPrefix)
	}
	body := s[len(textPrefix):]
	raw, err := b64.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("%w: not unpadded base64url after %q (%v)", ErrMalformed, textPrefix, err)
	}
	// The decoder skips line breaks; a token has exactly one text form.
	if b64.EncodedLen(len(raw)) != len(body) {
		return nil, fmt.Errorf("%w: it contains line breaks", ErrMalformed)
	}
	t, err := decode(raw)
	if err != nil {
		return nil, err
	}
	t.text = s
	return t, nil
}

// fromBinary makes a Token of a binary form Mint or Attenuate just built.
func fromBinary(raw []byte, what string) (*Token, error) {
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%s: the token would be %d bytes, more than the %d a token may have (a shorter prefix?)",
			what, len(raw), MaxSize)
	}
	t, err := decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	t.text = textPrefix + b64.EncodeToString(raw)
	return t, nil
}

// decode parses and checks a binary form; the Token keeps raw.
func decode(raw []byte) (*Token, error) {
	if len(raw) < minSize {
		return nil, fmt.Errorf("%w: %d bytes, too short to be a token (cut off?)", ErrMalformed, len(raw))
	}
	if len(raw) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d a token may have", ErrMalformed, len(raw), MaxSize)
	}
	if raw[0] != version {
		return nil, fmt.Errorf("%w: version %d; this capraft reads version %d (made by a newer capraft?)",
			ErrMalformed, raw[0], version)
	}
	t := &Token{raw: raw}
	p := 1
	keyID, n, err := uvarint(raw[p:])
	if err != nil {
		return nil, fmt.Errorf("%w: key id: %v", ErrMalformed, err)
	}
	t.keyID = keyID
	p += n
	if len(raw)-p < idSize+1+tagSize {
		return nil, fmt.Errorf("%w: %d bytes, too short to be a token (cut off?)", ErrMalformed, len(raw))
	}
	copy(t.id[:], raw[p:])
	p += idSize
	if t.id == (ID{}) {
		return nil, fmt.Errorf("%w: its id is all zeros", ErrMalformed)
	}
	t.role = Role(raw[p])
	p++
	if !t.role.valid() {
		return nil, fmt.Errorf("%w: unknown %v (made by a newer capraft?)", ErrMalformed, t.role)
	}
	t.hdrLen = p
	end := len(raw) - tagSize
	for i := 1; p < end; i++ {
		if i > MaxCaveats {
			return nil, fmt.Errorf("%w: more than %d caveats", ErrMalformed, MaxCaveats)
		}
		n, err := t.caveat(raw[p:end])
		if err != nil {
			return nil, fmt.Errorf("%w: caveat %d: %v", ErrMalformed, i, err)
		}
		p += n
		t.cavEnds = append(t.cavEnds, p)
	}
	return t, nil
}

// caveat decodes the caveat at the start of b, applies it to t.eff and
// returns its length.
func (t *Token) caveat(b []byte) (int, error) {
	typ := b[0]
	size, n, err := uvarint(b[1:])
	if err != nil {
		return 0, fmt.Errorf("length: %v", err)
	}
	rest := uint64(len(b) - 1 - n)
	if size > rest {
		return 0, fmt.Errorf("%d bytes long, but only %d are left before the tag (cut off?)", size, rest)
	}
	hdr := 1 + n
	v := b[hdr : hdr+int(size)]
	switch typ {
	case cavPrefix:
		cur := &t.eff
		switch {
		case !cur.RestrictPrefix || bytes.HasPrefix(v, cur.Prefix):
			cur.RestrictPrefix, cur.Prefix = true, v
		case !bytes.HasPrefix(cur.Prefix, v):
			return 0, fmt.Errorf("prefix %q contradicts the earlier prefix %q (neither contains the other), "+
				"so the token grants no key", v, cur.Prefix)
		}
	case cavReadOnly:
		if len(v) != 0 {
			return 0, fmt.Errorf("read-only caveat carries %d bytes, want none", len(v))
		}
		t.eff.ReadOnly = true
	case cavNotAfter:
		if len(v) != 8 {
			return 0, fmt.Errorf("expiry is %d bytes, want 8", len(v))
		}
		ms := binary.BigEndian.Uint64(v)
		if ms > math.MaxInt64 {
			return 0, fmt.Errorf("expiry %d is out of range", ms)
		}
		at := time.UnixMilli(int64(ms)).UTC()
		if t.eff.NotAfter.IsZero() || at.Before(t.eff.NotAfter) {
			t.eff.NotAfter = at
		}
	default:
		// Fail closed: an unknown caveat may restrict something.
		return 0, fmt.Errorf("unknown type %d (made by a newer capraft?); an unknown caveat might restrict "+
			"something, so the token is refused", typ)
	}
	return hdr + int(size), nil
}

// uvarint reads a minimally encoded unsigned varint.
func uvarint(b []byte) (v uint64, n int, err error) {
	v, n = binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, 0, fmt.Errorf("cut off")
	case n < 0:
		return 0, 0, fmt.Errorf("varint overflows 64 bits")
	case n > 1 && b[n-1] == 0:
		return 0, 0, fmt.Errorf("varint is not minimally encoded")
	}
	return v, n, nil
}

func appendHeader(b []byte, keyID uint64, id ID, role Role) []byte {
	b = append(b, version)
	b = binary.AppendUvarint(b, keyID)
	b = append(b, id[:]...)
	return append(b, byte(role))
}

func encodeCaveat(typ byte, v []byte) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(v))
	b = append(b, typ)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func caveatsLen(cavs [][]byte) int {
	n := 0
	for _, c := range cavs {
		n += len(c)
	}
	return n
}
