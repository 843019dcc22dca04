package services

import (
	"bytes"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// narrow only narrows: a prefix must lie within the current one, and
// read-only sticks.
func TestKVScopeNarrowsOnly(t *testing.T) {
	app := kvScope{restricted: true, prefix: []byte("app/")}
	for _, tc := range []struct {
		name     string
		from     kvScope
		prefix   string
		rp, ro   bool
		want     kvScope
		wantDeny bool
	}{
		{"everything to a prefix", kvScope{}, "a", true, false, kvScope{restricted: true, prefix: []byte("a")}, false},
		{"everything to the empty prefix", kvScope{}, "", true, false, kvScope{restricted: true, prefix: []byte{}}, false},
		{"a prefix to a longer one", app, "app/x", true, false, kvScope{restricted: true, prefix: []byte("app/x")}, false},
		{"a prefix to itself", app, "app/", true, true, kvScope{restricted: true, prefix: []byte("app/"), readOnly: true}, false},
		{"a prefix to a shorter one", app, "app", true, false, kvScope{}, true},
		{"a prefix to the empty one", app, "", true, false, kvScope{}, true},
		{"a prefix to a disjoint one", app, "b", true, false, kvScope{}, true},
		{"read-only keeps the prefix", app, "ignored", false, true, kvScope{restricted: true, prefix: []byte("app/"), readOnly: true}, false},
		{"read-only sticks", kvScope{readOnly: true}, "x", true, false, kvScope{restricted: true, prefix: []byte("x"), readOnly: true}, false},
	} {
		got, err := tc.from.narrow([]byte(tc.prefix), tc.rp, tc.ro)
		if tc.wantDeny {
			if err == nil || !strings.HasPrefix(err.Error(), "permissionDenied: restrict to prefix") {
				t.Errorf("%s: %v, want permissionDenied", tc.name, err)
			}
			continue
		}
		if err != nil || got.restricted != tc.want.restricted || !bytes.Equal(got.prefix, tc.want.prefix) || got.readOnly != tc.want.readOnly {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
		}
	}
}

// A range is intersected with the scope's prefix: within it, served as
// is; around it, narrowed to it; disjoint, refused.
func TestKVScopeIntersectsRanges(t *testing.T) {
	for _, tc := range []struct {
		scope, rng, want string
		deny             bool
	}{
		{"app/", "app/", "app/", false},
		{"app/", "app/x", "app/x", false},
		{"app/", "app", "app/", false},
		{"app/", "", "app/", false},
		{"app/", "app.", "", true},
		{"app/", "app0", "", true},
		{"app/", "b", "", true},
		{"\xff\xff", "\xff", "\xff\xff", false},
		{"\xff\xff", "\xff\xfe", "", true},
		{"", "", "", false},
		{"", "x", "x", false},
	} {
		s := kvScope{restricted: true, prefix: []byte(tc.scope)}
		o := kvwire.Op{Kind: kvwire.Range, Key: []byte(tc.rng), After: []byte("after")}
		err := s.confine(&o)
		switch {
		case tc.deny && err == nil:
			t.Errorf("range %q in %q: served over %q, want refused", tc.rng, tc.scope, o.Key)
		case !tc.deny && (err != nil || string(o.Key) != tc.want || string(o.After) != "after"):
			t.Errorf("range %q in %q: over %q after %q, %v; want over %q after \"after\"", tc.rng, tc.scope, o.Key, o.After, err, tc.want)
		}
	}
}

// callErr waits for a call and returns its failure.
func callErr[R any](f interface{ Struct() (R, error) }, rel capnp.ReleaseFunc) error {
	defer rel()
	_, err := f.Struct()
	return err
}

// withKey is an operation struct's key setter.
type withKey interface{ SetKey([]byte) error }

// keyOp fills the arguments of a single-operation method: session, seq
// and an operation on key.
func keyOp[P interface {
	NewOp() (O, error)
}, O withKey](key string, set func(P)) func(P) error {
	return func(p P) error {
		set(p)
		op, err := p.NewOp()
		if err != nil {
			return err
		}
		return op.SetKey([]byte(key))
	}
}

// A KV exported through an Exporter with a check (a token's grant) runs it
// at the start of every call, the inline operations included, and on
// capabilities derived by restrict: once it fails, every call fails with
// its error.
func TestKVCapabilityChecksItsGrantOnEveryCall(t *testing.T) {
	n, ctx := singleNode(t)
	var revoked atomic.Bool
	const why = "permissionDenied: the token was revoked"
	live := func() error {
		if revoked.Load() {
			return errors.New(why)
		}
		return nil
	}
	conn := &rpc.ConnInfo{Exporter: rpc.NewExporter(nil)}
	calls := map[string]func(schema.KV, uint64) error{
		"batch": func(k schema.KV, s uint64) error {
			return callErr(k.Batch(ctx, func(p schema.KV_batch_Params) error {
				req, err := p.NewReq()
				if err != nil {
					return err
				}
				req.SetSession(s)
				l, err := req.NewOps(1)
				if err != nil {
					return err
				}
				l.At(0).SetSeq(100)
				put, err := l.At(0).NewPut()
				if err != nil {
					return err
				}
				return put.SetKey([]byte("app/b"))
			}))
		},
		"put": func(k schema.KV, s uint64) error {
			return callErr(k.Put(ctx, keyOp("app/p", func(p schema.KV_put_Params) { p.SetSession(s); p.SetSeq(101) })))
		},
		"get": func(k schema.KV, _ uint64) error {
			return callErr(k.Get(ctx, keyOp("app/p", func(schema.KV_get_Params) {})))
		},
		"delete": func(k schema.KV, s uint64) error {
			return callErr(k.Delete(ctx, keyOp("app/p", func(p schema.KV_delete_Params) { p.SetSession(s); p.SetSeq(102) })))
		},
		"cas": func(k schema.KV, s uint64) error {
			return callErr(k.Cas(ctx, keyOp("app/c", func(p schema.KV_cas_Params) { p.SetSession(s); p.SetSeq(103) })))
		},
		"range": func(k schema.KV, _ uint64) error {
			return callErr(k.Range(ctx, func(p schema.KV_range_Params) error {
				op, err := p.NewOp()
				if err != nil {
					return err
				}
				return op.SetPrefix([]byte("app/"))
			}))
		},
		"openSession": func(k schema.KV, _ uint64) error { return callErr(k.OpenSession(ctx, nil)) },
		"keepAlive": func(k schema.KV, s uint64) error {
			return callErr(k.KeepAlive(ctx, func(p schema.KV_keepAlive_Params) error { p.SetSession(s); return nil }))
		},
		"closeSession": func(k schema.KV, s uint64) error {
			return callErr(k.CloseSession(ctx, func(p schema.KV_closeSession_Params) error { p.SetSession(s); return nil }))
		},
		"restrict": func(k schema.KV, _ uint64) error {
			return callErr(k.Restrict(ctx, func(p schema.KV_restrict_Params) error { return p.SetPrefix([]byte("app/x")) }))
		},
	}
	for _, sc := range []kvScope{{}, {restricted: true, prefix: []byte("app/")}} {
		revoked.Store(false)
		root := schema.KV(n.kvCapability(conn.Exporter.WithCheck(live), sc))
		defer root.Release()
		f, rel := root.Restrict(ctx, func(p schema.KV_restrict_Params) error {
			p.SetRestrictPrefix(true)
			return p.SetPrefix([]byte("app/"))
		})
		res, err := f.Struct()
		if err != nil {
			t.Fatal(err)
		}
		derived := res.Kv().AddRef()
		rel()
		defer derived.Release()
		of, orel := root.OpenSession(ctx, nil)
		ores, err := of.Struct()
		if err != nil || ores.HasError() {
			t.Fatalf("open a session while live: %v", err)
		}
		session := ores.Session()
		orel()
		for name, call := range calls {
			if err := call(derived, session); err != nil {
				t.Fatalf("%s while live: %v", name, err)
			}
		}
		revoked.Store(true)
		for _, k := range []schema.KV{root, derived} {
			for name, call := range calls {
				if err := call(k, session); err == nil || !strings.Contains(err.Error(), why) {
					t.Errorf("scope %s: %s after revocation: %v, want the live check's error", sc.String(), name, err)
				}
			}
		}
	}
}

// BenchmarkKVScopeGet measures a serializable get made in-process on one
// node's KV capability, unrestricted (scope=none) and confined to a
// prefix: the per-call cost of enforcing a scope, against a call that
// does little else.
func BenchmarkKVScopeGet(b *testing.B) {
	n, ctx := singleNode(b)
	conn := &rpc.ConnInfo{Exporter: rpc.NewExporter(nil)}
	app := []byte("app/")
	for _, tc := range []struct {
		name  string
		scope kvScope
	}{
		{"none", kvScope{}},
		{"prefix", kvScope{restricted: true, prefix: app}},
	} {
		b.Run("scope="+tc.name, func(b *testing.B) {
			k := schema.KV(n.kvCapability(conn.Exporter, tc.scope))
			defer k.Release()
			for b.Loop() {
				f, rel := k.Get(ctx, func(p schema.KV_get_Params) error {
					op, err := p.NewOp()
					if err != nil {
						return err
					}
					op.SetConsistency(schema.Consistency_serializable)
					return op.SetKey([]byte("app/key"))
				})
				if _, err := f.Struct(); err != nil {
					b.Fatal(err)
				}
				rel()
			}
		})
	}
}
