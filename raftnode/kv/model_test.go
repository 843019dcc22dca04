package kv

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"sort"
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
	return &model{cfg: cfg.withDefaults(), kv: map[string]mkv{}, sess: map[uint64]*msess{}}
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
	switch {
	case op.Type < OpPut || op.Type > OpCAS:
		return bad(InvalidArgument, msgBadType)
	case op.Type == OpCAS && (op.Compare < CompareValue || op.Compare > CompareAbsent):
		return bad(InvalidArgument, msgBadCompare)
	case len(op.Key) == 0:
		return bad(InvalidArgument, msgEmptyKey)
	case len(op.Key) > m.cfg.MaxKeySize:
		return bad(TooLarge, msgKeyTooLarge)
	case len(op.Value) > m.cfg.MaxValueSize || len(op.CompareValue) > m.cfg.MaxValueSize:
		return bad(TooLarge, msgValueTooLarge)
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
	a := Applied{ID: c.ID, Kind: c.Kind, Session: c.Session}
	expired := Result{Code: SessionExpired, Message: msgSessionExpired, Revision: m.rev}
	s := m.sess[c.Session]
	if s != nil && c.Kind != CmdOpenSession {
		s.last = m.clock
	}
	switch c.Kind {
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
			s.res[op.Seq] = r
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
}

func newGen(rng *rand.Rand) *gen {
	return &gen{
		rng:     rng,
		now:     int64(time.Hour),
		nextSeq: map[uint64]uint64{},
		acked:   map[uint64]uint64{},
		keys:    []string{"a", "ab", "abc", "b", "ba", "k1", "k2", "k\x00", "k\xff", "z"},
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
	case r < 9:
		op.Type = OpCAS
		op.Compare = CompareKind(1 + g.rng.Intn(3))
		op.Value = g.value()
		op.CompareValue = g.value()
		op.CompareRevision = uint64(g.rng.Intn(8))
		op.DeleteOnSuccess = g.rng.Intn(3) == 0
	default:
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
	default:
		c.Kind = CmdBatch
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
// comparing every Applied, Get and Range, with snapshot/restore and a twin
// store along the way.
func TestModel(t *testing.T) {
	seed := testSeed(t)
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
			}
			s, twin, m, g := New(cfg), New(cfg), newModel(cfg), newGen(rng)
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
				k := g.key()
				kv, found, rev := s.Get(k)
				wkv, wfound := m.prev(string(k))
				if found != wfound || rev != m.rev || !reflect.DeepEqual(kv, wkv) {
					t.Fatalf("step %d: Get(%q) = %v %v %d, model %v %v %d", step, k, kv, found, rev, wkv, wfound, m.rev)
				}
				if rng.Intn(4) == 0 {
					checkRange(t, step, s, m, rng)
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
