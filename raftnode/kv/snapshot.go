package kv

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/google/btree"
)

// Snapshot format (version 3), all of it covered by the trailing checksum:
//
//	magic "CRKVSNAP", version byte,
//	applied index, revision, clock: 8 bytes little-endian each,
//	uvarint lease count, per lease (ascending id): uvarint id, uvarint TTL
//	(nanoseconds), deadline as 8 bytes little-endian, prefix (uvarint
//	length + bytes),
//	uvarint key count, per key (ascending): key, value (uvarint length +
//	bytes), uvarint create, mod and version revisions, uvarint lease (0:
//	none; else one of the leases above, whose prefix the key has),
//	uvarint session count, per session (ascending id): uvarint id,
//	lastActive as 8 bytes little-endian, uvarint forgotten mark, uvarint
//	result count, per result (ascending seq): uvarint seq, code byte, flags
//	byte (succeeded, found, deleted), uvarint revision, message (uvarint
//	length + bytes), when deleted the uvarint number of keys a prefix
//	delete deleted (above 0), and when found the previous key-value as a
//	key above,
//	uvarint token key count, per key (ascending id): uvarint id, secret
//	(uvarint length + bytes),
//	uvarint revocation count, per revocation (ascending id): the 16-byte
//	token id, expiry as 8 bytes little-endian,
//	CRC-32C (Castagnoli) of everything before it, 4 bytes little-endian.
//
// A session's saved result's previous key-value has lease 0 (results do
// not keep it). Version 2 is the same without the leases (no lease
// section, no lease per key), and version 1 also without
// the token keys and revocations; Restore still reads both (as states
// with none), and Snapshot writes version 3.
//
// Every integer is minimally encoded and every list strictly ordered, so a
// state has exactly one encoding: Restore accepts nothing else, and a
// restored store snapshots to the very same bytes (a version-1 snapshot's
// state to its version-2 encoding).
const (
	snapMagic     = "CRKVSNAP"
	snapVersion   = 3
	snapVersionV2 = 2
	snapVersionV1 = 1

	resFlagSucceeded = 1
	resFlagFound     = 2
	// resFlagDeleted marks a prefix delete's result, whose count of keys
	// follows the message. Version 3 snapshots written before prefix
	// deletes never set it, so they read as before.
	resFlagDeleted = 4
	resFlagsKnown  = resFlagSucceeded | resFlagFound | resFlagDeleted

	// Restore's caps on length fields. Lengths are also only trusted as
	// far as data actually arrives (see snapReader.bytes).
	maxSnapBytes   = 1 << 30
	maxSnapMessage = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot is a point-in-time copy of a Store, made in O(1) by Store.Snapshot
// and serialized by WriteTo, which may run on any goroutine while the store
// keeps applying. A Snapshot is immutable; WriteTo may be called any number
// of times, concurrently.
type Snapshot struct {
	index, rev uint64
	clock      int64
	kv         *btree.BTreeG[*entry]
	sessions   *btree.BTreeG[sessItem]
	tokenKeys  []tokenKey
	revoked    *btree.BTreeG[revocation]
	lt         leaseTrees
}

// Snapshot returns a copy of the store's current state. It is cheap
// (copy-on-write clones of the trees); call it from the apply goroutine.
func (s *Store) Snapshot() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	sn := &Snapshot{
		index:    s.applied,
		rev:      s.rev,
		clock:    s.clock,
		kv:       s.kv.Clone(),
		sessions: s.sessions.Clone(),
		// The slice is never modified, only replaced.
		tokenKeys: s.tokenKeys,
		revoked:   s.revoked.Clone(),
		lt:        s.lt.clone(),
	}
	// Sessions now shared with sn are copied before their next change.
	s.gen++
	return sn
}

// Index returns the applied index the snapshot was taken at.
func (sn *Snapshot) Index() uint64 { return sn.index }

// Revision returns the store revision the snapshot was taken at.
func (sn *Snapshot) Revision() uint64 { return sn.rev }

// snapWriter buffers output and checksums it.
type snapWriter struct {
	w   io.Writer
	buf []byte
	crc uint32
	n   int64
	err error
}

const snapBufSize = 256 << 10

func (w *snapWriter) flush() {
	if w.err != nil || len(w.buf) == 0 {
		w.buf = w.buf[:0]
		return
	}
	w.crc = crc32.Update(w.crc, castagnoli, w.buf)
	n, err := w.w.Write(w.buf)
	w.n += int64(n)
	if err == nil && n != len(w.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("kv: write snapshot: %w", err)
	}
	w.buf = w.buf[:0]
}

func (w *snapWriter) maybeFlush() {
	if len(w.buf) >= snapBufSize {
		w.flush()
	}
}

func (w *snapWriter) uvarint(v uint64) { w.buf = binary.AppendUvarint(w.buf, v) }

func (w *snapWriter) fixed64(v uint64) { w.buf = binary.LittleEndian.AppendUint64(w.buf, v) }

func (w *snapWriter) bytes(b []byte) {
	w.uvarint(uint64(len(b)))
	if len(b) > snapBufSize {
		w.flush()
		if w.err != nil {
			return
		}
		w.crc = crc32.Update(w.crc, castagnoli, b)
		n, err := w.w.Write(b)
		w.n += int64(n)
		if err == nil && n != len(b) {
			err = io.ErrShortWrite
		}
		if err != nil {
			w.err = fmt.Errorf("kv: write snapshot: %w", err)
		}
		return
	}
	w.buf = append(w.buf, b...)
}

func (w *snapWriter) kv(it *entry) {
	w.bytes(it.key)
	w.bytes(it.value)
	w.uvarint(it.create)
	w.uvarint(it.mod)
	w.uvarint(it.version)
	w.uvarint(it.lease)
	w.maybeFlush()
}

// WriteTo writes the snapshot's deterministic encoding to w: stores in the
// same state write the same bytes. It returns the bytes written.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	sw := &snapWriter{w: w, buf: make([]byte, 0, snapBufSize+4096)}
	sw.buf = append(sw.buf, snapMagic...)
	sw.buf = append(sw.buf, snapVersion)
	sw.fixed64(sn.index)
	sw.fixed64(sn.rev)
	sw.fixed64(uint64(sn.clock))
	sn.writeLeases(sw)
	sw.uvarint(uint64(sn.kv.Len()))
	sn.kv.Ascend(func(it *entry) bool {
		sw.kv(it)
		return sw.err == nil
	})
	sw.uvarint(uint64(sn.sessions.Len()))
	sn.sessions.Ascend(func(si sessItem) bool {
		ss := si.s
		sw.uvarint(ss.id)
		sw.fixed64(uint64(ss.lastActive))
		sw.uvarint(ss.low)
		sw.uvarint(uint64(len(ss.results)))
		for i := range ss.results {
			sv := &ss.results[i]
			r := &sv.res
			var flags byte
			if r.Succeeded {
				flags |= resFlagSucceeded
			}
			if r.Found {
				flags |= resFlagFound
			}
			if r.Deleted != 0 {
				flags |= resFlagDeleted
			}
			sw.uvarint(sv.seq)
			sw.buf = append(sw.buf, byte(r.Code), flags)
			sw.uvarint(r.Revision)
			sw.uvarint(uint64(len(r.Message)))
			sw.buf = append(sw.buf, r.Message...)
			if r.Deleted != 0 {
				sw.uvarint(r.Deleted)
			}
			if r.Found {
				p := entry{key: r.Prev.Key, value: r.Prev.Value, create: r.Prev.CreateRevision, mod: r.Prev.ModRevision, version: r.Prev.Version}
				sw.kv(&p)
			}
			sw.maybeFlush()
			if sw.err != nil {
				return false
			}
		}
		return sw.err == nil
	})
	sw.uvarint(uint64(len(sn.tokenKeys)))
	for _, k := range sn.tokenKeys {
		sw.uvarint(k.id)
		sw.bytes(k.secret)
	}
	sw.uvarint(uint64(sn.revoked.Len()))
	sn.revoked.Ascend(func(r revocation) bool {
		sw.buf = append(sw.buf, r.id[:]...)
		sw.fixed64(uint64(r.expires))
		sw.maybeFlush()
		return sw.err == nil
	})
	sw.flush()
	if sw.err != nil {
		return sw.n, sw.err
	}
	sw.buf = binary.LittleEndian.AppendUint32(sw.buf[:0], sw.crc)
	n, err := w.Write(sw.buf)
	sw.n += int64(n)
	if err == nil && n != len(sw.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return sw.n, fmt.Errorf("kv: write snapshot: %w", err)
	}
	return sw.n, nil
}

// snapReader reads a snapshot through its own buffer, checksumming every
// byte consumed.
type snapReader struct {
	r       io.Reader
	buf     []byte
	pos     int // next unread byte in buf
	end     int // end of valid data in buf
	crcPos  int // buf[crcPos:pos] is consumed but not yet checksummed
	crc     uint32
	off     int64 // bytes consumed before buf[0]
	eof     bool
	err     error
	scratch []byte
	// version is the snapshot's format version; leases the ids and
	// prefixes of its leases, ascending, for the keys to be checked
	// against (version 3).
	version byte
	leases  []lease
}

func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w snapshot: at byte %d: %s", ErrMalformed, r.off+int64(r.pos), fmt.Sprintf(format, args...))
	}
}

// more tries to make at least want unread bytes available, reading as
// needed; it reports whether it did. It fails (sets err) only on a read
// error, not at the end of the input.
func (r *snapReader) more(want int) bool {
	if r.end-r.pos >= want {
		return true
	}
	if r.err != nil {
		return false
	}
	// Checksum and drop the consumed bytes.
	r.crc = crc32.Update(r.crc, castagnoli, r.buf[r.crcPos:r.pos])
	copy(r.buf, r.buf[r.pos:r.end])
	r.off += int64(r.pos)
	r.end -= r.pos
	r.pos, r.crcPos = 0, 0
	for zero := 0; r.end < want && !r.eof; {
		n, err := r.r.Read(r.buf[r.end:])
		r.end += n
		switch {
		case err == io.EOF:
			r.eof = true
		case err != nil:
			r.err = fmt.Errorf("kv: read snapshot: %w", err)
			return false
		case n == 0:
			if zero++; zero >= 100 {
				r.err = fmt.Errorf("kv: read snapshot: %w", io.ErrNoProgress)
				return false
			}
		}
	}
	return r.end >= want
}

// fill is more, failing on a truncated input.
func (r *snapReader) fill(want int) bool {
	if r.more(want) {
		return true
	}
	r.fail("truncated")
	return false
}

func (r *snapReader) byte() byte {
	if !r.fill(1) {
		return 0
	}
	v := r.buf[r.pos]
	r.pos++
	return v
}

func (r *snapReader) fixed64() uint64 {
	if !r.fill(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(r.buf[r.pos:])
	r.pos += 8
	return v
}

func (r *snapReader) array16(v *[16]byte) {
	if !r.fill(len(v)) {
		return
	}
	r.pos += copy(v[:], r.buf[r.pos:])
}

func (r *snapReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	if r.end-r.pos < binary.MaxVarintLen64 && !r.more(binary.MaxVarintLen64) && r.err != nil {
		return 0 // read error; a short tail is fine if the varint ends in it
	}
	v, n := uvarint(r.buf[r.pos:r.end])
	if n <= 0 {
		r.fail("bad or truncated uvarint")
		return 0
	}
	r.pos += n
	return v
}

// appendBytes reads a length-prefixed byte string of at most max bytes and
// appends it to dst. A length is trusted only as far as data arrives: the
// string is copied piece by piece as it is read, so a lying length costs no
// memory beyond the data actually present.
func (r *snapReader) appendBytes(dst []byte, max uint64) []byte {
	n := r.uvarint()
	if r.err != nil {
		return dst
	}
	if n > max {
		r.fail("length %d over the limit %d", n, max)
		return dst
	}
	for left := n; left > 0; {
		if !r.fill(1) {
			return dst
		}
		chunk := min(uint64(r.end-r.pos), left)
		dst = append(dst, r.buf[r.pos:r.pos+int(chunk)]...)
		r.pos += int(chunk)
		left -= chunk
	}
	return dst
}

// kv reads a key-value into it; its key and value alias r.scratch until
// the next read.
func (r *snapReader) kv(it *entry, rev uint64) {
	r.scratch = r.appendBytes(r.scratch[:0], maxSnapBytes)
	klen := len(r.scratch)
	r.scratch = r.appendBytes(r.scratch, maxSnapBytes)
	it.create = r.uvarint()
	it.mod = r.uvarint()
	it.version = r.uvarint()
	it.lease = 0
	if r.version >= snapVersion {
		it.lease = r.uvarint()
	}
	if r.err != nil {
		return
	}
	it.key = r.scratch[:klen:klen]
	it.value = r.scratch[klen:]
	if klen == 0 {
		r.fail("empty key")
	} else if it.create == 0 || it.create > it.mod || it.mod > rev || it.version == 0 || it.version > it.mod {
		r.fail("key %q: bad revisions create %d mod %d version %d at revision %d", it.key, it.create, it.mod, it.version, rev)
	}
}

// Restore replaces the store's whole state with the snapshot read from r,
// which must hold one snapshot written by Snapshot.WriteTo and nothing
// after it. Everything is validated (magic, version, ordering, revisions,
// lengths, checksum, end of input) before the state is replaced: on error
// the store is unchanged. Restore must not run concurrently with Apply.
func (s *Store) Restore(r io.Reader) error {
	st, err := decodeSnapshot(r, true, false, nil)
	if err != nil {
		return err
	}
	s.install(st)
	return nil
}

// snapState is a decoded snapshot's state, ready to install.
type snapState struct {
	applied, rev       uint64
	clock              int64
	kv                 *btree.BTreeG[*entry]
	sessions           *btree.BTreeG[sessItem]
	expiry             *btree.BTreeG[expKey]
	tokenKeys          []tokenKey
	revoked, revExpiry *btree.BTreeG[revocation]
	lt                 leaseTrees
	// keys and nsessions count what the snapshot holds (set with or
	// without build: SummarizeSnapshot reports them).
	keys, nsessions uint64
}

// emptyState is the state of a new store at applied index.
func emptyState(applied uint64) *snapState {
	st := &snapState{applied: applied}
	st.kv, st.sessions, st.expiry = newTrees()
	st.revoked, st.revExpiry = newRevTrees()
	st.lt = newLeaseTrees()
	return st
}

// install replaces the store's state with st.
func (s *Store) install(st *snapState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installLocked(st)
}

// installLocked is install with s.mu held.
func (s *Store) installLocked(st *snapState) {
	s.applied, s.rev, s.clock = st.applied, st.rev, st.clock
	s.kv, s.sessions, s.expiry = st.kv, st.sessions, st.expiry
	s.tokenKeys, s.revoked, s.revExpiry = st.tokenKeys, st.revoked, st.revExpiry
	s.lt = st.lt
	// Restored sessions carry gen 0: at worst they are copied once more
	// than needed; none is shared with a snapshot.
	s.revEpoch.Add(1) // the revocations (and keys) may differ in any way
	// The history does not travel in snapshots: a watch from before the
	// restored revision must hear that it is compacted, never see a gap.
	s.pending = s.pending[:0]
	s.hist.reset(st.rev)
}

// decodeSnapshot reads and validates one snapshot from r. With build, it
// returns the state the snapshot holds; without, it only validates (in
// memory bounded by the largest key or value, not by the state's size)
// and returns a state with no trees. With emptyOK, an input of zero bytes
// is the empty state (nil without build).
//
// accept, if not nil, runs once the header is read and checked, before
// any state is built: an error from it ends the decoding with that error
// (Machine.Restore checks the index there, then drops the state it
// replaces).
func decodeSnapshot(r io.Reader, build, emptyOK bool, accept func(applied uint64) error) (*snapState, error) {
	sr := &snapReader{r: r, buf: make([]byte, 256<<10)}
	if emptyOK && !sr.more(1) {
		if sr.err != nil {
			return nil, sr.err
		}
		if !build {
			return nil, nil
		}
		return emptyState(0), nil
	}
	var hdr [len(snapMagic) + 1]byte
	for i := range hdr {
		hdr[i] = sr.byte()
	}
	if sr.err != nil {
		return nil, sr.err
	}
	if string(hdr[:len(snapMagic)]) != snapMagic {
		return nil, fmt.Errorf("%w snapshot: bad magic %q", ErrMalformed, hdr[:len(snapMagic)])
	}
	version := hdr[len(snapMagic)]
	if version != snapVersion && version != snapVersionV2 && version != snapVersionV1 {
		return nil, fmt.Errorf("%w snapshot: unknown format version %d", ErrMalformed, version)
	}
	sr.version = version
	st := &snapState{}
	st.applied = sr.fixed64()
	st.rev = sr.fixed64()
	st.clock = int64(sr.fixed64())
	applied, rev, clock := st.applied, st.rev, st.clock
	if sr.err != nil {
		return nil, sr.err
	}
	if accept != nil {
		if err := accept(applied); err != nil {
			return nil, err
		}
	}

	if build {
		st.kv, st.sessions, st.expiry = newTrees()
		st.revoked, st.revExpiry = newRevTrees()
		st.lt = newLeaseTrees()
	}
	if version == snapVersion {
		sr.readLeases(st, build)
	}
	nkeys := sr.uvarint()
	st.keys = nkeys
	var last []byte
	for i := uint64(0); i < nkeys && sr.err == nil; i++ {
		var it entry
		sr.kv(&it, rev)
		if sr.err != nil {
			break
		}
		if i > 0 && string(it.key) <= string(last) {
			sr.fail("key %q not after %q", it.key, last)
			break
		}
		if it.lease != 0 && !sr.leaseHolds(it.lease, it.key) {
			break
		}
		if !build {
			last = append(last[:0], it.key...)
			continue
		}
		e := newEntry(it.key, it.value)
		e.create, e.mod, e.version, e.lease = it.create, it.mod, it.version, it.lease
		st.kv.ReplaceOrInsert(e)
		if e.lease != 0 {
			st.lt.attached.ReplaceOrInsert(attachment{lease: e.lease, key: e.key})
		}
		last = e.key
	}
	nsess := sr.uvarint()
	st.nsessions = nsess
	var lastID uint64
	for i := uint64(0); i < nsess && sr.err == nil; i++ {
		ss := &session{}
		ss.id = sr.uvarint()
		ss.lastActive = int64(sr.fixed64())
		ss.indexed = ss.lastActive
		ss.low = sr.uvarint()
		nres := sr.uvarint()
		if sr.err != nil {
			break
		}
		if ss.id <= lastID || ss.id > applied {
			sr.fail("session id %d after %d at applied index %d", ss.id, lastID, applied)
			break
		}
		if ss.lastActive > clock {
			sr.fail("session %d active at %d after the clock %d", ss.id, ss.lastActive, clock)
			break
		}
		lastID = ss.id
		var lastSeq uint64
		for j := uint64(0); j < nres && sr.err == nil; j++ {
			var sv saved
			sv.seq = sr.uvarint()
			code := Code(sr.byte())
			flags := sr.byte()
			sv.res.Code = code
			sv.res.Succeeded = flags&resFlagSucceeded != 0
			sv.res.Found = flags&resFlagFound != 0
			sv.res.Revision = sr.uvarint()
			if sr.scratch = sr.appendBytes(sr.scratch[:0], maxSnapMessage); len(sr.scratch) > 0 && build {
				sv.res.Message = string(sr.scratch)
			}
			if flags&resFlagDeleted != 0 {
				if sv.res.Deleted = sr.uvarint(); sr.err == nil && sv.res.Deleted == 0 {
					sr.fail("session %d: result seq %d flags a count of 0 deleted keys", ss.id, sv.seq)
				}
			}
			if sr.err != nil {
				break
			}
			switch {
			case sv.seq == 0 || sv.seq < ss.low || (j > 0 && sv.seq <= lastSeq):
				sr.fail("session %d: result seq %d (previous %d, mark %d)", ss.id, sv.seq, lastSeq, ss.low)
			case code > LeaseNotFound:
				sr.fail("session %d: result code %d", ss.id, code)
			case flags&^resFlagsKnown != 0:
				sr.fail("session %d: result flags %#x", ss.id, flags)
			case sv.res.Revision > rev:
				sr.fail("session %d: result revision %d above %d", ss.id, sv.res.Revision, rev)
			}
			if sr.err != nil {
				break
			}
			if sv.res.Found {
				var p entry
				if sr.kv(&p, rev); sr.err == nil && p.lease != 0 {
					sr.fail("session %d: result seq %d keeps a lease", ss.id, sv.seq)
				}
				if build {
					e := newEntry(p.key, p.value)
					e.create, e.mod, e.version = p.create, p.mod, p.version
					sv.res.Prev = e.kv()
				}
			}
			lastSeq = sv.seq
			if build {
				ss.results = append(ss.results, sv)
			}
		}
		if build {
			st.sessions.ReplaceOrInsert(sessItem{id: ss.id, s: ss})
			st.expiry.ReplaceOrInsert(expKey{last: ss.lastActive, id: ss.id})
		}
	}
	if version != snapVersionV1 {
		st.tokenKeys = sr.tokenKeys()
		sr.revocations(st.revoked, st.revExpiry, clock)
	}

	if sr.err != nil {
		return nil, sr.err
	}
	// The checksum covers everything consumed so far.
	if !sr.fill(4) {
		return nil, sr.err
	}
	sr.crc = crc32.Update(sr.crc, castagnoli, sr.buf[sr.crcPos:sr.pos])
	sr.crcPos = sr.pos
	want := binary.LittleEndian.Uint32(sr.buf[sr.pos:])
	sr.pos += 4
	sr.crcPos = sr.pos
	if want != sr.crc {
		return nil, fmt.Errorf("%w snapshot: checksum %#08x, computed %#08x", ErrMalformed, want, sr.crc)
	}
	if sr.more(1) {
		return nil, fmt.Errorf("%w snapshot: trailing data after the checksum", ErrMalformed)
	}
	if sr.err != nil {
		return nil, sr.err
	}
	return st, nil
}

// count reads the count of a list of at most max things.
func (r *snapReader) count(things string, max uint64) uint64 {
	n := r.uvarint()
	if r.err == nil && n > max {
		r.fail("%d %s, over the limit %d", n, things, max)
	}
	return n
}

// tokenKeys reads the token keys of a version-2 snapshot.
func (r *snapReader) tokenKeys() []tokenKey {
	n := r.count("token keys", MaxTokenKeys)
	var keys []tokenKey
	var last uint64 // ids start at 1
	for i := uint64(0); i < n && r.err == nil; i++ {
		id := r.uvarint()
		secret := r.appendBytes(nil, MaxTokenKeySize)
		switch {
		case r.err != nil:
		case id <= last:
			r.fail("token key id %d not after %d", id, last)
		case len(secret) < MinTokenKeySize:
			r.fail("token key %d: %d-byte secret, under %d", id, len(secret), MinTokenKeySize)
		default:
			keys = append(keys, tokenKey{id: id, secret: secret})
			last = id
		}
	}
	return keys
}

// revocations reads the revocations of a version-2 snapshot into revoked
// and, those that expire, revExpiry (both nil: only validate). A kept
// revocation never expired before the clock.
func (r *snapReader) revocations(revoked, revExpiry *btree.BTreeG[revocation], clock int64) {
	n := r.count("revocations", MaxRevocations)
	var last revocation
	for i := uint64(0); i < n && r.err == nil; i++ {
		var rv revocation
		r.array16(&rv.id)
		rv.expires = int64(r.fixed64())
		switch {
		case r.err != nil:
		case i > 0 && !lessRevocation(last, rv):
			r.fail("revoked id %x not after %x", rv.id, last.id)
		case rv.expires < 0 || (rv.expires != 0 && rv.expires < clock):
			r.fail("revoked id %x: expiry %d before the clock %d", rv.id, rv.expires, clock)
		default:
			if revoked != nil {
				revoked.ReplaceOrInsert(rv)
				if rv.expires != 0 {
					revExpiry.ReplaceOrInsert(rv)
				}
			}
			last = rv
		}
	}
}
