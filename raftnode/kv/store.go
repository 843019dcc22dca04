package kv

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/google/btree"
)

// treeDegree is the B-trees' degree.
const treeDegree = 32

// entry is a key's stored state. An entry and its bytes (key and value
// share one buffer) are never modified once in the tree, so they can be
// handed out read-only and shared with snapshots; a write replaces the
// entry.
type entry struct {
	key, value           []byte
	create, mod, version uint64
	lease                uint64 // 0: none
}

// Entries with their bytes inline: one allocation per write of a small
// key and value. The buffer sizes fill the allocator's size classes (the
// entry is 80 bytes: 112, 128, 160 and 256 in all).
type (
	entry40 struct {
		e   entry
		buf [32]byte
	}
	entry56 struct {
		e   entry
		buf [48]byte
	}
	entry88 struct {
		e   entry
		buf [80]byte
	}
	entry184 struct {
		e   entry
		buf [176]byte
	}
)

// newEntry returns an entry holding copies of key and value in one buffer
// (nil value when empty).
func newEntry(key, value []byte) *entry {
	n := len(key) + len(value)
	var e *entry
	var buf []byte
	switch {
	case n <= 32:
		x := new(entry40)
		e, buf = &x.e, x.buf[:n:n]
	case n <= 48:
		x := new(entry56)
		e, buf = &x.e, x.buf[:n:n]
	case n <= 80:
		x := new(entry88)
		e, buf = &x.e, x.buf[:n:n]
	case n <= 176:
		x := new(entry184)
		e, buf = &x.e, x.buf[:n:n]
	default:
		e, buf = new(entry), make([]byte, n)
	}
	copy(buf, key)
	copy(buf[len(key):], value)
	e.key = buf[:len(key):len(key)]
	if len(value) > 0 {
		e.value = buf[len(key):]
	}
	return e
}

func lessEntry(a, b *entry) bool { return bytes.Compare(a.key, b.key) < 0 }

func (e *entry) kv() KeyValue {
	if e == nil {
		return KeyValue{}
	}
	return KeyValue{Key: e.key, Value: e.value, CreateRevision: e.create, ModRevision: e.mod, Version: e.version, Lease: e.lease}
}

// session is a client session. A session reachable from a Snapshot is
// never modified: the store copies it first (see mutableSession).
type session struct {
	id         uint64
	lastActive int64
	// low: results of seqs below it are forgotten (acked or evicted).
	low uint64
	// results holds the saved results in ascending seq order. Seqs mostly
	// arrive in order, so a save is usually an append and a forget a
	// re-slice from the front.
	results []saved
	// gen is the store's snapshot generation when this copy was made; a
	// session whose gen differs from the store's may be shared with a
	// snapshot.
	gen uint64
	// indexed is the last activity of the session's key in the lazy
	// expiry index. Store bookkeeping: snapshots never read it, so the
	// store updates it even on a session shared with a snapshot.
	indexed int64
}

// saved is one saved result.
type saved struct {
	seq uint64
	res Result
}

// find returns the position of seq in sess.results and whether it is
// there.
func (sess *session) find(seq uint64) (int, bool) {
	rs := sess.results
	if n := len(rs); n == 0 || rs[n-1].seq < seq {
		return n, false // the common case: a new, higher seq
	}
	i := sort.Search(len(rs), func(i int) bool { return rs[i].seq >= seq })
	return i, i < len(rs) && rs[i].seq == seq
}

// sessItem is the sessions tree's item, ordered by id.
type sessItem struct {
	id uint64
	s  *session
}

func lessSessItem(a, b sessItem) bool { return a.id < b.id }

// expKey orders sessions by last activity, then id: the minimum is the
// first to expire and the one evicted when the table is full. The index
// is lazy: a session's key holds a last activity at or before the
// session's real one (refreshing a session does not touch the index);
// expire and evict fix stale keys when they reach the front.
type expKey struct {
	last int64
	id   uint64
}

func lessExpKey(a, b expKey) bool {
	if a.last != b.last {
		return a.last < b.last
	}
	return a.id < b.id
}

// tokenKey is a token root key; its secret is never modified (it may be
// shared with snapshots and handed out read-only).
type tokenKey struct {
	id     uint64
	secret []byte
}

// revocation is a revoked token id and when it may be forgotten (0:
// never).
type revocation struct {
	id      [16]byte
	expires int64
}

func lessRevocation(a, b revocation) bool { return bytes.Compare(a.id[:], b.id[:]) < 0 }

// lessRevExpiry orders the revocations that expire by expiry, then id: the
// minimum is the next to forget.
func lessRevExpiry(a, b revocation) bool {
	if a.expires != b.expires {
		return a.expires < b.expires
	}
	return lessRevocation(a, b)
}

// Store is the replicated key-value state machine. Apply, SetApplied,
// Snapshot and Restore must be called from one goroutine at a time (the
// node's apply loop); the reads (Get, Range, Revision, AppliedIndex,
// Sessions, the token keys and revocations) may be called concurrently
// with them from any goroutine.
type Store struct {
	cfg Config
	ttl int64 // cfg.SessionTTL in nanoseconds

	mu       sync.RWMutex
	applied  uint64
	rev      uint64
	clock    int64
	kv       *btree.BTreeG[*entry]
	sessions *btree.BTreeG[sessItem]
	expiry   *btree.BTreeG[expKey]
	gen      uint64
	// tokenKeys is in ascending id order. The slice is replaced on a
	// change, never modified, so snapshots share it.
	tokenKeys []tokenKey
	revoked   *btree.BTreeG[revocation] // by id
	revExpiry *btree.BTreeG[revocation] // those with an expiry, by expiry
	lt        leaseTrees

	// revEpoch counts the revocations applied and the restores; read
	// without the mutex.
	revEpoch atomic.Uint64

	// hist is the event history watches read (history.go); pending the
	// events of the entry being applied, published when it ends.
	hist    *history
	pending []histEvent

	scratch Command // reused by Apply to decode without allocating ops
	pivot   entry   // Apply's search key, to look up without allocating
}

// New returns an empty store with cfg's limits (zero fields: defaults).
func New(cfg Config) *Store {
	cfg = cfg.withDefaults()
	s := &Store{
		cfg: cfg,
		ttl: int64(cfg.SessionTTL),
	}
	s.kv, s.sessions, s.expiry = newTrees()
	s.revoked, s.revExpiry = newRevTrees()
	s.lt = newLeaseTrees()
	s.hist = newHistory(cfg, 0)
	return s
}

func newRevTrees() (*btree.BTreeG[revocation], *btree.BTreeG[revocation]) {
	return btree.NewG(treeDegree, lessRevocation), btree.NewG(treeDegree, lessRevExpiry)
}

func newTrees() (*btree.BTreeG[*entry], *btree.BTreeG[sessItem], *btree.BTreeG[expKey]) {
	return btree.NewG(treeDegree, lessEntry), btree.NewG(treeDegree, lessSessItem), btree.NewG(treeDegree, lessExpKey)
}

// Config returns the store's configuration with the defaults filled in
// (SessionTTL is what openSession reports to clients).
func (s *Store) Config() Config { return s.cfg }

// Result messages: constants, so results are deterministic and cheap.
const (
	msgSessionExpired = "session unknown or expired"
	msgSeqZero        = "seq must be above 0"
	msgStale          = "seq is below the session's forgotten mark: its result was acknowledged or evicted"
	msgEmptyKey       = "empty key"
	msgEmptyPrefix    = "empty prefix: deleting every key is refused (delete the prefixes in use one by one)"
	msgDeleteTooLarge = "the keys and values under the prefix are over the store's limit for one delete (4 MiB by default, each key counting 64 bytes more): delete narrower prefixes"
	msgBadType        = "unknown op type"
	msgBadCompare     = "unknown compare kind"
	msgKeyTooLarge    = "key larger than the store's maximum key size"
	msgValueTooLarge  = "value larger than the store's maximum value size"

	msgTokenKeyID     = "token key id must be above 0"
	msgTokenKeySize   = "token key secret must be 32 to 64 bytes"
	msgTokenKeysFull  = "the store holds the maximum number of token keys"
	msgRevokeExpires  = "revocation expiry must not be negative"
	msgRevocationFull = "the store holds the maximum number of revocations"
)

// Apply applies the log entry at index, whose data is an encoded Command
// (empty data: a no-op, e.g. the leader's first entry of its term). index
// must be above AppliedIndex (gaps are allowed). Apply is deterministic:
// every store applying the same entries from the same state reaches the
// same state and returns the same Applied. The Results' KeyValue slices
// are shared with the store: read-only.
func (s *Store) Apply(index uint64, data []byte) Applied {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.publishPending() // before the unlock: deferred later, run first
	if index <= s.applied {
		return Applied{Err: fmt.Errorf("%w: apply %d at applied index %d", ErrIndex, index, s.applied)}
	}
	s.applied = index
	if len(data) == 0 {
		return Applied{}
	}
	cmd := &s.scratch
	err := decodeCommand(cmd, data, cmd.Ops)
	defer cmd.release()
	if err != nil {
		return Applied{Err: fmt.Errorf("entry %d: %w", index, err)}
	}
	if cmd.Time > s.clock {
		s.clock = cmd.Time
	}
	s.expire()
	if s.revExpiry.Len() > 0 { // inlined: no call on the common path
		s.expireRevocations()
	}
	a := Applied{ID: cmd.ID, Kind: cmd.Kind, Session: cmd.Session}
	switch cmd.Kind {
	case CmdOpenSession:
		a.Session = index
		s.openSession(index)
	case CmdKeepAlive:
		a.Results = []Result{s.keepAlive(cmd.Session)}
	case CmdCloseSession:
		a.Results = []Result{s.closeSession(cmd.Session)}
	case CmdBatch:
		a.Results = s.batch(cmd)
	case CmdTokenKey:
		a.Results = []Result{s.addTokenKey(&cmd.TokenKey)}
	case CmdRevoke:
		a.Results = []Result{s.revoke(&cmd.Revoke)}
	case CmdLeaseGrant, CmdLeaseRevoke, CmdLeaseKeepAlive, CmdLeaseExpire:
		s.applyLease(index, cmd, &a)
	}
	return a
}

// release drops the decoded command's references to the entry's bytes,
// so the store does not keep the caller's buffer reachable.
func (c *Command) release() {
	clear(c.Ops)
	c.TokenKey.Secret = nil
	c.Lease = LeaseCommand{}
}

// SetApplied advances the applied index over an entry that is not a kv
// command (e.g. a configuration change). An index at or below the applied
// index is ignored.
func (s *Store) SetApplied(index uint64) {
	s.mu.Lock()
	if index > s.applied {
		s.applied = index
	}
	s.mu.Unlock()
}

// deadline returns last+ttl, saturating.
func (s *Store) deadline(last int64) int64 {
	if last > math.MaxInt64-s.ttl {
		return math.MaxInt64
	}
	return last + s.ttl
}

// oldest returns the least recently active session's index key (ties:
// lowest id), first bringing the stale keys at the front of the lazy index
// up to date.
func (s *Store) oldest() (expKey, bool) {
	for {
		e, ok := s.expiry.Min()
		if !ok {
			return e, false
		}
		it, _ := s.sessions.Get(sessItem{id: e.id})
		if it.s.lastActive == e.last {
			return e, true
		}
		s.expiry.DeleteMin()
		s.expiry.ReplaceOrInsert(expKey{last: it.s.lastActive, id: e.id})
		it.s.indexed = it.s.lastActive
	}
}

// drop forgets the session of index key e.
func (s *Store) drop(e expKey) {
	s.expiry.Delete(e)
	s.sessions.Delete(sessItem{id: e.id})
}

// expire forgets the sessions idle for longer than the TTL at the clock.
func (s *Store) expire() {
	for {
		// Cheap check first: the front key's last activity is at or
		// before the real one of every session.
		e, ok := s.expiry.Min()
		if !ok || s.deadline(e.last) >= s.clock {
			return
		}
		if e, ok = s.oldest(); !ok || s.deadline(e.last) >= s.clock {
			return
		}
		s.drop(e)
	}
}

// expireRevocations forgets the revocations that expired before the
// clock.
func (s *Store) expireRevocations() {
	for {
		r, ok := s.revExpiry.Min()
		if !ok || r.expires >= s.clock {
			return
		}
		s.revExpiry.DeleteMin()
		s.revoked.Delete(r)
	}
}

// addTokenKey adds k unless its id is present (the first key of an id
// stays: nodes never disagree on a key).
func (s *Store) addTokenKey(k *TokenKey) Result {
	switch {
	case k.ID == 0:
		return Result{Code: InvalidArgument, Message: msgTokenKeyID, Revision: s.rev}
	case len(k.Secret) < MinTokenKeySize || len(k.Secret) > MaxTokenKeySize:
		return Result{Code: InvalidArgument, Message: msgTokenKeySize, Revision: s.rev}
	}
	i, found := s.findTokenKey(k.ID)
	if found {
		return Result{Revision: s.rev}
	}
	if len(s.tokenKeys) >= MaxTokenKeys {
		return Result{Code: TooLarge, Message: msgTokenKeysFull, Revision: s.rev}
	}
	// A new slice: the old one may be shared with a snapshot.
	keys := make([]tokenKey, 0, len(s.tokenKeys)+1)
	keys = append(keys, s.tokenKeys[:i]...)
	keys = append(keys, tokenKey{id: k.ID, secret: bytes.Clone(k.Secret)})
	s.tokenKeys = append(keys, s.tokenKeys[i:]...)
	return Result{Revision: s.rev, Succeeded: true}
}

// findTokenKey returns the position of id in s.tokenKeys and whether it is
// there.
func (s *Store) findTokenKey(id uint64) (int, bool) {
	return slices.BinarySearchFunc(s.tokenKeys, id, func(k tokenKey, id uint64) int {
		switch {
		case k.id < id:
			return -1
		case k.id > id:
			return 1
		}
		return 0
	})
}

// revoke adds r, merged with a revocation of the same id (the later
// expiry wins, never beats any). A revocation that expired before the
// clock is not kept, as if expireRevocations had just forgotten it.
func (s *Store) revoke(r *Revocation) Result {
	if r.Expires < 0 {
		return Result{Code: InvalidArgument, Message: msgRevokeExpires, Revision: s.rev}
	}
	nr := revocation{id: r.ID, expires: r.Expires}
	old, found := s.revoked.Get(nr)
	if found && (old.expires == 0 || (nr.expires != 0 && nr.expires < old.expires)) {
		nr.expires = old.expires
	}
	changed := !found || nr.expires != old.expires
	if changed && !found && nr.expires != 0 && nr.expires < s.clock {
		changed = false // already expired (a kept one never is)
	}
	if changed && !found && s.revoked.Len() >= MaxRevocations {
		return Result{Code: TooLarge, Message: msgRevocationFull, Revision: s.rev}
	}
	if changed {
		if found && old.expires != 0 {
			s.revExpiry.Delete(old)
		}
		s.revoked.ReplaceOrInsert(nr)
		if nr.expires != 0 {
			s.revExpiry.ReplaceOrInsert(nr)
		}
	}
	// After the change, under the lock: a reader that sees the new epoch
	// and then asks Revoked sees the revocation.
	s.revEpoch.Add(1)
	return Result{Revision: s.rev, Succeeded: changed}
}

func (s *Store) openSession(id uint64) {
	for s.sessions.Len() >= s.cfg.MaxSessions {
		e, ok := s.oldest()
		if !ok {
			break
		}
		s.drop(e)
	}
	s.sessions.ReplaceOrInsert(sessItem{id: id, s: &session{id: id, lastActive: s.clock, gen: s.gen, indexed: s.clock}})
	s.expiry.ReplaceOrInsert(expKey{last: s.clock, id: id})
}

// liveSession returns the session id, made private to the store (not
// shared with a snapshot) and with its activity refreshed; nil if unknown.
func (s *Store) liveSession(id uint64) *session {
	it, ok := s.sessions.Get(sessItem{id: id})
	if !ok {
		return nil
	}
	sess := it.s
	if sess.gen != s.gen {
		cp := *sess
		cp.gen = s.gen
		cp.results = slices.Clone(sess.results)
		sess = &cp
		s.sessions.ReplaceOrInsert(sessItem{id: id, s: sess})
	}
	sess.lastActive = s.clock // the expiry index catches up lazily
	return sess
}

func (s *Store) keepAlive(id uint64) Result {
	if s.liveSession(id) == nil {
		return Result{Code: SessionExpired, Message: msgSessionExpired, Revision: s.rev}
	}
	return Result{Revision: s.rev}
}

func (s *Store) closeSession(id uint64) Result {
	it, ok := s.sessions.Get(sessItem{id: id})
	if !ok {
		return Result{Code: SessionExpired, Message: msgSessionExpired, Revision: s.rev}
	}
	s.drop(expKey{last: it.s.indexed, id: id})
	return Result{Revision: s.rev}
}

func (s *Store) batch(cmd *Command) []Result {
	res := make([]Result, len(cmd.Ops))
	sess := s.liveSession(cmd.Session)
	if sess == nil {
		for i := range res {
			res[i] = Result{Code: SessionExpired, Message: msgSessionExpired, Revision: s.rev}
		}
		return res
	}
	if cmd.AckedBelow > sess.low {
		sess.low = cmd.AckedBelow
		s.dropBelow(sess)
	}
	for i := range cmd.Ops {
		op := &cmd.Ops[i]
		if op.Seq == 0 {
			res[i] = Result{Code: InvalidArgument, Message: msgSeqZero, Revision: s.rev}
			continue
		}
		pos, ok := sess.find(op.Seq)
		if ok {
			res[i] = sess.results[pos].res
			continue
		}
		if op.Seq < sess.low {
			res[i] = Result{Code: StaleSequence, Message: msgStale, Revision: s.rev}
			continue
		}
		r := s.exec(op)
		res[i] = r
		s.save(sess, pos, op.Seq, r)
	}
	return res
}

// dropBelow forgets the saved results below sess.low.
func (s *Store) dropBelow(sess *session) {
	n, _ := sess.find(sess.low)
	sess.forget(n)
}

// forget drops the first n saved results. A few remaining results are
// moved to the front, to keep reusing the array; many are re-sliced (the
// next growth of the slice drops the front).
func (sess *session) forget(n int) {
	if n == 0 {
		return
	}
	rs := sess.results
	if left := len(rs) - n; left <= 16 {
		copy(rs, rs[n:])
		clear(rs[left:]) // release the forgotten Prev values
		sess.results = rs[:left]
		return
	}
	clear(rs[:n])
	sess.results = rs[n:]
}

// save saves seq's result at position pos (from find).
func (s *Store) save(sess *session, pos int, seq uint64, r Result) {
	r.Txn = nil      // not kept: see Result.Txn
	r.Prev.Lease = 0 // not kept: see KeyValue.Lease
	sess.results = slices.Insert(sess.results, pos, saved{seq: seq, res: r})
	if over := len(sess.results) - s.cfg.MaxSavedResults; over > 0 {
		if last := sess.results[over-1].seq; last >= sess.low {
			sess.low = last + 1
		}
		sess.forget(over)
	}
}

// exec validates and applies one write.
func (s *Store) exec(op *WriteOp) Result {
	switch op.Type {
	case OpTxn:
		return s.txn(op.Txn, true)
	case OpPut, OpDelete:
	case OpCAS:
		switch op.Compare {
		case CompareValue, CompareModRevision, CompareAbsent:
		default:
			return Result{Code: InvalidArgument, Message: msgBadCompare, Revision: s.rev}
		}
	default:
		return Result{Code: InvalidArgument, Message: msgBadType, Revision: s.rev}
	}
	if len(op.Key) == 0 {
		if op.Prefix {
			return Result{Code: InvalidArgument, Message: msgEmptyPrefix, Revision: s.rev}
		}
		return Result{Code: InvalidArgument, Message: msgEmptyKey, Revision: s.rev}
	}
	if len(op.Key) > s.cfg.MaxKeySize {
		return Result{Code: TooLarge, Message: msgKeyTooLarge, Revision: s.rev}
	}
	if len(op.Value) > s.cfg.MaxValueSize || len(op.CompareValue) > s.cfg.MaxValueSize {
		return Result{Code: TooLarge, Message: msgValueTooLarge, Revision: s.rev}
	}
	if op.Lease != 0 && op.Type != OpDelete && !op.DeleteOnSuccess {
		if code, msg := s.checkLease(op.Lease, op.Key); code != OK {
			return Result{Code: code, Message: msg, Revision: s.rev}
		}
	}
	switch op.Type {
	case OpPut:
		cur, found := s.put(op.Key, op.Value, op.Lease)
		return Result{Revision: s.rev, Found: found, Prev: cur.kv()}
	case OpDelete:
		if op.Prefix {
			doomed, ok := s.underPrefix(op.Key, int64(s.cfg.MaxDeleteBytes))
			if !ok {
				return Result{Code: TooLarge, Message: msgDeleteTooLarge, Revision: s.rev}
			}
			n := s.deleteEntries(doomed, s.rev+1)
			if n > 0 {
				s.rev++
			}
			return Result{Revision: s.rev, Succeeded: n > 0, Deleted: n}
		}
		s.pivot.key = op.Key
		cur, found := s.kv.Delete(&s.pivot)
		s.pivot.key = nil
		if found {
			s.rev++
			s.detach(cur)
			s.record(s.rev, nil, cur)
		}
		return Result{Revision: s.rev, Succeeded: found, Found: found, Prev: cur.kv()}
	}
	s.pivot.key = op.Key
	cur, found := s.kv.Get(&s.pivot)
	s.pivot.key = nil
	prev := cur.kv()
	var match bool
	switch op.Compare {
	case CompareValue:
		match = found && bytes.Equal(cur.value, op.CompareValue)
	case CompareModRevision:
		match = prev.ModRevision == op.CompareRevision // an absent key's is 0
	case CompareAbsent:
		match = !found
	}
	if !match {
		return Result{Revision: s.rev, Found: found, Prev: prev}
	}
	if op.DeleteOnSuccess {
		if found {
			s.kv.Delete(cur)
			s.rev++
			s.detach(cur)
			s.record(s.rev, nil, cur)
		}
	} else {
		s.put(op.Key, op.Value, op.Lease)
	}
	return Result{Revision: s.rev, Succeeded: true, Found: found, Prev: prev}
}

// put writes key=value at a new revision, returning the key's previous
// entry if it had one. One tree traversal: the new entry is inserted
// first, then completed from the one it replaced (it is not yet visible to
// any reader or snapshot: the write lock is held).
func (s *Store) put(key, value []byte, lease uint64) (*entry, bool) {
	s.rev++
	return s.putAt(key, value, s.rev, lease)
}

// putAt is put at revision rev, which it leaves to the caller to make the
// store's. The key is attached to lease (0: none), which the caller
// checked exists.
func (s *Store) putAt(key, value []byte, rev, lease uint64) (*entry, bool) {
	e := newEntry(key, value)
	e.create, e.mod, e.version, e.lease = rev, rev, 1, lease
	old, found := s.kv.ReplaceOrInsert(e)
	if found {
		e.create = old.create
		e.version = old.version + 1
	}
	if lease != 0 || (found && old.lease != 0) {
		s.reattach(old, e)
	}
	s.record(rev, e, old)
	return old, found
}

// underPrefix returns the entries of the keys that start with prefix, in
// order, and true if their cost (keys and values, eventOverhead more
// each: what their delete events cost) is within budget; false as soon
// as it is over, so the walk is bounded by the budget too.
func (s *Store) underPrefix(prefix []byte, budget int64) ([]*entry, bool) {
	var doomed []*entry
	ok := true
	s.kv.AscendGreaterOrEqual(&entry{key: prefix}, func(e *entry) bool {
		if !bytes.HasPrefix(e.key, prefix) {
			return false
		}
		if budget -= int64(eventOverhead + len(e.key) + len(e.value)); budget < 0 {
			ok = false
			return false
		}
		doomed = append(doomed, e)
		return true
	})
	return doomed, ok
}

// deleteEntries deletes the entries (from underPrefix: collected first,
// as the tree must not change while it is walked) at revision rev, which
// it leaves to the caller to make the store's when it returns above 0
// (the number of keys deleted). Each key leaves its lease and gets a
// delete event at rev, as a txn's deletes do.
func (s *Store) deleteEntries(doomed []*entry, rev uint64) uint64 {
	for _, e := range doomed {
		s.kv.Delete(e)
		s.detach(e)
		s.record(rev, nil, e)
	}
	return uint64(len(doomed))
}

// Get returns key's state and the revision it was read at. The returned
// slices are shared with the store: read-only.
func (s *Store) Get(key []byte) (kv KeyValue, found bool, rev uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.kv.Get(&entry{key: key})
	if !ok {
		return KeyValue{}, false, s.rev
	}
	return e.kv(), true, s.rev
}

// Range returns the keys with prefix that sort strictly after after, in
// ascending byte order, at most min(limit, MaxRangeLimit) of them
// (limit <= 0: MaxRangeLimit); more says whether another key follows the
// last returned. rev is the revision the page was read at. The returned
// slices are shared with the store: read-only (the kvs slice itself is
// the caller's).
func (s *Store) Range(prefix, after []byte, limit int) (kvs []KeyValue, more bool, rev uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	kvs, more = s.rangeLocked(prefix, after, limit)
	return kvs, more, s.rev
}

// rangeLocked is Range, with s.mu held.
func (s *Store) rangeLocked(prefix, after []byte, limit int) (kvs []KeyValue, more bool) {
	if limit <= 0 || limit > s.cfg.MaxRangeLimit {
		limit = s.cfg.MaxRangeLimit
	}
	start := prefix
	if bytes.Compare(after, prefix) > 0 {
		start = after
	}
	s.kv.AscendGreaterOrEqual(&entry{key: start}, func(it *entry) bool {
		if !bytes.HasPrefix(it.key, prefix) {
			return false
		}
		if len(after) > 0 && bytes.Equal(it.key, after) {
			return true
		}
		if len(kvs) == limit {
			more = true
			return false
		}
		if kvs == nil {
			kvs = make([]KeyValue, 0, min(limit, 64))
		}
		kvs = append(kvs, it.kv())
		return true
	})
	return kvs, more
}

// Revision returns the store's revision: the number of state-changing ops
// applied.
func (s *Store) Revision() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.rev
}

// AppliedIndex returns the index of the last entry applied (or skipped via
// SetApplied, or restored from a snapshot).
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Sessions returns the number of live sessions.
func (s *Store) Sessions() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.sessions.Len()
}

// Len returns the number of keys.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.kv.Len()
}

// Clock returns the store's log clock: the largest Command.Time applied
// (unix nanoseconds).
func (s *Store) Clock() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clock
}

// TokenKey returns the token root key of id. The returned slice is shared
// with the store, which never modifies it: read-only.
func (s *Store) TokenKey(id uint64) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := s.findTokenKey(id)
	if !ok {
		return nil, false
	}
	return s.tokenKeys[i].secret, true
}

// CurrentTokenKey returns the token root key with the highest id, the one
// to mint new tokens with; ok is false when there is none. The returned
// slice is shared with the store: read-only.
func (s *Store) CurrentTokenKey() (id uint64, key []byte, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.tokenKeys) == 0 {
		return 0, nil, false
	}
	k := s.tokenKeys[len(s.tokenKeys)-1]
	return k.id, k.secret, true
}

// Revoked reports whether the token id is revoked. A revocation is kept
// at least until the log clock passes its expiry.
func (s *Store) Revoked(id [16]byte) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.revoked.Has(revocation{id: id})
}

// RevocationEpoch returns a counter that grows whenever a revocation is
// applied or the store is restored from a snapshot: while it is
// unchanged, no token became revoked. It is one atomic load, without the
// store's lock, so it is cheap enough to poll on every call. Read it
// before asking Revoked: a revocation applied in between then moves the
// epoch the caller compares with next time.
func (s *Store) RevocationEpoch() uint64 { return s.revEpoch.Load() }
