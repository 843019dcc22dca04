package watch

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	capnprpc "capnproto.org/go/capnp/v3/rpc"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// decodingWatcher decodes every event it is sent into a string.
type decodingWatcher struct {
	mu  sync.Mutex
	got [][]string
}

func (w *decodingWatcher) Events(_ context.Context, call schema.Watcher_events) error {
	l, err := call.Args().Events()
	if err != nil {
		return err
	}
	var out []string
	for i := 0; i < l.Len(); i++ {
		e := l.At(i)
		s := e.Type().String()
		k, err := e.Kv()
		if err != nil {
			return err
		}
		s += " " + decodeKV(k)
		if e.HadPrev() {
			p, err := e.Prev()
			if err != nil {
				return err
			}
			s += " prev " + decodeKV(p)
		} else if e.HasPrev() {
			return fmt.Errorf("event %d has a prev without hadPrev", i)
		}
		out = append(out, s)
	}
	w.mu.Lock()
	w.got = append(w.got, out)
	w.mu.Unlock()
	return nil
}

func (w *decodingWatcher) Closed(context.Context, schema.Watcher_closed) error { return nil }

func decodeKV(k schema.KeyValue) string {
	key, kerr := k.Key()
	val, verr := k.Value()
	return fmt.Sprintf("%q=%q c%d m%d v%d l%d %v %v", key, val, k.CreateRevision(), k.ModRevision(), k.Version(), k.Lease(), kerr, verr)
}

// randomEvents returns n events of random shape, revisions from rev on.
func randomEvents(rng *rand.Rand, n int, rev uint64, maxValue int) []kv.Event {
	var out []kv.Event
	for i := 0; i < n; i++ {
		if rng.Intn(3) > 0 {
			rev++
		}
		key := make([]byte, 1+rng.Intn(40))
		rng.Read(key)
		e := kv.Event{Type: kv.EventPut, KV: kv.KeyValue{Key: key, ModRevision: rev}}
		if rng.Intn(4) == 0 {
			e.Type = kv.EventDelete
		} else {
			e.KV.Value = make([]byte, rng.Intn(maxValue+1))
			rng.Read(e.KV.Value)
			e.KV.CreateRevision, e.KV.Version = rev-uint64(rng.Intn(int(rev))), uint64(1+rng.Intn(9))
		}
		if rng.Intn(2) == 0 {
			e.HasPrev = true
			e.Prev = kv.KeyValue{Key: key, Value: bytes.Repeat([]byte{'p'}, rng.Intn(maxValue+1)), CreateRevision: 1, ModRevision: rev - 1, Version: 3}
		}
		out = append(out, e)
	}
	return out
}

// Events copied from shared frames (the hub's fast path) read back,
// through the generated API, exactly as the same events encoded one by
// one do: in-process and over a Cap'n Proto connection, in small and in
// multi-segment messages, with and without previous values.
func TestFramedEventsReadBackAsEncodedOneByOne(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	ctx := context.Background()
	local := new(decodingWatcher)
	remote := new(decodingWatcher)
	c1, c2 := net.Pipe()
	server := capnprpc.NewConn(capnprpc.NewStreamTransport(c1), &capnprpc.Options{BootstrapClient: capnp.Client(schema.Watcher_ServerToClient(remote))})
	defer server.Close()
	client := capnprpc.NewConn(capnprpc.NewStreamTransport(c2), nil)
	defer client.Close()
	remoteCap := schema.Watcher(client.Bootstrap(ctx))
	defer remoteCap.Release()
	localCap := schema.Watcher_ServerToClient(local)
	defer localCap.Release()

	fallbacks.Store(0)
	for round := 0; round < 60; round++ {
		withPrev := rng.Intn(2) == 0
		maxValue := []int{0, 10, 300, 5000}[rng.Intn(4)]
		var frames []*frame
		var all []kv.Event
		rev := uint64(100)
		for f := rng.Intn(5); f >= 0; f-- {
			fr := newFrame(0, 0)
			evs := randomEvents(rng, rng.Intn(60), rev, maxValue)
			for i := range evs {
				fr.add(&evs[i], withPrev)
				rev = evs[i].Revision()
			}
			frames = append(frames, fr)
			all = append(all, fr.events...)
		}
		for name, c := range map[string]schema.Watcher{"local": localCap, "remote": remoteCap} {
			w := map[string]*decodingWatcher{"local": local, "remote": remote}[name]
			f1, rel1 := c.Events(ctx, func(p schema.Watcher_events_Params) error {
				return placeFrames(p, frames, len(all))
			})
			if _, err := f1.Struct(); err != nil {
				t.Fatalf("%s framed call: %v", name, err)
			}
			rel1()
			f2, rel2 := c.Events(ctx, func(p schema.Watcher_events_Params) error {
				l, err := p.NewEvents(int32(len(all)))
				if err != nil {
					return err
				}
				for i := range all {
					if err := encodeEvent(l.At(i), &all[i]); err != nil {
						return err
					}
				}
				return nil
			})
			if _, err := f2.Struct(); err != nil {
				t.Fatalf("%s encoded call: %v", name, err)
			}
			rel2()
			w.mu.Lock()
			framed, encoded := w.got[len(w.got)-2], w.got[len(w.got)-1]
			w.mu.Unlock()
			if len(framed) != len(all) {
				t.Fatalf("%s round %d: %d framed events, want %d", name, round, len(framed), len(all))
			}
			for i := range framed {
				if framed[i] != encoded[i] {
					t.Fatalf("%s round %d event %d:\nframed  %s\nencoded %s", name, round, i, framed[i], encoded[i])
				}
			}
		}
	}
	if n := fallbacks.Load(); n > 0 {
		t.Fatalf("%d calls fell back to encoding event by event", n)
	}
}

// A frame's cost is the queue cost of its events, and its bytes their
// keys' and values' bytes, as a watcher reading the history apart counts
// them.
func TestFrameCountsItsEventsAsTheQueueDoes(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	evs := randomEvents(rng, 50, 1, 100)
	for _, withPrev := range []bool{false, true} {
		f := newFrame(0, 1000)
		var want int64 = 1000
		size := 0
		for i := range evs {
			f.add(&evs[i], withPrev)
			e := evs[i]
			if !withPrev {
				e.Prev = kv.KeyValue{}
			}
			want += cost(&e)
			size += len(e.KV.Key) + len(e.KV.Value) + len(e.Prev.Value)
		}
		if f.cum != want || f.bytes != size {
			t.Fatalf("withPrev %v: cum %d bytes %d, want %d and %d", withPrev, f.cum, f.bytes, want, size)
		}
	}
}

// The C++ implementation reads framed events (far pointers to landing
// pads, children in another segment) as it reads the same events
// encoded one by one: `capnp decode` prints both messages alike. Skipped
// without the capnp tool.
func TestCapnpToolDecodesFramedEventsAsEncodedOnes(t *testing.T) {
	if _, err := exec.LookPath("capnp"); err != nil {
		t.Skip("capnp not installed")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "capnproto.org/go/capnp/v3").Output()
	if err != nil {
		t.Skipf("go-capnp's std dir: %v", err)
	}
	std := filepath.Join(strings.TrimSpace(string(out)), "std")
	schemaDir, err := filepath.Abs("../../schema")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A struct laid out as Watcher.events's params, which capnp decode
	// cannot name.
	wrap := filepath.Join(dir, "wrap.capnp")
	if err := os.WriteFile(wrap, []byte("@0xd1e2f3a4b5c6d7e9;\nusing K = import \"/kv.capnp\";\nstruct P { events @0 :List(K.WatchEvent); upTo @1 :UInt64; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	decode := func(fill func(schema.Watcher_events_Params) error) string {
		msg, seg, err := capnp.NewMessage(capnp.MultiSegment(nil))
		if err != nil {
			t.Fatal(err)
		}
		p, err := schema.NewRootWatcher_events_Params(seg)
		if err != nil {
			t.Fatal(err)
		}
		p.SetUpTo(77)
		if err := fill(p); err != nil {
			t.Fatal(err)
		}
		b, err := msg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("capnp", "decode", "-I"+std, "-I"+schemaDir, "--short", wrap, "P")
		cmd.Stdin = bytes.NewReader(b)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("capnp decode: %v\n%s", err, out)
		}
		return string(out)
	}
	rng := rand.New(rand.NewSource(1))
	var frames []*frame
	var all []kv.Event
	for i := 0; i < 3; i++ {
		f := newFrame(0, 0)
		evs := randomEvents(rng, 40, uint64(100*i+1), 2000)
		for j := range evs {
			f.add(&evs[j], true)
		}
		frames = append(frames, f)
		all = append(all, f.events...)
	}
	fallbacks.Store(0)
	framed := decode(func(p schema.Watcher_events_Params) error { return placeFrames(p, frames, len(all)) })
	encoded := decode(func(p schema.Watcher_events_Params) error {
		l, err := p.NewEvents(int32(len(all)))
		if err != nil {
			return err
		}
		for i := range all {
			if err := encodeEvent(l.At(i), &all[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if framed != encoded {
		t.Fatalf("capnp decode differs:\nframed:  %.600s\nencoded: %.600s", framed, encoded)
	}
	if !strings.Contains(framed, "upTo = 77") || fallbacks.Load() > 0 {
		t.Fatalf("framed message decoded as %.300s (fallbacks %d)", framed, fallbacks.Load())
	}
}
