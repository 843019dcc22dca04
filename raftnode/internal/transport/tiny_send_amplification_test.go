package transport

import (
	"context"
	"runtime"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/schema"
)

// A list of zero-sized structs costs its sender 8 bytes of go-capnp's
// traversal budget per element and almost nothing on the wire: a receiver
// that sized its slices from the list's length (232 bytes a message, 48
// an entry) before reading an element would allocate gigabytes for a send
// of about a hundred bytes, from any peer that may open a stream.
func TestTinySendDoesNotMakeTheReceiverAllocateGigabytes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := openRawStream(t, ctx, newFakeHandler())

	const n = 1 << 20 // 8 MiB of traversal budget; the wire carries a tag word
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, frel := st.Send(ctx, func(p schema.PeerStream_send_Params) error {
		l, err := capnp.NewCompositeList(p.Segment(), capnp.ObjectSize{}, n)
		if err != nil {
			return err
		}
		return capnp.Struct(p).SetPtr(0, l.ToPtr())
	})
	_, callErr := f.Struct()
	frel()
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("send of a %d-element empty list: %v; bytes allocated meanwhile (both ends, one process): %d MiB", n, callErr, alloc>>20)
	if alloc > 64<<20 {
		t.Fatalf("a send of a few words made the process allocate %d MiB (the receiver sizes its slice from the list length)", alloc>>20)
	}
}
