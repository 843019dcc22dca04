package raftnode_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/raftnode/internal/storeknobs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/schema"
)

// newRestrictCluster starts a 3-node cluster (fsync off: what is tested is
// who may do what, not durability) and returns it with its leader.
func newRestrictCluster(t *testing.T) (*testCluster, uint64) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.StorageKnobs = &storeknobs.Knobs{FS: noSyncFS{vfs.OS}} })
	return c, c.leader()
}

// writer is an unrestricted client of node id with an open session, and
// the sequence numbers of that session.
type writer struct{ *kvClient }

func newWriter(t *testing.T, ctx context.Context, c *testCluster, id uint64) writer {
	k := c.client(id)
	k.openRetry(t, ctx)
	return writer{k}
}

func (w writer) nextSeq() uint64 { w.kvClient.seq++; return w.kvClient.seq }

// putAll writes every key with its own name as its value.
func (w writer) putAll(ctx context.Context, keys ...string) {
	w.t.Helper()
	for _, k := range keys {
		if r, err := w.single(ctx, testOp{kind: "put", key: k, value: k, seq: w.nextSeq()}); err != nil || r.err != nil {
			w.t.Fatalf("put %q: %v %v", k, err, r.err)
		}
	}
}

// mustRestrict derives a restricted KV from k or fails the test.
func mustRestrict(t *testing.T, ctx context.Context, k *kvClient, prefix string, restrictPrefix, readOnly bool) *kvClient {
	t.Helper()
	r, err := k.restrict(ctx, prefix, restrictPrefix, readOnly)
	if err != nil {
		t.Fatalf("restrict(%q, %v, %v): %v", prefix, restrictPrefix, readOnly, err)
	}
	return r
}

// wantDenied fails unless err is a permissionDenied answer whose message
// starts "permissionDenied: " and contains every one of parts.
func wantDenied(t *testing.T, what string, err error, parts ...string) {
	t.Helper()
	if !isCode(err, schema.ErrorCode_permissionDenied) {
		t.Errorf("%s: got %v, want permissionDenied", what, err)
		return
	}
	msg := err.(*codeError).msg
	if !strings.HasPrefix(msg, "permissionDenied: ") {
		t.Errorf("%s: message %q does not start with \"permissionDenied: \"", what, msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("%s: message %q does not say %q", what, msg, p)
		}
	}
}

// Every single-operation method of a KV restricted to a prefix refuses a
// key outside it with permissionDenied and a message naming the grant,
// and serves the keys inside it; a read-only KV refuses writes and says
// so.
func TestRestrictedKVRefusesKeysOutsideItsGrant(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "app", "apq", "app0", "app/x")
	app := mustRestrict(t, ctx, w.kvClient, "app/", true, false)
	grant := `(keys with prefix "app/", read-write)`
	for _, o := range []testOp{
		{kind: "put", key: "apq", value: "v"},
		{kind: "put", key: "app", value: "v"},
		{kind: "get", key: "app0"},
		{kind: "get", key: "app", serial: true},
		{kind: "delete", key: "app0"},
		{kind: "cas", key: "apq", absent: true, value: "v"},
		{kind: "range", key: "b"},
		{kind: "range", key: "app0"},
	} {
		if o.isWrite() {
			o.seq = w.nextSeq()
		}
		r, err := app.single(ctx, o)
		if err != nil {
			t.Fatalf("%v: %v", o, err)
		}
		wantDenied(t, o.String(), r.err, grant)
	}
	for _, o := range []testOp{
		{kind: "put", key: "app/y", value: "1", seq: w.nextSeq()},
		{kind: "get", key: "app/x"},
		{kind: "cas", key: "app/y", expected: "1", value: "2", seq: w.nextSeq()},
		{kind: "delete", key: "app/x", seq: w.nextSeq()},
		{kind: "range", key: "app/"},
	} {
		if r, err := app.single(ctx, o); err != nil || r.err != nil {
			t.Errorf("%v inside the grant: %v %v", o, err, r.err)
		}
	}
	ro := mustRestrict(t, ctx, app, "", false, true)
	roGrant := `(keys with prefix "app/", read-only)`
	for _, o := range []testOp{
		{kind: "put", key: "app/y", value: "v"},
		{kind: "delete", key: "app/y"},
		{kind: "cas", key: "app/y", expected: "2", value: "3"},
	} {
		o.seq = w.nextSeq()
		r, err := ro.single(ctx, o)
		if err != nil {
			t.Fatalf("%v: %v", o, err)
		}
		wantDenied(t, o.String()+" on a read-only KV", r.err, "read-only", roGrant)
	}
	if r, err := ro.single(ctx, testOp{kind: "get", key: "app/y"}); err != nil || r.err != nil || r.value != "2" {
		t.Errorf("get inside a read-only grant: %+v %v", r, err)
	}
	r, err := ro.single(ctx, testOp{kind: "get", key: "apq"})
	if err != nil {
		t.Fatal(err)
	}
	wantDenied(t, "get outside a read-only grant", r.err, roGrant)
	// Nothing refused was written.
	for key, want := range map[string]string{"apq": "apq", "app": "app", "app0": "app0", "app/y": "2"} {
		if v, found, err := w.get(ctx, key, false); err != nil || !found || v != want {
			t.Errorf("%q = %q %v %v, want %q", key, v, found, err, want)
		}
	}
}

// restrict only narrows: a prefix outside the current one fails the call
// with an exception starting "permissionDenied: "; a narrower prefix, or
// read-only, adds to what holds already.
func TestRestrictOnlyNarrows(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	app := mustRestrict(t, ctx, w.kvClient, "app/", true, false)
	for _, p := range []string{"b", "ap", "", "app"} {
		_, err := app.restrict(ctx, p, true, false)
		if err == nil || !strings.Contains(err.Error(), "permissionDenied: restrict to prefix") ||
			!strings.Contains(err.Error(), `keys with prefix "app/"`) {
			t.Errorf("restrict %q within \"app/\": %v, want a permissionDenied exception naming the grant", p, err)
		}
	}
	if _, err := app.restrict(ctx, strings.Repeat("x", 64<<10), true, false); err == nil || !strings.Contains(err.Error(), "over the key size limit") {
		t.Errorf("restrict to a prefix over the key size limit: %v", err)
	}
	sub := mustRestrict(t, ctx, app, "app/x/", true, false)
	put := func(k *kvClient, key string) error {
		r, err := k.single(ctx, testOp{kind: "put", key: key, value: "v", seq: w.nextSeq()})
		if err != nil {
			t.Fatal(err)
		}
		return r.err
	}
	wantDenied(t, "put app/y through app/x/", put(sub, "app/y"), `keys with prefix "app/x/"`)
	if err := put(sub, "app/x/1"); err != nil {
		t.Errorf("put app/x/1 through app/x/: %v", err)
	}
	// Read-only without a prefix keeps the prefix; a prefix without
	// read-only keeps read-only.
	ro := mustRestrict(t, ctx, app, "", false, true)
	r, err := ro.single(ctx, testOp{kind: "get", key: "b"})
	if err != nil {
		t.Fatal(err)
	}
	wantDenied(t, "get b through a read-only app/", r.err, `keys with prefix "app/", read-only`)
	roSub := mustRestrict(t, ctx, ro, "app/x/", true, false)
	wantDenied(t, "put through a prefix restriction of a read-only KV", put(roSub, "app/x/2"), `keys with prefix "app/x/", read-only`)
	// The empty prefix on an unrestricted KV grants every key.
	all := mustRestrict(t, ctx, w.kvClient, "", true, false)
	if err := put(all, "zzz"); err != nil {
		t.Errorf("put through a KV restricted to the empty prefix: %v", err)
	}
	// A call pipelined on restrict's answer (one round trip) is confined
	// too.
	f, rel := w.kv.Restrict(ctx, func(p schema.KV_restrict_Params) error {
		p.SetRestrictPrefix(true)
		return p.SetPrefix([]byte("app/"))
	})
	defer rel()
	piped := &kvClient{t: t, kv: f.Kv()}
	if r, err = piped.single(ctx, testOp{kind: "get", key: "zzz"}); err != nil {
		t.Fatal(err)
	}
	wantDenied(t, "get zzz pipelined on restrict to app/", r.err, `keys with prefix "app/"`)
}

// rangeAll pages through a range with limit per page and returns every
// key, failing on a page that is not answered.
func rangeAll(t *testing.T, ctx context.Context, k *kvClient, prefix, after string, limit uint32) []string {
	t.Helper()
	var keys []string
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatalf("range %q: more than 100 pages", prefix)
		}
		r, err := k.single(ctx, testOp{kind: "range", key: prefix, after: after, limit: limit})
		if err != nil || r.err != nil {
			t.Fatalf("range %q after %q: %v %v", prefix, after, err, r.err)
		}
		if limit > 0 && len(r.keys) > int(limit) {
			t.Fatalf("range %q: page of %d keys, limit %d", prefix, len(r.keys), limit)
		}
		keys = append(keys, r.keys...)
		if !r.more {
			return keys
		}
		if len(r.keys) == 0 {
			t.Fatalf("range %q after %q: an empty page says more follow", prefix, after)
		}
		after = r.keys[len(r.keys)-1]
	}
}

// A range through a restricted KV is intersected with its prefix: a
// range over a shorter prefix is narrowed to the grant (starting at its
// first key, stopping at its end, and never saying more follow past it),
// one over a disjoint prefix is refused.
func TestRestrictedRangeIsIntersectedWithThePrefix(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "ap", "app", "app.", "app/", "app/a", "app/b", "app/b/c", "app0", "apq", "b",
		"\xff", "\xff\xfe\xff", "\xff\xff", "\xff\xff\x00", "\xff\xff\xff")
	inApp := []string{"app/", "app/a", "app/b", "app/b/c"}
	follower := lead%3 + 1
	for _, via := range []uint64{lead, follower} {
		app := mustRestrict(t, ctx, c.client(via), "app/", true, false)
		for _, tc := range []struct {
			prefix, after string
			want          []string
		}{
			{"", "", inApp},
			{"a", "", inApp},
			{"app", "", inApp},
			{"app/", "", inApp},
			{"app/b", "", []string{"app/b", "app/b/c"}},
			{"", "app/a", []string{"app/b", "app/b/c"}},
			{"", "ap", inApp},   // starts before the grant: from its first key
			{"", "app.", inApp}, // one byte before the prefix
			{"", "app/b/c", nil},
			{"", "app0", nil}, // one byte past the prefix's keys
			{"", "zz", nil},
		} {
			for _, limit := range []uint32{0, 1, 3} {
				if got := rangeAll(t, ctx, app, tc.prefix, tc.after, limit); !slices.Equal(got, tc.want) {
					t.Errorf("via %d: range %q after %q limit %d = %q, want %q", via, tc.prefix, tc.after, limit, got, tc.want)
				}
			}
		}
		for _, p := range []string{"b", "apq", "app0", "app.", "\xff"} {
			r, err := app.single(ctx, testOp{kind: "range", key: p})
			if err != nil {
				t.Fatal(err)
			}
			wantDenied(t, "range "+p, r.err, `range over prefix`, `keys with prefix "app/"`)
		}
		// A prefix of 0xff bytes has no end: every key after it is in.
		ff := mustRestrict(t, ctx, c.client(via), "\xff\xff", true, true)
		if got, want := rangeAll(t, ctx, ff, "", "", 2), []string{"\xff\xff", "\xff\xff\x00", "\xff\xff\xff"}; !slices.Equal(got, want) {
			t.Errorf("via %d: range \"\" through \\xff\\xff = %q, want %q", via, got, want)
		}
		if got, want := rangeAll(t, ctx, ff, "\xff", "\xff\xff", 0), []string{"\xff\xff\x00", "\xff\xff\xff"}; !slices.Equal(got, want) {
			t.Errorf("via %d: range \"\\xff\" after \\xff\\xff through \\xff\\xff = %q, want %q", via, got, want)
		}
		for _, key := range []string{"\xff", "\xff\xfe\xff"} {
			r, err := ff.single(ctx, testOp{kind: "get", key: key})
			if err != nil {
				t.Fatal(err)
			}
			wantDenied(t, "get "+key+" through \\xff\\xff", r.err)
		}
	}
}

// A batch through a restricted KV that holds a write outside its grant
// (or any write, read-only) is refused whole, by the node that received
// it: the write's result names the grant, every other op says the batch
// was refused, and nothing is proposed. A refused read fails alone.
func TestRestrictedBatchWithARefusedWriteAppliesNothing(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "app/a", "b")
	follower := lead%3 + 1
	for _, via := range []uint64{follower, lead} {
		app := mustRestrict(t, ctx, c.client(via), "app/", true, false)
		app.session = w.session
		ro := mustRestrict(t, ctx, app, "", false, true)
		lastIndex := c.nodes[lead].Status(ctx).LastIndex
		for _, tc := range []struct {
			name    string
			k       *kvClient
			ops     []testOp
			refused int
			why     string
		}{
			{"a put outside", app, []testOp{
				{kind: "put", key: "app/1", value: "v", seq: w.nextSeq()},
				{kind: "get", key: "app/a"},
				{kind: "put", key: "b/1", value: "v", seq: w.nextSeq()},
				{kind: "range", key: ""},
				{kind: "delete", key: "app/a", seq: w.nextSeq()},
			}, 2, `keys with prefix "app/", read-write`},
			{"a cas outside", app, []testOp{
				{kind: "delete", key: "app/a", seq: w.nextSeq()},
				{kind: "cas", key: "b", expected: "b", value: "x", seq: w.nextSeq()},
			}, 1, `cas of key "b"`},
			{"a write on a read-only KV", ro, []testOp{
				{kind: "get", key: "app/a"},
				{kind: "delete", key: "app/a", seq: w.nextSeq()},
			}, 1, "read-only"},
		} {
			rs, err := tc.k.batchOps(ctx, tc.ops)
			if err != nil {
				t.Fatalf("via %d, %s: %v", via, tc.name, err)
			}
			for i, r := range rs {
				if i == tc.refused {
					wantDenied(t, tc.name+": the refused op", r.err, tc.why)
				} else {
					wantDenied(t, tc.name+": another op", r.err, "batch was refused", "nothing in the batch was applied")
				}
			}
		}
		if got := c.nodes[lead].Status(ctx).LastIndex; got != lastIndex {
			t.Errorf("via %d: refused batches reached the log: last index %d, was %d", via, got, lastIndex)
		}
		for key, want := range map[string]string{"app/1": "", "b/1": "", "app/a": "app/a", "b": "b"} {
			v, found, err := w.get(ctx, key, false)
			if err != nil || found != (want != "") || v != want {
				t.Errorf("via %d: %q = %q %v %v after refused batches, want %q", via, key, v, found, err, want)
			}
		}
		// A refused read fails alone; the writes and reads around it run.
		rs, err := app.batchOps(ctx, []testOp{
			{kind: "put", key: "app/2", value: "two", seq: w.nextSeq()},
			{kind: "get", key: "b"},
			{kind: "get", key: "app/2"},
			{kind: "range", key: "a"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if rs[0].err != nil || rs[2].err != nil || rs[2].value != "two" || rs[3].err != nil {
			t.Errorf("via %d: ops inside the grant around a refused read: %+v", via, rs)
		}
		if want := []string{"app/2", "app/a"}; !slices.Equal(rs[3].keys, want) || rs[3].more {
			t.Errorf("via %d: range \"a\" in a batch = %q more %v, want %q", via, rs[3].keys, rs[3].more, want)
		}
		wantDenied(t, "get b in a batch", rs[1].err, `get of key "b"`)
		w.single(ctx, testOp{kind: "delete", key: "app/2", seq: w.nextSeq()})
	}
}

// Sessions exist to write: a read-only KV refuses openSession, keepAlive
// and closeSession; a KV restricted to a prefix alone serves them.
func TestReadOnlyKVRefusesSessions(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	for _, via := range []uint64{lead, lead%3 + 1} {
		ro := mustRestrict(t, ctx, c.client(via), "app/", true, true)
		ro.session = w.session
		for _, m := range []string{"openSession", "keepAlive", "closeSession"} {
			wantDenied(t, m+" on a read-only KV", ro.sessionMethod(ctx, m), "read-only", "sessions are for writing")
		}
		if err := w.keepAlive(ctx); err != nil {
			t.Fatalf("the session a read-only KV was refused to close: %v", err)
		}
		pfx := mustRestrict(t, ctx, c.client(via), "app/", true, false)
		for _, m := range []string{"openSession", "keepAlive", "closeSession"} {
			if err := pfx.sessionMethod(ctx, m); err != nil {
				t.Errorf("via %d: %s on a KV restricted to a prefix: %v", via, m, err)
			}
		}
	}
}

// A follower hands a batch with writes to the leader with full
// authority; the batch is confined before it leaves, so what comes back
// is too: a range over every key in a forwarded batch returns only the
// grant's keys.
func TestRestrictedBatchThroughAFollowerComesBackConfined(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "a", "app", "app/a", "app0", "b")
	follower := lead%3 + 1
	app := mustRestrict(t, ctx, c.client(follower), "app/", true, false)
	app.session = w.session
	rs, err := app.batchOps(ctx, []testOp{
		{kind: "put", key: "app/new", value: "v", seq: w.nextSeq()}, // a write: the follower forwards the batch
		{kind: "range", key: ""},
		{kind: "range", key: "", limit: 1},
		{kind: "range", key: "", after: "app/new"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs {
		if r.err != nil {
			t.Fatalf("op %d: %v", i, r.err)
		}
	}
	if want := []string{"app/a", "app/new"}; !slices.Equal(rs[1].keys, want) || rs[1].more {
		t.Errorf("range \"\" forwarded = %q more %v, want %q", rs[1].keys, rs[1].more, want)
	}
	if want := []string{"app/a"}; !slices.Equal(rs[2].keys, want) || !rs[2].more {
		t.Errorf("range \"\" limit 1 forwarded = %q more %v, want %q and more", rs[2].keys, rs[2].more, want)
	}
	if len(rs[3].keys) != 0 || rs[3].more {
		t.Errorf("range \"\" after the grant's last key forwarded = %q more %v, want nothing (app0 and b are outside)", rs[3].keys, rs[3].more)
	}
}

// Sessions are not tied to a capability, and a retried sequence number
// is answered with the saved result of the write that used it first: a
// restricted KV that reuses another write's sequence number must not see
// that write's previous state when it lies outside the grant.
func TestRestrictedKVWithholdsSavedResultsOfOtherKeys(t *testing.T) {
	c, lead := newRestrictCluster(t)
	ctx := ctxT(t)
	w := newWriter(t, ctx, c, lead)
	w.putAll(ctx, "secret")
	secretSeq := w.nextSeq()
	if r, err := w.single(ctx, testOp{kind: "put", key: "secret", value: "s2", seq: secretSeq}); err != nil || r.err != nil || r.prev != "secret" {
		t.Fatalf("second put of secret: %+v %v", r, err)
	}
	follower := lead%3 + 1
	for _, via := range []uint64{lead, follower} {
		app := mustRestrict(t, ctx, c.client(via), "app/", true, false)
		app.session = w.session
		r, err := app.single(ctx, testOp{kind: "put", key: "app/x", value: "v", seq: secretSeq})
		if err != nil {
			t.Fatal(err)
		}
		wantDenied(t, "a put reusing another key's sequence number", r.err, "earlier write outside")
		if r.prev != "" || r.prevKey != "" {
			t.Errorf("the refused replay leaked %q=%q", r.prevKey, r.prev)
		}
		rs, err := app.batchOps(ctx, []testOp{{kind: "delete", key: "app/x", seq: secretSeq}})
		if err != nil {
			t.Fatal(err)
		}
		wantDenied(t, "a batched delete reusing another key's sequence number", rs[0].err, "earlier write outside")
		// Its own retries are answered as usual.
		own := w.nextSeq()
		for range 2 {
			r, err := app.single(ctx, testOp{kind: "put", key: "app/y", value: "y", seq: own})
			if err != nil || r.err != nil {
				t.Fatalf("via %d: put app/y (and its retry): %+v %v", via, r, err)
			}
		}
		own = w.nextSeq()
		for range 2 {
			r, err := app.single(ctx, testOp{kind: "put", key: "app/y", value: "y2", seq: own})
			if err != nil || r.err != nil || r.prevKey != "app/y" {
				t.Fatalf("via %d: put app/y over itself (and its retry): %+v %v", via, r, err)
			}
		}
	}
}

// BenchmarkRestrictedKVPut measures sequential puts through the leader's
// KV as handed out (scope=none) and through one restricted to a prefix
// (scope=prefix): the cost of confining each request.
func BenchmarkRestrictedKVPut(b *testing.B) {
	c := newBenchCluster(b, false)
	lead := c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := c.client(lead)
	if err := base.open(ctx); err != nil {
		b.Fatal(err)
	}
	f, rel := base.kv.Restrict(ctx, func(p schema.KV_restrict_Params) error {
		p.SetRestrictPrefix(true)
		return p.SetPrefix([]byte("bench/"))
	})
	res, err := f.Struct()
	if err != nil {
		b.Fatal(err)
	}
	restricted := &kvClient{t: b, kv: res.Kv().AddRef(), session: base.session}
	rel()
	defer restricted.kv.Release()
	for _, tc := range []struct {
		scope string
		k     *kvClient
	}{{"none", base}, {"prefix", restricted}} {
		b.Run("scope="+tc.scope, func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				base.seq++
				r, err := tc.k.single(ctx, testOp{kind: "put", key: fmt.Sprintf("bench/%d", i%1000), value: "v", seq: base.seq})
				if err != nil || r.err != nil {
					b.Fatalf("put: %v %v", err, r.err)
				}
			}
		})
	}
}
