package kv

import (
	"bytes"
	"fmt"
	"math"
	"sync"

	"github.com/google/btree"
)

// B-tree degrees: wide nodes for the big trees, small ones for the
// per-session saved results (usually a handful).
const (
	treeDegree    = 32
	resultsDegree = 8
)

// item is a key's stored state. key and value share one buffer owned by
// the store and are never modified after insertion, so they can be handed
// out read-only and shared with snapshots.
type item struct {
	key, value           []byte
	create, mod, version uint64
}

func lessItem(a, b item) bool { return bytes.Compare(a.key, b.key) < 0 }

func (it *item) kv() KeyValue {
	return KeyValue{Key: it.key, Value: it.value, CreateRevision: it.create, ModRevision: it.mod, Version: it.version}
}

// session is a client session. A session reachable from a Snapshot is
// never modified: the store copies it first (see mutableSession).
type session struct {
	id         uint64
	lastActive int64
	// low: results of seqs below it are forgotten (acked or evicted).
	low uint64
	// results holds the saved results by seq; nil when none was saved yet.
	results *btree.BTreeG[saved]
	// gen is the store's snapshot generation when this copy was made; a
	// session whose gen differs from the store's may be shared with a
	// snapshot.
	gen uint64
}

// saved is one saved result.
type saved struct {
	seq uint64
	res Result
}

func lessSaved(a, b saved) bool { return a.seq < b.seq }

// sessItem is the sessions tree's item, ordered by id.
type sessItem struct {
	id uint64
	s  *session
}

func lessSessItem(a, b sessItem) bool { return a.id < b.id }

// expKey orders sessions by last activity, then id: the minimum is the
// first to expire and the one evicted when the table is full.
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

// Store is the replicated key-value state machine. Apply, SetApplied,
// Snapshot and Restore must be called from one goroutine at a time (the
// node's apply loop); the reads (Get, Range, Revision, AppliedIndex,
// Sessions) may be called concurrently with them from any goroutine.
type Store struct {
	cfg Config
	ttl int64 // cfg.SessionTTL in nanoseconds

	mu       sync.RWMutex
	applied  uint64
	rev      uint64
	clock    int64
	kv       *btree.BTreeG[item]
	sessions *btree.BTreeG[sessItem]
	expiry   *btree.BTreeG[expKey]
	gen      uint64

	resFree *btree.FreeListG[saved]
	scratch Command // reused by Apply to decode without allocating ops
}

// New returns an empty store with cfg's limits (zero fields: defaults).
func New(cfg Config) *Store {
	cfg = cfg.withDefaults()
	s := &Store{
		cfg:     cfg,
		ttl:     int64(cfg.SessionTTL),
		resFree: btree.NewFreeListG[saved](btree.DefaultFreeListSize),
	}
	s.kv, s.sessions, s.expiry = newTrees()
	return s
}

func newTrees() (*btree.BTreeG[item], *btree.BTreeG[sessItem], *btree.BTreeG[expKey]) {
	return btree.NewG(treeDegree, lessItem), btree.NewG(treeDegree, lessSessItem), btree.NewG(treeDegree, lessExpKey)
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
	msgBadType        = "unknown op type"
	msgBadCompare     = "unknown compare kind"
	msgKeyTooLarge    = "key larger than the store's maximum key size"
	msgValueTooLarge  = "value larger than the store's maximum value size"
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
	if index <= s.applied {
		return Applied{Err: fmt.Errorf("%w: apply %d at applied index %d", ErrIndex, index, s.applied)}
	}
	s.applied = index
	if len(data) == 0 {
		return Applied{}
	}
	cmd := &s.scratch
	err := decodeCommand(cmd, data, cmd.Ops)
	defer clear(cmd.Ops) // do not keep the caller's buffer reachable
	if err != nil {
		return Applied{Err: fmt.Errorf("entry %d: %w", index, err)}
	}
	if cmd.Time > s.clock {
		s.clock = cmd.Time
	}
	s.expire()
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
	}
	return a
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

// expire forgets the sessions idle for longer than the TTL at the clock.
func (s *Store) expire() {
	for {
		e, ok := s.expiry.Min()
		if !ok || s.deadline(e.last) >= s.clock {
			return
		}
		s.expiry.DeleteMin()
		s.sessions.Delete(sessItem{id: e.id})
	}
}

func (s *Store) openSession(id uint64) {
	for s.sessions.Len() >= s.cfg.MaxSessions {
		e, ok := s.expiry.DeleteMin()
		if !ok {
			break
		}
		s.sessions.Delete(sessItem{id: e.id})
	}
	s.sessions.ReplaceOrInsert(sessItem{id: id, s: &session{id: id, lastActive: s.clock, gen: s.gen}})
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
		if cp.results != nil {
			cp.results = sess.results.Clone()
		}
		sess = &cp
		s.sessions.ReplaceOrInsert(sessItem{id: id, s: sess})
	}
	if sess.lastActive != s.clock {
		s.expiry.Delete(expKey{last: sess.lastActive, id: id})
		sess.lastActive = s.clock
		s.expiry.ReplaceOrInsert(expKey{last: s.clock, id: id})
	}
	return sess
}

func (s *Store) keepAlive(id uint64) Result {
	if s.liveSession(id) == nil {
		return Result{Code: SessionExpired, Message: msgSessionExpired, Revision: s.rev}
	}
	return Result{Revision: s.rev}
}

func (s *Store) closeSession(id uint64) Result {
	it, ok := s.sessions.Delete(sessItem{id: id})
	if !ok {
		return Result{Code: SessionExpired, Message: msgSessionExpired, Revision: s.rev}
	}
	s.expiry.Delete(expKey{last: it.s.lastActive, id: id})
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
		if sess.results != nil {
			if sv, ok := sess.results.Get(saved{seq: op.Seq}); ok {
				res[i] = sv.res
				continue
			}
		}
		if op.Seq < sess.low {
			res[i] = Result{Code: StaleSequence, Message: msgStale, Revision: s.rev}
			continue
		}
		r := s.exec(op)
		res[i] = r
		s.save(sess, op.Seq, r)
	}
	return res
}

// dropBelow forgets the saved results below sess.low.
func (s *Store) dropBelow(sess *session) {
	if sess.results == nil {
		return
	}
	for {
		m, ok := sess.results.Min()
		if !ok || m.seq >= sess.low {
			return
		}
		sess.results.DeleteMin()
	}
}

func (s *Store) save(sess *session, seq uint64, r Result) {
	if sess.results == nil {
		sess.results = btree.NewWithFreeListG(resultsDegree, lessSaved, s.resFree)
	}
	sess.results.ReplaceOrInsert(saved{seq: seq, res: r})
	for sess.results.Len() > s.cfg.MaxSavedResults {
		m, _ := sess.results.DeleteMin()
		if m.seq >= sess.low {
			sess.low = m.seq + 1
		}
	}
}

// exec validates and applies one write.
func (s *Store) exec(op *WriteOp) Result {
	switch op.Type {
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
		return Result{Code: InvalidArgument, Message: msgEmptyKey, Revision: s.rev}
	}
	if len(op.Key) > s.cfg.MaxKeySize {
		return Result{Code: TooLarge, Message: msgKeyTooLarge, Revision: s.rev}
	}
	if len(op.Value) > s.cfg.MaxValueSize || len(op.CompareValue) > s.cfg.MaxValueSize {
		return Result{Code: TooLarge, Message: msgValueTooLarge, Revision: s.rev}
	}
	cur, found := s.kv.Get(item{key: op.Key})
	var prev KeyValue
	if found {
		prev = cur.kv()
	}
	switch op.Type {
	case OpPut:
		s.put(op.Key, op.Value, &cur, found)
		return Result{Revision: s.rev, Found: found, Prev: prev}
	case OpDelete:
		if found {
			s.kv.Delete(cur)
			s.rev++
		}
		return Result{Revision: s.rev, Succeeded: found, Found: found, Prev: prev}
	}
	var match bool
	switch op.Compare {
	case CompareValue:
		match = found && bytes.Equal(cur.value, op.CompareValue)
	case CompareModRevision:
		match = cur.mod == op.CompareRevision // an absent key's mod is 0
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
		}
	} else {
		s.put(op.Key, op.Value, &cur, found)
	}
	return Result{Revision: s.rev, Succeeded: true, Found: found, Prev: prev}
}

// put writes key=value at a new revision; cur is the key's current state
// when found.
func (s *Store) put(key, value []byte, cur *item, found bool) {
	s.rev++
	buf := make([]byte, len(key)+len(value))
	copy(buf, key)
	copy(buf[len(key):], value)
	it := item{key: buf[:len(key):len(key)], mod: s.rev, create: s.rev, version: 1}
	if len(value) > 0 {
		it.value = buf[len(key):]
	}
	if found {
		it.create = cur.create
		it.version = cur.version + 1
	}
	s.kv.ReplaceOrInsert(it)
}

// Get returns key's state and the revision it was read at. The returned
// slices are shared with the store: read-only.
func (s *Store) Get(key []byte) (kv KeyValue, found bool, rev uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.kv.Get(item{key: key})
	if !ok {
		return KeyValue{}, false, s.rev
	}
	return it.kv(), true, s.rev
}

// Range returns the keys with prefix that sort strictly after after, in
// ascending byte order, at most min(limit, MaxRangeLimit) of them
// (limit <= 0: MaxRangeLimit); more says whether another key follows the
// last returned. rev is the revision the page was read at. The returned
// slices are shared with the store: read-only (the kvs slice itself is
// the caller's).
func (s *Store) Range(prefix, after []byte, limit int) (kvs []KeyValue, more bool, rev uint64) {
	if limit <= 0 || limit > s.cfg.MaxRangeLimit {
		limit = s.cfg.MaxRangeLimit
	}
	start := prefix
	if bytes.Compare(after, prefix) > 0 {
		start = after
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.kv.AscendGreaterOrEqual(item{key: start}, func(it item) bool {
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
	return kvs, more, s.rev
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
