// Package token implements capraft's tokens: sturdy references to a grant of
// authority that an operator mints and that any holder can narrow offline.
//
// They are macaroons (Birgisson et al., "Macaroons: Cookies with Contextual
// Caveats for Decentralized Authorization in the Cloud", NDSS 2014) with
// first-party caveats only: a token names the root key that signed it, its
// own id and the role it was minted for, carries a list of caveats that each
// restrict what it grants, and ends in a chained HMAC-SHA256 tag that binds
// them all to a root key only the cluster knows. The package is pure: no I/O, no clock of its own, no logging.
//
// # Format
//
// A token's text form is "capraft1." followed by the unpadded base64url
// encoding (RFC 4648 §5) of its binary form:
//
//	version    1 byte    1
//	key id     uvarint   which root key signed it (the cluster rotates keys)
//	token id   16 bytes  names the token and everything derived from it
//	role       1 byte    1 client, 2 operator
//	caveats    zero or more, each:
//	             type    1 byte   1 prefix, 2 read-only, 3 not-after
//	             length  uvarint  length of value
//	             value   prefix: the key prefix; read-only: empty;
//	                     not-after: 8 bytes, big-endian unix milliseconds
//	tag        32 bytes  the HMAC chain below
//
// The first four fields are the header. The tag is a chain:
//
//	tag0 = HMAC-SHA256(rootKey, header)
//	tagI = HMAC-SHA256(tagI-1, caveatI)  // caveatI: its type, length and value bytes
//
// and the token carries the last one. Decoding is strict, so that a token has
// exactly one text form: varints are minimal, the base64 carries no padding,
// line breaks or stray bits, nothing follows the tag, the binary form is at
// most MaxSize bytes with at most MaxCaveats caveats, and an unknown version,
// role or caveat type is refused (fail closed: a caveat this code does not
// understand might restrict something, so it is never ignored).
//
// # Attenuation
//
// Anyone holding a token can append a caveat and replace the tag by
// HMAC(tag, caveat) without the root key; nobody can remove one, because that
// would need the earlier tag, which HMAC does not reveal. Every caveat type
// only restricts, so appending one only narrows:
//
//   - prefix: every key the token touches must start with the prefix. Every
//     prefix caveat must hold, so the effective prefix is the longest; the
//     prefixes must be nested (each a prefix of the longer ones), else the
//     caveats contradict each other, grant no key at all, and the token is
//     refused as malformed. Attenuate refuses a prefix outside the current
//     one rather than make such a token.
//   - read-only: the token cannot write. One such caveat is enough.
//   - not-after: the token is invalid after this instant. The earliest one
//     wins, so a later expiry appended to a token never extends it.
//
// The role is fixed at minting. An operator's token that any prefix or
// read-only caveat narrows grants only a client's authority (Grant.Role):
// a restricted token is never an operator's. Mint refuses to make one
// directly, since that is almost certainly a mistake.
//
// # Verification
//
// Parse checks syntax only. Verify recomputes the chain from the root key
// named by KeyID, compares the tags in constant time (hmac.Equal), then checks
// the expiry, and returns the effective Grant. Revocation is by token id and
// is the caller's business: a derived token keeps its parent's id, so
// revoking an id revokes everything derived from it.
//
// A token is a bearer secret: whoever holds its text holds its authority.
// Error messages from this package never include it; log ID instead.
package token
