package kv

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// model is a deliberately simple, obviously-correct version of Store:
// maps and full scans.
type model struct {
	cfg     Config
	kv      map[string]mkv
	rev     uint64
	clock   int64
	applied uint64
	sess    map[uint64]*msess
	keys    map[uint64][]byte
	revoked map[[16]byte]int64 // id -> expiry (0: never)
	epoch   uint64             // revocations applied
	// prefixDeleted and prefixRefused count the prefix deletes that
	// deleted keys and those over MaxDeleteBytes, so the test knows it
	// exercised both.
	prefixDeleted, prefixRefused int
}

type mkv struct {
	value                []byte
	create, mod, version uint64
}

type msess struct {
	last int64
	low  uint64
	res  map[uint64]Result
}

func newModel(cfg Config) *model {
	return &model{cfg: cfg.withDefaults(), kv: map[string]mkv{}, sess: map[uint64]*msess{},
		keys: map[uint64][]byte{}, revoked: map[[16]byte]int64{}}
}

func (m *model) prev(k string) (KeyValue, bool) {
	v, ok := m.kv[k]
	if !ok {
		return KeyValue{}, false
	}
	return KeyValue{Key: []byte(k), Value: v.value, CreateRevision: v.create, ModRevision: v.mod, Version: v.version}, true
}

func (m *model) put(k string, v []byte) {
	m.rev++
	old, ok := m.kv[k]
	nv := mkv{value: bytes.Clone(v), create: m.rev, mod: m.rev, version: 1}
	if len(v) == 0 {
		nv.value = nil
	}
	if ok {
		nv.create, nv.version = old.create, old.version+1
	}
	m.kv[k] = nv
}

func (m *model) exec(op WriteOp) Result {
	bad := func(c Code, msg string) Result { return Result{Code: c, Message: msg, Revision: m.rev} }
	if op.Type == OpTxn {
		return m.txn(op.Txn, true)
	}
	switch {
	case op.Type < OpPut || op.Type > OpCAS:
		return bad(InvalidArgument, msgBadType)
	case op.Type == OpCAS && (op.Compare < CompareValue || op.Compare > CompareAbsent):
		return bad(InvalidArgument, msgBadCompare)
	case len(op.Key) == 0 && op.Prefix:
		return bad(InvalidArgument, msgEmptyPrefix)
	case len(op.Key) == 0:
		return bad(InvalidArgument, msgEmptyKey)
	case len(op.Key) > m.cfg.MaxKeySize:
		return bad(TooLarge, msgKeyTooLarge)
	case len(op.Value) > m.cfg.MaxValueSize || len(op.CompareValue) > m.cfg.MaxValueSize:
		return bad(TooLarge, msgValueTooLarge)
	}
	if op.Type == OpDelete && op.Prefix {
		if m.prefixCost(string(op.Key)) > int64(m.cfg.MaxDeleteBytes) {
			m.prefixRefused++
			return bad(TooLarge, msgDeleteTooLarge)
		}
		n := m.deletePrefix(string(op.Key))
		if n > 0 {
			m.prefixDeleted++
		}
		if n > 0 {
			m.rev++
		}
		return Result{Revision: m.rev, Succeeded: n > 0, Deleted: n}
	}
	k := string(op.Key)
	prev, found := m.prev(k)
	switch op.Type {
	case OpPut:
		m.put(k, op.Value)
		return Result{Revision: m.rev, Found: found, Prev: prev}
	case OpDelete:
		if found {
			delete(m.kv, k)
			m.rev++
		}
		return Result{Revision: m.rev, Succeeded: found, Found: found, Prev: prev}
	}
	match := false
	switch op.Compare {
	case CompareValue:
		match = found && bytes.Equal(prev.Value, op.CompareValue)
	case CompareModRevision:
		match = prev.ModRevision == op.CompareRevision
	case CompareAbsent:
		match = !found
	}
	if !match {
		return Result{Revision: m.rev, Found: found, Prev: prev}
	}
	if op.DeleteOnSuccess {
		if found {
			delete(m.kv, k)
			m.rev++
		}
	} else {
		m.put(k, op.Value)
	}
	return Result{Revision: m.rev, Succeeded: true, Found: found, Prev: prev}
}

// prefixCost is what deleting the keys that start with p costs: their
// keys and values, and eventOverhead each.
func (m *model) prefixCost(p string) int64 {
	var n int64
	for k, v := range m.kv {
		if strings.HasPrefix(k, p) {
			n += int64(eventOverhead + len(k) + len(v.value))
		}
	}
	return n
}

// deletePrefix deletes the keys that start with p and returns how many.
func (m *model) deletePrefix(p string) uint64 {
	var n uint64
	for k := range m.kv {
		if strings.HasPrefix(k, p) {
			delete(m.kv, k)
			n++
		}
	}
	return n
}

// lru returns the least recently active session (ties: lowest id).
func (m *model) lru() uint64 {
	var best uint64
	for id, s := range m.sess {
		if best == 0 || s.last < m.sess[best].last || (s.last == m.sess[best].last && id < best) {
			best = id
		}
	}
	return best
}

func (m *model) apply(index uint64, data []byte) Applied {
	if index <= m.applied {
		return Applied{Err: ErrIndex}
	}
	m.applied = index
	if len(data) == 0 {
		return Applied{}
	}
	c, err := DecodeCommand(data)
	if err != nil {
		return Applied{Err: err}
	}
	if c.Time > m.clock {
		m.clock = c.Time
	}
	for id, s := range m.sess {
		if s.last+int64(m.cfg.SessionTTL) < m.clock {
			delete(m.sess, id)
		}
	}
	for id, exp := range m.revoked {
		if exp != 0 && exp < m.clock {
			delete(m.revoked, id)
		}
	}
	a := Applied{ID: c.ID, Kind: c.Kind, Session: c.Session}
	expired := Result{Code: SessionExpired, Message: msgSessionExpired, Revision: m.rev}
	s := m.sess[c.Session]
	if s != nil && (c.Kind == CmdKeepAlive || c.Kind == CmdCloseSession || c.Kind == CmdBatch) {
		s.last = m.clock
	}
	switch c.Kind {
	case CmdTokenKey:
		a.Results = []Result{m.addTokenKey(c.TokenKey)}
	case CmdRevoke:
		a.Results = []Result{m.revoke(c.Revoke)}
	case CmdOpenSession:
		for len(m.sess) >= m.cfg.MaxSessions {
			delete(m.sess, m.lru())
		}
		m.sess[index] = &msess{last: m.clock, res: map[uint64]Result{}}
		a.Session = index
	case CmdKeepAlive, CmdCloseSession:
		r := Result{Revision: m.rev}
		if s == nil {
			r = expired
		} else if c.Kind == CmdCloseSession {
			delete(m.sess, c.Session)
		}
		a.Results = []Result{r}
	case CmdBatch:
		a.Results = make([]Result, len(c.Ops))
		if s == nil {
			for i := range a.Results {
				a.Results[i] = expired
			}
			return a
		}
		if c.AckedBelow > s.low {
			s.low = c.AckedBelow
			for seq := range s.res {
				if seq < s.low {
					delete(s.res, seq)
				}
			}
		}
		for i, op := range c.Ops {
			if op.Seq == 0 {
				a.Results[i] = Result{Code: InvalidArgument, Message: msgSeqZero, Revision: m.rev}
				continue
			}
			if r, ok := s.res[op.Seq]; ok {
				a.Results[i] = r
				continue
			}
			if op.Seq < s.low {
				a.Results[i] = Result{Code: StaleSequence, Message: msgStale, Revision: m.rev}
				continue
			}
			r := m.exec(op)
			a.Results[i] = r
			saved := r
			saved.Txn = nil
			s.res[op.Seq] = saved
			if len(s.res) > m.cfg.MaxSavedResults {
				lowest := op.Seq
				for seq := range s.res {
					lowest = min(lowest, seq)
				}
				delete(s.res, lowest)
				s.low = max(s.low, lowest+1)
			}
		}
	}
	return a
}

func (m *model) addTokenKey(k TokenKey) Result {
	r := Result{Revision: m.rev}
	switch _, present := m.keys[k.ID]; {
	case k.ID == 0:
		r.Code, r.Message = InvalidArgument, msgTokenKeyID
	case len(k.Secret) < 32 || len(k.Secret) > 64:
		r.Code, r.Message = InvalidArgument, msgTokenKeySize
	case present:
	case len(m.keys) >= MaxTokenKeys:
		r.Code, r.Message = TooLarge, msgTokenKeysFull
	default:
		m.keys[k.ID] = bytes.Clone(k.Secret)
		r.Succeeded = true
	}
	return r
}

func (m *model) revoke(rv Revocation) Result {
	if rv.Expires < 0 {
		return Result{Code: InvalidArgument, Message: msgRevokeExpires, Revision: m.rev}
	}
	old, found := m.revoked[rv.ID]
	exp := rv.Expires
	if found {
		if old == 0 || exp == 0 {
			exp = 0
		} else {
			exp = max(old, exp)
		}
	}
	r := Result{Revision: m.rev}
	switch {
	case found && exp == old:
	case !found && exp != 0 && exp < m.clock: // expired already
	case !found && len(m.revoked) >= MaxRevocations:
		return Result{Code: TooLarge, Message: msgRevocationFull, Revision: m.rev}
	default:
		m.revoked[rv.ID] = exp
		r.Succeeded = true
	}
	m.epoch++
	return r
}

// currentKey is CurrentTokenKey on the model.
func (m *model) currentKey() (uint64, []byte, bool) {
	var best uint64
	for id := range m.keys {
		best = max(best, id)
	}
	return best, m.keys[best], best != 0
}

// rangeModel is Range on the model.
func (m *model) rangePage(prefix, after []byte, limit int) ([]KeyValue, bool) {
	if limit <= 0 || limit > m.cfg.MaxRangeLimit {
		limit = m.cfg.MaxRangeLimit
	}
	var keys []string
	for k := range m.kv {
		if bytes.HasPrefix([]byte(k), prefix) && k > string(after) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var kvs []KeyValue
	for _, k := range keys {
		if len(kvs) == limit {
			return kvs, true
		}
		kv, _ := m.prev(k)
		kvs = append(kvs, kv)
	}
	return kvs, false
}

// gen generates random commands against a few keys and sessions.
type gen struct {
	rng      *rand.Rand
	now      int64
	sessions []uint64          // ids opened (some may have expired)
	nextSeq  map[uint64]uint64 // per session: next new seq
	acked    map[uint64]uint64
	keys     []string
	tokenIDs [][16]byte
}

func newGen(rng *rand.Rand) *gen {
	return &gen{
		rng:      rng,
		now:      int64(time.Hour),
		nextSeq:  map[uint64]uint64{},
		acked:    map[uint64]uint64{},
		keys:     []string{"a", "ab", "abc", "b", "ba", "k1", "k2", "k\x00", "k\xff", "z"},
		tokenIDs: [][16]byte{{}, tokenID(1, 0), tokenID(1, 1), tokenID(0xff, 0xff)},
	}
}

func (g *gen) key() []byte {
	switch g.rng.Intn(20) {
	case 0:
		return nil
	case 1:
		return randBytes(g.rng, 1+g.rng.Intn(12)) // may be over MaxKeySize
	}
	return []byte(g.keys[g.rng.Intn(len(g.keys))])
}

func (g *gen) value() []byte {
	if g.rng.Intn(30) == 0 {
		return randBytes(g.rng, 40) // over MaxValueSize
	}
	return randBytes(g.rng, g.rng.Intn(4))
}

func (g *gen) session() uint64 {
	if len(g.sessions) == 0 || g.rng.Intn(30) == 0 {
		return uint64(g.rng.Intn(5)) // mostly unknown
	}
	return g.sessions[g.rng.Intn(len(g.sessions))]
}

func (g *gen) op(sess uint64) WriteOp {
	var op WriteOp
	switch r := g.rng.Intn(20); {
	case r < 14:
		op.Seq = g.nextSeq[sess] + 1
		g.nextSeq[sess]++
	case r < 18: // a retry or a stale seq
		op.Seq = uint64(g.rng.Int63n(int64(g.nextSeq[sess] + 1)))
	default:
		op.Seq = uint64(g.rng.Intn(3))
	}
	op.Key = g.key()
	switch r := g.rng.Intn(10); {
	case r < 4:
		op.Type = OpPut
		op.Value = g.value()
	case r < 6:
		op.Type = OpDelete
		op.Prefix = g.rng.Intn(2) == 0
	case r < 9:
		op.Type = OpCAS
		op.Compare = CompareKind(1 + g.rng.Intn(3))
		op.Value = g.value()
		op.CompareValue = g.value()
		op.CompareRevision = uint64(g.rng.Intn(8))
		op.DeleteOnSuccess = g.rng.Intn(3) == 0
	default:
		if g.rng.Intn(2) == 0 {
			op.Type = OpTxn
			op.Txn = g.txn(true)
			break
		}
		op.Type = OpType(g.rng.Intn(6)) // some invalid
		op.Compare = CompareKind(g.rng.Intn(5))
	}
	return op
}

// next returns the next entry's data; it may be empty (no-op) or garbage.
func (g *gen) next() Command {
	switch r := g.rng.Intn(10); {
	case r < 2: // time moves, sometimes backwards
		g.now += int64(time.Duration(g.rng.Intn(8000)-1000) * time.Millisecond)
	}
	c := Command{ID: g.rng.Uint64(), Time: g.now}
	switch r := g.rng.Intn(20); {
	case r < 2:
		c.Kind = CmdOpenSession
	case r < 3:
		c.Kind = CmdKeepAlive
		c.Session = g.session()
	case r < 4:
		c.Kind = CmdCloseSession
		c.Session = g.session()
	case r < 5:
		c.Kind = CmdTokenKey
		c.TokenKey.ID = uint64(g.rng.Intn(6)) // 0: invalid
		c.TokenKey.Secret = make([]byte, []int{0, 31, 32, 33, 48, 64, 65}[g.rng.Intn(7)])
		g.rng.Read(c.TokenKey.Secret)
	case r < 6:
		c.Kind = CmdRevoke
		c.Revoke.ID = g.tokenIDs[g.rng.Intn(len(g.tokenIDs))]
		switch r := g.rng.Intn(10); {
		case r < 3: // never
		case r < 4:
			c.Revoke.Expires = -1 - g.rng.Int63n(10)
		default: // around now, some expired already; ±1ns of a clock value
			c.Revoke.Expires = g.now + int64(time.Duration(g.rng.Intn(20000)-3000)*time.Millisecond) + int64(g.rng.Intn(3)-1)
		}
	default:
		c.Kind = CmdBatch
	}
	switch {
	case c.Kind == CmdTokenKey || c.Kind == CmdRevoke:
		if g.rng.Intn(4) == 0 {
			c.Session = g.session() // ignored: must not refresh it
		}
	case c.Kind == CmdBatch:
		c.Session = g.session()
		if g.rng.Intn(4) == 0 {
			g.acked[c.Session] += uint64(g.rng.Intn(4))
			c.AckedBelow = g.acked[c.Session]
		}
		for n := g.rng.Intn(4); n > 0; n-- {
			c.Ops = append(c.Ops, g.op(c.Session))
		}
	}
	return c
}

func checkApplied(t *testing.T, step int, got, want Applied) {
	t.Helper()
	if (got.Err == nil) != (want.Err == nil) {
		t.Fatalf("step %d: Err %v, model %v", step, got.Err, want.Err)
	}
	got.Err, want.Err = nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("step %d:\n got   %+v\n model %+v", step, got, want)
	}
}

// checkAuth compares the store's token keys and revocations with the
// model's, and the move of its revocation epoch (from epoch) with the
// model's (from mepoch).
func checkAuth(t *testing.T, step int, s *Store, m *model, g *gen, epoch, mepoch uint64) {
	t.Helper()
	id, key, ok := s.CurrentTokenKey()
	if wid, wkey, wok := m.currentKey(); id != wid || !bytes.Equal(key, wkey) || ok != wok {
		t.Fatalf("step %d: CurrentTokenKey = %d %x %v, model %d %x %v", step, id, key, ok, wid, wkey, wok)
	}
	for id := range uint64(7) {
		key, ok := s.TokenKey(id)
		if wkey, wok := m.keys[id]; !bytes.Equal(key, wkey) || ok != wok {
			t.Fatalf("step %d: TokenKey(%d) = %x %v, model %x %v", step, id, key, ok, wkey, wok)
		}
	}
	for _, id := range g.tokenIDs {
		if _, want := m.revoked[id]; s.Revoked(id) != want {
			t.Fatalf("step %d: Revoked(%x) = %v, model %v", step, id, !want, want)
		}
	}
	if got, want := s.RevocationEpoch()-epoch, m.epoch-mepoch; got != want {
		t.Fatalf("step %d: revocation epoch moved by %d, model %d", step, got, want)
	}
}

func checkRange(t *testing.T, step int, s *Store, m *model, rng *rand.Rand) {
	t.Helper()
	prefixes := []string{"", "a", "k", "ab", "q"}
	prefix := []byte(prefixes[rng.Intn(len(prefixes))])
	limit := rng.Intn(5) - 1
	var after []byte
	if rng.Intn(2) == 0 {
		after = []byte(newGen(rng).keys[rng.Intn(10)])
	}
	// Walk all pages from after.
	for page := 0; ; page++ {
		kvs, more, rev := s.Range(prefix, after, limit)
		wkvs, wmore := m.rangePage(prefix, after, limit)
		if rev != m.rev || more != wmore || !reflect.DeepEqual(kvs, wkvs) {
			t.Fatalf("step %d: Range(%q, %q, %d) page %d:\n got   %v %v rev %d\n model %v %v rev %d",
				step, prefix, after, limit, page, kvs, more, rev, wkvs, wmore, m.rev)
		}
		if !more {
			return
		}
		after = kvs[len(kvs)-1].Key
	}
}

// TestModel runs random commands against the store and the model,
// comparing every Applied, Get and Range, the token keys, revocations and
// revocation epoch, with snapshot/restore and a twin store along the way.
func TestModel(t *testing.T) {
	seed := testSeed(t)
	var prefixDeleted, prefixRefused int
	defer func() {
		// About a dozen of each per seed; refusals are rarer (a few
		// runs can refuse), so only deletions are required. The limit
		// has its own test (TestDeletePrefixOverTheLimitDeletesNothing).
		t.Logf("prefix deletes: %d deleted keys, %d over the limit", prefixDeleted, prefixRefused)
		if !t.Failed() && prefixDeleted == 0 {
			t.Errorf("no prefix delete deleted a key (%d were over the limit): the test checks too little", prefixRefused)
		}
	}()
	for run := range 8 {
		t.Run(fmt.Sprint(run), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed + int64(run)))
			cfg := Config{
				SessionTTL:      time.Duration(1+rng.Intn(20)) * time.Second,
				MaxSessions:     1 + rng.Intn(4),
				MaxSavedResults: 1 + rng.Intn(6),
				MaxKeySize:      8,
				MaxValueSize:    32,
				MaxRangeLimit:   1 + rng.Intn(4),
				MaxDeleteBytes:  []int{64, 70, 100, 1000}[run%4], // some prefix deletes over it
			}
			s, twin, m, g := New(cfg), New(cfg), newModel(cfg), newGen(rng)
			defer func() { prefixDeleted, prefixRefused = prefixDeleted+m.prefixDeleted, prefixRefused+m.prefixRefused }()
			var index uint64
			for step := range 3000 {
				index += 1 + uint64(rng.Intn(2)) // gaps: skipped entries
				if rng.Intn(10) == 0 {
					s.SetApplied(index)
					twin.SetApplied(index)
					m.applied = index
					index++
				}
				var data []byte
				switch rng.Intn(40) {
				case 0: // no-op
				case 1: // garbage
					data = randBytes(rng, rng.Intn(20))
				default:
					c := g.next()
					data = enc(c)
				}
				epoch, mepoch := s.RevocationEpoch(), m.epoch
				want := m.apply(index, data)
				got := s.Apply(index, data)
				checkApplied(t, step, got, want)
				if want.Kind == CmdOpenSession {
					g.sessions = append(g.sessions, want.Session)
				}
				checkApplied(t, step, twin.Apply(index, data), want)
				if s.Revision() != m.rev || s.AppliedIndex() != m.applied || s.Sessions() != len(m.sess) || s.Len() != len(m.kv) {
					t.Fatalf("step %d: rev %d applied %d sessions %d keys %d; model %d %d %d %d",
						step, s.Revision(), s.AppliedIndex(), s.Sessions(), s.Len(), m.rev, m.applied, len(m.sess), len(m.kv))
				}
				checkInvariants(t, s)
				checkAuth(t, step, s, m, g, epoch, mepoch)
				k := g.key()
				kv, found, rev := s.Get(k)
				wkv, wfound := m.prev(string(k))
				if found != wfound || rev != m.rev || !reflect.DeepEqual(kv, wkv) {
					t.Fatalf("step %d: Get(%q) = %v %v %d, model %v %v %d", step, k, kv, found, rev, wkv, wfound, m.rev)
				}
				if rng.Intn(4) == 0 {
					checkRange(t, step, s, m, rng)
				}
				if rng.Intn(4) == 0 {
					// A transaction served as a read reads what the
					// model does and changes nothing.
					tx := g.txn(rng.Intn(10) == 0)
					got, want := s.ReadTxn(tx), m.txn(tx, false)
					if !reflect.DeepEqual(got, want) || s.Revision() != m.rev {
						t.Fatalf("step %d: ReadTxn(%+v):\n got   %+v\n model %+v", step, tx, got, want)
					}
				}
				if rng.Intn(100) == 0 {
					// Restore into a fresh store and carry on with it.
					b := snapBytes(t, s)
					s = restored(t, cfg, b)
					if b2 := snapBytes(t, s); !bytes.Equal(b, b2) {
						t.Fatalf("step %d: re-snapshot after restore differs", step)
					}
				}
				if rng.Intn(200) == 0 && !bytes.Equal(snapBytes(t, s), snapBytes(t, twin)) {
					t.Fatalf("step %d: twin stores' snapshots differ", step)
				}
			}
			if !bytes.Equal(snapBytes(t, s), snapBytes(t, twin)) {
				t.Fatalf("twin stores' snapshots differ at the end")
			}
		})
	}
}

// txn is the model's transaction: the same checks in the same order as
// the store (the messages are compared), then the compares and the branch
// by brute force.
func (m *model) txn(t *Txn, write bool) Result {
	bad := func(c Code, msg string) Result { return Result{Code: c, Message: msg, Revision: m.rev} }
	for _, c := range t.Compares {
		switch {
		case c.Target < TargetValue || c.Target > TargetAbsent:
			return bad(InvalidArgument, msgBadTarget)
		case c.Operator > Greater:
			return bad(InvalidArgument, msgBadOperator)
		case c.Target == TargetAbsent && c.Operator != Equal && c.Operator != NotEqual:
			return bad(InvalidArgument, msgAbsentOrder)
		case len(c.Key) == 0:
			return bad(InvalidArgument, msgEmptyKey)
		case len(c.Key) > m.cfg.MaxKeySize:
			return bad(TooLarge, msgKeyTooLarge)
		case len(c.Value) > m.cfg.MaxValueSize:
			return bad(TooLarge, msgValueTooLarge)
		}
	}
	for _, ops := range [][]TxnOp{t.Then, t.Else} {
		written := map[string]bool{}
		var deleted []string // the prefixes deleted so far
		for _, op := range ops {
			switch {
			case op.Type < TxnPut || op.Type > TxnRange:
				return bad(InvalidArgument, msgBadTxnOp)
			case op.Prefix && op.Type != TxnDelete:
				return bad(InvalidArgument, msgTxnPrefixOp)
			case len(op.Key) == 0 && op.Prefix:
				return bad(InvalidArgument, msgEmptyPrefix)
			case len(op.Key) == 0 && op.Type != TxnRange:
				return bad(InvalidArgument, msgEmptyKey)
			case len(op.Key) > m.cfg.MaxKeySize || len(op.After) > m.cfg.MaxKeySize:
				return bad(TooLarge, msgKeyTooLarge)
			case len(op.Value) > m.cfg.MaxValueSize:
				return bad(TooLarge, msgValueTooLarge)
			case op.Type == TxnGet || op.Type == TxnRange:
				continue
			case !write:
				return bad(InvalidArgument, msgTxnReadWrite)
			}
			k := string(op.Key)
			for _, p := range deleted {
				if strings.HasPrefix(k, p) || (op.Prefix && strings.HasPrefix(p, k)) {
					return bad(InvalidArgument, msgTxnPrefixDup)
				}
			}
			if op.Prefix {
				for w := range written {
					if strings.HasPrefix(w, k) {
						return bad(InvalidArgument, msgTxnPrefixDup)
					}
				}
				deleted = append(deleted, k)
				continue
			}
			if written[k] {
				return bad(InvalidArgument, msgTxnDupKey)
			}
			written[k] = true
		}
	}
	ok := true
	for _, c := range t.Compares {
		kv, found := m.prev(string(c.Key))
		var have, want uint64 // as numbers; values compare byte-wise below
		switch c.Target {
		case TargetVersion:
			have, want = kv.Version, c.Number
		case TargetCreateRevision:
			have, want = kv.CreateRevision, c.Number
		case TargetModRevision:
			have, want = kv.ModRevision, c.Number
		case TargetAbsent:
			if found {
				have = 1
			}
		}
		cmp := 0
		switch {
		case c.Target == TargetValue:
			cmp = bytes.Compare(kv.Value, c.Value)
		case have < want:
			cmp = -1
		case have > want:
			cmp = 1
		}
		held := map[TxnOperator]bool{Equal: cmp == 0, NotEqual: cmp != 0, Less: cmp < 0, Greater: cmp > 0}[c.Operator]
		if c.Target == TargetValue && !found {
			held = false
		}
		if !held {
			ok = false
		}
	}
	ops := t.Else
	if ok {
		ops = t.Then
	}
	var cost int64 // of the branch's prefix deletes, together
	for _, op := range ops {
		if op.Type == TxnDelete && op.Prefix {
			if cost += m.prefixCost(string(op.Key)); cost > int64(m.cfg.MaxDeleteBytes) {
				if write {
					m.prefixRefused++
				}
				return bad(TooLarge, msgDeleteTooLarge)
			}
		}
	}
	rev := m.rev + 1
	wrote := false
	res := make([]TxnOpResult, len(ops))
	for i, op := range ops {
		k := string(op.Key)
		switch op.Type {
		case TxnPut:
			res[i].KV, res[i].Found = m.prev(k)
			nv := mkv{value: bytes.Clone(op.Value), create: rev, mod: rev, version: 1}
			if len(op.Value) == 0 {
				nv.value = nil
			}
			if old, had := m.kv[k]; had {
				nv.create, nv.version = old.create, old.version+1
			}
			m.kv[k] = nv
			wrote = true
		case TxnDelete:
			if op.Prefix {
				res[i].Deleted = m.deletePrefix(k)
				wrote = wrote || res[i].Deleted > 0
				if res[i].Deleted > 0 {
					m.prefixDeleted++
				}
				continue
			}
			res[i].KV, res[i].Found = m.prev(k)
			if res[i].Found {
				delete(m.kv, k)
				wrote = true
			}
		case TxnGet:
			res[i].KV, res[i].Found = m.prev(k)
		case TxnRange:
			res[i].KVs, res[i].More = m.rangePage(op.Key, op.After, int(op.Limit))
		}
	}
	if wrote {
		m.rev = rev
	}
	return Result{Revision: m.rev, Succeeded: ok, Txn: &TxnResult{Results: res}}
}

// txn generates a transaction, mostly valid; with writes, its branches
// may write.
func (g *gen) txn(writes bool) *Txn {
	t := &Txn{}
	for n := g.rng.Intn(4); n > 0; n-- {
		c := TxnCompare{Key: g.key(), Target: TxnTarget(1 + g.rng.Intn(5)), Operator: TxnOperator(g.rng.Intn(4))}
		switch c.Target {
		case TargetValue:
			c.Value = g.value()
		case TargetAbsent:
			c.Operator = TxnOperator(g.rng.Intn(2))
		default:
			c.Number = uint64(g.rng.Intn(12))
		}
		if g.rng.Intn(40) == 0 { // an unknown target or operator
			c.Target, c.Operator = TxnTarget(g.rng.Intn(7)), TxnOperator(g.rng.Intn(6))
		}
		t.Compares = append(t.Compares, c)
	}
	branch := func() []TxnOp {
		var ops []TxnOp
		for n := g.rng.Intn(4); n > 0; n-- {
			op := TxnOp{Type: TxnOpType(1 + g.rng.Intn(4)), Key: g.key()}
			if !writes {
				op.Type = TxnOpType(3 + g.rng.Intn(2))
			}
			switch op.Type {
			case TxnPut:
				op.Value = g.value()
			case TxnDelete:
				op.Prefix = g.rng.Intn(3) == 0
			case TxnRange:
				op.Key = []byte([]string{"", "a", "k", "ab"}[g.rng.Intn(4)])
				if g.rng.Intn(2) == 0 {
					op.After = g.key()
				}
				op.Limit = uint32(g.rng.Intn(5))
			}
			if g.rng.Intn(40) == 0 {
				op.Type = TxnOpType(g.rng.Intn(6))
			}
			ops = append(ops, op)
		}
		return ops
	}
	t.Then, t.Else = branch(), branch()
	return t
}
