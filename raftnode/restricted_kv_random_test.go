package raftnode_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/schema"
)

// grant is what the test expects a (restricted) KV to grant.
type grant struct {
	restricted bool
	prefix     string
	readOnly   bool
}

// String is how the node's messages name g.
func (g grant) String() string {
	s := "every key"
	if g.restricted {
		s = fmt.Sprintf("keys with prefix %q", g.prefix)
	}
	if g.readOnly {
		return s + ", read-only"
	}
	return s + ", read-write"
}

func (g grant) has(key string) bool { return !g.restricted || strings.HasPrefix(key, g.prefix) }

// rangeOver is the prefix a range over p reads through g, or false when
// g refuses it.
func (g grant) rangeOver(p string) (string, bool) {
	switch {
	case !g.restricted || strings.HasPrefix(p, g.prefix):
		return p, true
	case strings.HasPrefix(g.prefix, p):
		return g.prefix, true
	}
	return "", false
}

func (g grant) allows(o testOp) bool {
	switch o.kind {
	case "range":
		_, ok := g.rangeOver(o.key)
		return ok
	case "get":
		return g.has(o.key)
	}
	return !g.readOnly && g.has(o.key)
}

// restrictModel is the store as the test wrote it: one writer, so the
// model is exact.
type restrictModel map[string]string

// apply applies write o and returns the result it must have.
func (m restrictModel) apply(o testOp) testResult {
	old, found := m[o.key]
	want := testResult{found: found, prev: old}
	if found {
		want.prevKey = o.key
	}
	switch o.kind {
	case "put":
		m[o.key] = o.value
	case "delete":
		want.succeeded = found
		delete(m, o.key)
	case "cas":
		want.succeeded = (o.absent && !found) || (!o.absent && found && old == o.expected)
		if want.succeeded && o.del {
			delete(m, o.key)
		} else if want.succeeded {
			m[o.key] = o.value
		}
	}
	return want
}

// scan returns the keys with prefix after `after`, in order.
func (m restrictModel) scan(prefix, after string) []string {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// keysAround returns keys at and around each prefix: the prefix itself,
// keys just inside it, one byte before it and one byte past its keys.
func keysAround(prefixes []string) []string {
	seen := map[string]bool{}
	var keys []string
	add := func(k string) {
		if k != "" && !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, p := range prefixes {
		add(p)
		add(p + "\x00")
		add(p + "1")
		add(p + "\xff")
		if n := len(p); n > 0 && p[n-1] > 0 {
			add(p[:n-1] + string([]byte{p[n-1] - 1})) // one byte before
		}
		// One past every key with the prefix: the prefix incremented
		// (none for a prefix of 0xff bytes).
		for i := len(p) - 1; i >= 0; i-- {
			if p[i] != 0xff {
				add(p[:i] + string([]byte{p[i] + 1}))
				break
			}
		}
	}
	add("z")
	slices.Sort(keys)
	return keys
}

// Many restricted KVs, derived once or twice (with prefixes that contain
// each other, are disjoint, empty or all 0xff bytes, some read-only), on
// the leader and on followers, get every kind of operation, singly and in
// batches that mix operations inside and outside their grant, on keys at
// and across the prefixes' boundaries. An operation the grant covers
// always succeeds with the result an exact model predicts; one it does
// not is always refused with permissionDenied and changes nothing; no
// result carries a key outside the grant.
func TestRestrictedKVsNeverReachOutsideTheirGrant(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 13))
	c, lead := newRestrictCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := newWriter(t, ctx, c, lead)
	bases := map[uint64]*kvClient{}
	for id := range c.nodes {
		bases[id] = c.client(id)
		bases[id].session = w.session
	}
	prefixes := []string{"", "a", "ab", "ab/", "abc", "ab/x", "b", "\x00", "\xff", "\xff\xff", "a\xff", "ab/\xff\xff"}
	keys := keysAround(prefixes)
	model := restrictModel{}
	for i, k := range keys {
		if i%2 == 0 {
			w.putAll(ctx, k)
			model[k] = k
		}
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: %s", seed, fmt.Sprintf(format, args...))
	}
	transient := func(rs []testResult) bool {
		for _, r := range rs {
			if isCode(r.err, schema.ErrorCode_unavailable, schema.ErrorCode_outcomeUnknown, schema.ErrorCode_timeout, schema.ErrorCode_shuttingDown) {
				return true
			}
		}
		return false
	}
	// run sends ops (one through its own method unless batch), sending it
	// again with the same sequence numbers while the cluster is
	// unsettled: the state machine applies each write once.
	run := func(k *kvClient, ops []testOp, batch bool) []testResult {
		t.Helper()
		for attempt := 0; ; attempt++ {
			var rs []testResult
			var err error
			if batch {
				rs, err = k.batchOps(ctx, ops)
			} else {
				var r testResult
				r, err = k.single(ctx, ops[0])
				rs = []testResult{r}
			}
			if err != nil {
				fail("%v: the call failed: %v", ops, err)
			}
			if !transient(rs) || attempt == 50 {
				return rs
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// pickKey picks a key inside g more often than not, so that batches
	// are not all refused.
	pickKey := func(g grant, from []string) string {
		if rng.IntN(3) > 0 {
			var in []string
			for _, k := range from {
				if g.has(k) {
					in = append(in, k)
				}
			}
			if len(in) > 0 {
				return in[rng.IntN(len(in))]
			}
		}
		return from[rng.IntN(len(from))]
	}
	genOp := func(g grant) testOp {
		o := testOp{kind: []string{"put", "get", "delete", "cas", "range"}[rng.IntN(5)], value: fmt.Sprintf("v%d", rng.IntN(1000))}
		o.key = pickKey(g, keys)
		switch o.kind {
		case "get":
			o.serial = rng.IntN(4) == 0
		case "range":
			o.key = pickKey(g, append(slices.Clone(prefixes), keys...))
			if g.restricted && rng.IntN(3) == 0 {
				// A prefix the grant's starts with: the range is
				// narrowed to the grant.
				o.key = g.prefix[:rng.IntN(len(g.prefix)+1)]
			}
			o.serial = rng.IntN(4) == 0
			o.limit = []uint32{0, 1, 2, 3}[rng.IntN(4)]
			if rng.IntN(2) == 0 {
				o.after = keys[rng.IntN(len(keys))]
			}
		case "cas":
			o.del = rng.IntN(3) == 0
			switch rng.IntN(3) {
			case 0:
				o.absent = true
			case 1:
				o.expected = model[o.key] // may not exist: then the compare fails
			default:
				o.expected = "stale"
			}
		}
		if o.isWrite() {
			o.seq = w.nextSeq()
		}
		return o
	}
	// checkRead checks a read's result against the model.
	checkRead := func(g grant, o testOp, r testResult, what string) {
		t.Helper()
		switch o.kind {
		case "get":
			if !o.serial && (r.found != (model[o.key] != "") || r.value != model[o.key]) {
				fail("%s: %v = %q found %v, want %q", what, o, r.value, r.found, model[o.key])
			}
		case "range":
			eff, _ := g.rangeOver(o.key)
			for _, k := range r.keys {
				if !g.has(k) || !strings.HasPrefix(k, eff) || k <= o.after {
					fail("%s: %v returned %q (grant %v)", what, o, k, g)
				}
			}
			if o.serial {
				return // possibly stale on a follower
			}
			want := model.scan(eff, o.after)
			page := len(want)
			if o.limit > 0 {
				page = min(page, int(o.limit))
			}
			if !slices.Equal(r.keys, want[:page]) || r.more != (page < len(want)) {
				fail("%s: %v = %q more %v, want %q more %v", what, o, r.keys, r.more, want[:page], page < len(want))
			}
			for i, k := range r.keys {
				if r.values[i] != model[k] {
					fail("%s: %v: %q = %q, want %q", what, o, k, r.values[i], model[k])
				}
			}
		}
	}
	checkWrite := func(o testOp, r, want testResult, what string) {
		t.Helper()
		if r.found != want.found || r.prev != want.prev || r.prevKey != want.prevKey || (o.kind != "put" && r.succeeded != want.succeeded) {
			fail("%s: %v = found %v prev %q=%q succeeded %v, want found %v prev %q=%q succeeded %v",
				what, o, r.found, r.prevKey, r.prev, r.succeeded, want.found, want.prevKey, want.prev, want.succeeded)
		}
	}
	checkStore := func(when string) {
		t.Helper()
		got := map[string]string{}
		after := ""
		for range 100 {
			r := run(bases[c.leader()], []testOp{{kind: "range", after: after}}, false)[0]
			if r.err != nil {
				fail("%s: reading the store: %v", when, r.err)
			}
			for i, k := range r.keys {
				got[k] = r.values[i]
			}
			if !r.more {
				break
			}
			after = r.keys[len(r.keys)-1]
		}
		for k, v := range model {
			if got[k] != v {
				fail("%s: %q = %q, want %q", when, k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := model[k]; !ok {
				fail("%s: %q = %q was written though nothing granted wrote it", when, k, v)
			}
		}
	}

	ops, denied, narrowed, nested, viaFollower := 0, 0, 0, 0, 0
	for scope := range 60 {
		via := uint64(1 + rng.IntN(len(bases)))
		if c.nodes[via].Leader() != via {
			viaFollower++
		}
		k, g := bases[via], grant{}
		depth := 0
		for range rng.IntN(3) {
			p := prefixes[rng.IntN(len(prefixes))]
			if rng.IntN(4) == 0 {
				p = keys[rng.IntN(len(keys))]
			} else if g.restricted && rng.IntN(2) == 0 {
				p = pickKey(g, prefixes) // mostly within the grant: nesting
			}
			rp, ro := rng.IntN(5) > 0, rng.IntN(4) == 0
			nk, err := k.restrict(ctx, p, rp, ro)
			if rp && g.restricted && !strings.HasPrefix(p, g.prefix) {
				if err == nil || !strings.Contains(err.Error(), "permissionDenied: restrict to prefix") {
					fail("scope %d: restrict %v to %q: %v, want permissionDenied", scope, g, p, err)
				}
				continue
			}
			if err != nil {
				fail("scope %d: restrict %v to %q (%v, read-only %v): %v", scope, g, p, rp, ro, err)
			}
			k = nk
			if depth++; depth == 2 {
				nested++
			}
			if rp {
				g.restricted, g.prefix = true, p
			}
			g.readOnly = g.readOnly || ro
		}
		for step := range 12 {
			what := fmt.Sprintf("scope %d (%v via node %d, leader %d) step %d", scope, g, via, lead, step)
			if rng.IntN(12) == 0 {
				err := k.sessionMethod(ctx, "keepAlive")
				if g.readOnly {
					wantDenied(t, what+": keepAlive", err, "sessions are for writing")
				} else if err != nil && !transient([]testResult{{err: err}}) {
					fail("%s: keepAlive: %v", what, err)
				}
				continue
			}
			batch := rng.IntN(5) < 2
			n := 1
			if batch {
				n = 2 + rng.IntN(4)
			}
			req := make([]testOp, n)
			for i := range req {
				req[i] = genOp(g)
			}
			rs := run(k, req, batch)
			ops += n
			refusedWrite := -1
			for i, o := range req {
				if o.isWrite() && !g.allows(o) {
					refusedWrite = i
					break
				}
			}
			if refusedWrite >= 0 {
				denied += n
				for i, r := range rs {
					if !g.allows(req[i]) {
						wantDenied(t, fmt.Sprintf("%s: %v", what, req[i]), r.err, g.String())
					} else {
						wantDenied(t, fmt.Sprintf("%s: %v in a batch with a refused write", what, req[i]), r.err, "batch was refused")
					}
				}
				continue
			}
			// Writes apply in order, then the reads are served.
			for i, o := range req {
				if !o.isWrite() {
					continue
				}
				if rs[i].err != nil {
					fail("%s: %v inside the grant: %v", what, o, rs[i].err)
				}
				checkWrite(o, rs[i], model.apply(o), what)
			}
			for i, o := range req {
				if o.isWrite() {
					continue
				}
				if !g.allows(o) {
					denied++
					wantDenied(t, fmt.Sprintf("%s: %v", what, o), rs[i].err, "outside this KV's grant", g.String())
					continue
				}
				if rs[i].err != nil {
					fail("%s: %v inside the grant: %v", what, o, rs[i].err)
				}
				if eff, _ := g.rangeOver(o.key); o.kind == "range" && eff != o.key {
					narrowed++
				}
				checkRead(g, o, rs[i], what)
			}
		}
		checkStore(fmt.Sprintf("after scope %d (%v)", scope, g))
	}
	t.Logf("seed %d: %d operations, %d refused, %d ranges narrowed to the grant; %d of 60 KVs restricted twice, %d on a follower",
		seed, ops, denied, narrowed, nested, viaFollower)
	if denied == 0 || denied == ops {
		t.Errorf("seed %d: %d of %d operations refused: the test exercised only one side", seed, denied, ops)
	}
}
