package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// Errors a token can fail with. They are wrapped with detail saying what was
// wrong and what to do; test for them with errors.Is.
var (
	// ErrMalformed: the text is not a token this code can read (truncated,
	// mangled, from a newer version, or with contradictory caveats).
	ErrMalformed = errors.New("malformed token")
	// ErrSignature: the tag does not match the root key, so the token was
	// altered or was not minted with that key.
	ErrSignature = errors.New("token signature does not verify")
	// ErrExpired: a not-after caveat has passed.
	ErrExpired = errors.New("token expired")
	// ErrWiden: Attenuate was asked for something the token does not already
	// cover; a token can only be narrowed.
	ErrWiden = errors.New("a token can only be narrowed")
)

// MinKeySize is the shortest root key Mint and Verify accept. A key must be
// random; 32 bytes from crypto/rand is what a cluster should use.
const MinKeySize = 32

// ID names a token and every token derived from it: it is what revocation
// revokes. It is not secret.
type ID [16]byte

// NewID returns a random ID from crypto/rand.
func NewID() ID {
	var id ID
	// Since Go 1.24, rand.Read never returns an error (it crashes instead).
	_, _ = rand.Read(id[:])
	return id
}

// String returns the ID as 32 lowercase hex digits.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the 32 hex digits ID.String returns (either case).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("token id %q: want %d hex digits, got %d", s, 2*len(id), len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return ID{}, fmt.Errorf("token id %q: %w", s, err)
	}
	return id, nil
}

// Role is the authority a token was minted for.
type Role uint8

// The roles a token can carry. An operator has every authority a client has.
const (
	Client   Role = 1
	Operator Role = 2
)

// String returns "client", "operator", or "role(N)" for anything else.
func (r Role) String() string {
	switch r {
	case Client:
		return "client"
	case Operator:
		return "operator"
	}
	return "role(" + strconv.Itoa(int(r)) + ")"
}

func (r Role) valid() bool { return r == Client || r == Operator }

// Restriction is what a token's caveats restrict, or what to restrict it
// further by. The zero value restricts nothing.
type Restriction struct {
	// RestrictPrefix confines the token to keys that start with Prefix.
	// (An empty Prefix with RestrictPrefix still counts as a restriction:
	// it makes an operator's token a client's.)
	RestrictPrefix bool
	Prefix         []byte
	// ReadOnly refuses writes.
	ReadOnly bool
	// NotAfter is the last instant the token is valid; zero: no expiry.
	// Tokens keep it rounded down to the millisecond.
	NotAfter time.Time
}

// restricts reports whether r narrows an operator to a client.
func (r Restriction) restricts() bool { return r.RestrictPrefix || r.ReadOnly }

func (r Restriction) clone() Restriction {
	if r.RestrictPrefix {
		r.Prefix = append([]byte{}, r.Prefix...)
	} else {
		r.Prefix = nil
	}
	return r
}

// Grant is what a verified token grants.
type Grant struct {
	ID ID
	// Role is Operator only when the token was minted for an operator and
	// no prefix or read-only caveat narrowed it; otherwise Client.
	Role        Role
	Restriction Restriction
}

// Token is a parsed token: an immutable value, safe to share between
// goroutines. Get one from Mint, Parse or Attenuate.
type Token struct {
	text    string
	raw     []byte // the binary form: header, caveats, tag
	hdrLen  int    // raw[:hdrLen] is the header
	cavEnds []int  // caveat i is raw[cavEnds[i-1] or hdrLen : cavEnds[i]]
	keyID   uint64
	id      ID
	role    Role
	eff     Restriction // effective restriction; Prefix aliases raw
}

// Mint makes a token signed with the root key key (known to verifiers as
// keyID) for role, carrying caveats for each part of r. id should come from
// NewID. An operator's token cannot carry a prefix or read-only restriction:
// it would grant only a client's authority, so mint a client's token instead.
func Mint(key []byte, keyID uint64, id ID, role Role, r Restriction) (*Token, error) {
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("mint token: root key is %d bytes, want at least %d random bytes", len(key), MinKeySize)
	}
	if !role.valid() {
		return nil, fmt.Errorf("mint token: unknown %v (want client or operator)", role)
	}
	if id == (ID{}) {
		return nil, errors.New("mint token: the token id is all zeros; use NewID")
	}
	if role == Operator && r.restricts() {
		return nil, errors.New("mint token: an operator's token cannot be restricted to a prefix or read-only " +
			"(it would grant only a client's authority); mint a client token instead")
	}
	cavs, err := caveatsFor(Restriction{}, r)
	if err != nil {
		return nil, fmt.Errorf("mint token: %w", err)
	}
	raw := appendHeader(make([]byte, 0, headerMax+caveatsLen(cavs)+tagSize), keyID, id, role)
	tag := link(key, raw)
	for _, c := range cavs {
		raw = append(raw, c...)
		tag = link(tag, c)
	}
	return fromBinary(append(raw, tag...), "mint token")
}

// Attenuate returns a token that grants what t grants restricted further by
// r: the intersection of the two. It needs no key. Only a prefix within t's
// current prefix is accepted (else the result would grant nothing; the error
// wraps ErrWiden); a read-only or expiry t already has is kept, so an expiry
// later than t's has no effect. If r restricts nothing t does not already
// restrict, Attenuate returns t itself.
func (t *Token) Attenuate(r Restriction) (*Token, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	cavs, err := caveatsFor(t.eff, r)
	if err != nil {
		return nil, fmt.Errorf("attenuate token %s: %w", t.id, err)
	}
	if len(cavs) == 0 {
		return t, nil
	}
	if n := len(t.cavEnds) + len(cavs); n > MaxCaveats {
		return nil, fmt.Errorf("attenuate token %s: it would have %d caveats, more than the %d a token may have",
			t.id, n, MaxCaveats)
	}
	body, tag := t.raw[:len(t.raw)-tagSize], t.raw[len(t.raw)-tagSize:]
	raw := append(make([]byte, 0, len(t.raw)+caveatsLen(cavs)), body...)
	for _, c := range cavs {
		raw = append(raw, c...)
		tag = link(tag, c)
	}
	return fromBinary(append(raw, tag...), "attenuate token "+t.id.String())
}

// Verify checks t against the root key its KeyID names, at time now, and
// returns what it grants. It fails with ErrSignature if t was altered or
// minted with another key, and with ErrExpired past its expiry. Revocation
// is the caller's check (by ID).
func (t *Token) Verify(key []byte, now time.Time) (Grant, error) {
	if err := t.usable(); err != nil {
		return Grant{}, err
	}
	if len(key) < MinKeySize {
		// An empty or short key is a caller's bug (a missing key looked up
		// as nil); anyone could forge tags for it, so never verify with it.
		return Grant{}, fmt.Errorf("verify token %s: root key %d is %d bytes, want at least %d",
			t.id, t.keyID, len(key), MinKeySize)
	}
	if now.IsZero() {
		return Grant{}, fmt.Errorf("verify token %s: no current time given", t.id)
	}
	tag := link(key, t.raw[:t.hdrLen])
	start := t.hdrLen
	for _, end := range t.cavEnds {
		tag = link(tag, t.raw[start:end])
		start = end
	}
	if !hmac.Equal(tag, t.raw[start:]) {
		return Grant{}, fmt.Errorf("%w (token %s, root key %d): it was altered, or minted by another "+
			"cluster or with a key since removed; ask an operator for a new one (raftctl token create)",
			ErrSignature, t.id, t.keyID)
	}
	if !t.eff.NotAfter.IsZero() && now.After(t.eff.NotAfter) {
		return Grant{}, fmt.Errorf("%w at %s (token %s); mint a new one with raftctl token create",
			ErrExpired, t.eff.NotAfter.Format(time.RFC3339Nano), t.id)
	}
	g := Grant{ID: t.id, Role: t.role, Restriction: t.eff.clone()}
	if g.Restriction.restricts() {
		g.Role = Client
	}
	return g, nil
}

// usable refuses a nil or zero Token, which no constructor returns.
func (t *Token) usable() error {
	if t == nil || len(t.raw) == 0 {
		return fmt.Errorf("%w: empty token", ErrMalformed)
	}
	return nil
}

// String returns the token's text form, "capraft1." and base64url. It is a
// secret: do not log it.
func (t *Token) String() string {
	if t == nil {
		return ""
	}
	return t.text
}

// ID returns the token's id, shared by every token derived from it.
func (t *Token) ID() ID {
	if t == nil {
		return ID{}
	}
	return t.id
}

// KeyID names the root key the token claims to be signed with.
func (t *Token) KeyID() uint64 {
	if t == nil {
		return 0
	}
	return t.keyID
}

// Role returns the role the token was minted for. What it grants may be
// less: see Grant.Role.
func (t *Token) Role() Role {
	if t == nil {
		return 0
	}
	return t.role
}

// Restriction returns the effective (narrowest) restriction the token's
// caveats state: the longest prefix, read-only if any caveat says so, the
// earliest expiry. It is unverified until Verify succeeds.
func (t *Token) Restriction() Restriction {
	if t == nil {
		return Restriction{}
	}
	return t.eff.clone()
}

// caveatsFor encodes the caveats that narrow cur to its intersection with r,
// leaving out those that would not narrow it.
func caveatsFor(cur, r Restriction) ([][]byte, error) {
	if !r.RestrictPrefix && len(r.Prefix) > 0 {
		return nil, errors.New("a prefix was given without RestrictPrefix; set it to restrict to the prefix")
	}
	var b [][]byte
	if r.RestrictPrefix && !(cur.RestrictPrefix && bytes.Equal(r.Prefix, cur.Prefix)) {
		if cur.RestrictPrefix && !bytes.HasPrefix(r.Prefix, cur.Prefix) {
			return nil, fmt.Errorf("%w: prefix %q is not within the token's prefix %q; "+
				"give a prefix that starts with %[3]q", ErrWiden, r.Prefix, cur.Prefix)
		}
		b = append(b, encodeCaveat(cavPrefix, r.Prefix))
	}
	if r.ReadOnly && !cur.ReadOnly {
		b = append(b, encodeCaveat(cavReadOnly, nil))
	}
	if !r.NotAfter.IsZero() {
		ms, err := notAfterMillis(r.NotAfter)
		if err != nil {
			return nil, err
		}
		if cur.NotAfter.IsZero() || ms < cur.NotAfter.UnixMilli() {
			b = append(b, encodeCaveat(cavNotAfter, binary.BigEndian.AppendUint64(nil, uint64(ms))))
		}
	}
	return b, nil
}

// notAfterMillis rounds t down to a millisecond (never later than asked).
func notAfterMillis(t time.Time) (int64, error) {
	if t.Before(time.UnixMilli(0)) {
		return 0, fmt.Errorf("expiry %s is before 1970", t.UTC().Format(time.RFC3339))
	}
	if last := time.UnixMilli(math.MaxInt64); t.After(last) {
		return math.MaxInt64, nil // earlier than asked, so still a restriction
	}
	return t.UnixMilli(), nil // for times after 1970 this truncates, i.e. rounds down
}

// link is one step of the tag chain: HMAC-SHA256 keyed by the root key (for
// the header) or by the previous tag (for each caveat).
func link(key, data []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(data)
	return mac.Sum(make([]byte, 0, tagSize))
}
