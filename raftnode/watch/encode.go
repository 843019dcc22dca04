package watch

import (
	"encoding/binary"
	"errors"
	"sync/atomic"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// Encoding each event once.
//
// The hub encodes an event once per stream (the watchers sharing a
// filter), into a frame, in Cap'n Proto's wire layout; a delivery call
// then copies its frames' bytes into the call's message, so a watcher's
// cost per event is a copy and two additions, not an encoding.
//
// A frame keeps, per event, the three words of its WatchEvent element
// (the data word and the kv and prev pointers) and, apart, the element's
// children: for each KeyValue a landing pad (a struct pointer with
// offset 0), the struct (4 data words, the key and value pointers) and
// its key and value bytes. The elements reach their children through far
// pointers (segment id, landing pad's word offset in that segment), so
// the children may land in any segment of the call's message, wherever
// go-capnp puts them; in the frame a pointer holds the landing pad's word
// offset within the frame's children plus one (0: null), and placing it
// adds the children's position in the message.
//
// The element list itself is allocated through the generated API
// (Params.NewEvents), which writes the list pointer and tag; its
// position in its segment is found as go-capnp's bump allocators give it
// (at the segment's end, or just before the landing pad of a far pointer
// to it) and checked against the tag it wrote before a byte is written. Should that check ever fail (another arena), the
// events are encoded through the generated API instead.

// Sizes and offsets of the schema's structs (schema/kv.capnp; the frame
// tests check them against the generated code).
const (
	elemWords      = 3 // WatchEvent: 1 data word, 2 pointers
	kvDataWords    = 4 // KeyValue: createRevision, modRevision, version, lease
	kvPtrs         = 2 // KeyValue: key, value
	hadPrevBit     = 16
	structPtrType  = 0
	listPtrType    = 1
	farPtrType     = 2
	byteElemSize   = 2 // list element size code of Data
	padWord        = uint64(kvDataWords)<<32 | uint64(kvPtrs)<<48 | structPtrType
	elemTagSizes   = uint64(1)<<32 | uint64(2)<<48
	maxOffsetWords = 1<<29 - 1
)

// frame is one stream's events of one hub round, encoded (see above).
// A frame is never modified once its stream publishes it, except for
// next.
type frame struct {
	// upTo: every event of the stream's keys at or below upTo is in this
	// frame or an earlier one.
	upTo uint64
	// cum is the queue cost (see cost) of this frame's events and every
	// earlier frame's of the stream.
	cum int64

	events []kv.Event // the events, for the fallback encoding
	elems  []uint64   // elemWords per event
	kids   []byte     // the elements' children, whole words
	bytes  int        // keys' and values' bytes, for MaxBatchBytes

	next  atomic.Pointer[frame] // set once, before ready is closed
	ready chan struct{}         // closed when next is set
}

func newFrame(upTo uint64, cum int64) *frame {
	return &frame{upTo: upTo, cum: cum, ready: make(chan struct{})}
}

// following returns the frame after f, or nil if there is none yet.
func (f *frame) following() *frame { return f.next.Load() }

// link publishes n as the frame after f.
func (f *frame) link(n *frame) {
	f.next.Store(n)
	close(f.ready)
}

// add encodes e (and its previous state when withPrev) into f.
func (f *frame) add(ev *kv.Event, withPrev bool) {
	e := *ev
	if !withPrev {
		e.Prev, e.HasPrev = kv.KeyValue{}, false
	}
	data := uint64(schema.EventType_put)
	if e.Type == kv.EventDelete {
		data = uint64(schema.EventType_delete)
	}
	var prev uint64
	if e.HasPrev {
		data |= 1 << hadPrevBit
		prev = f.addKV(&e.Prev)
	}
	kvp := f.addKV(&e.KV)
	f.elems = append(f.elems, data, kvp, prev)
	f.events = append(f.events, e)
	f.bytes += len(e.KV.Key) + len(e.KV.Value) + len(e.Prev.Value)
	f.cum += cost(&e)
}

// addKV appends a KeyValue's landing pad, struct and bytes to f.kids and
// returns the element pointer's frame value (landing pad word + 1).
func (f *frame) addKV(v *kv.KeyValue) uint64 {
	pad := len(f.kids) / 8
	keyWords, valWords := words(len(v.Key)), words(len(v.Value))
	f.kids = binary.LittleEndian.AppendUint64(f.kids, padWord)
	f.kids = binary.LittleEndian.AppendUint64(f.kids, v.CreateRevision)
	f.kids = binary.LittleEndian.AppendUint64(f.kids, v.ModRevision)
	f.kids = binary.LittleEndian.AppendUint64(f.kids, v.Version)
	f.kids = binary.LittleEndian.AppendUint64(f.kids, 0) // lease: not sent (as encodeKV)
	// The key pointer is followed by the value pointer; the key's bytes
	// follow both, the value's the key's.
	f.kids = binary.LittleEndian.AppendUint64(f.kids, dataPtr(1, len(v.Key)))
	f.kids = binary.LittleEndian.AppendUint64(f.kids, dataPtr(keyWords, len(v.Value)))
	f.kids = appendPadded(f.kids, v.Key, keyWords)
	f.kids = appendPadded(f.kids, v.Value, valWords)
	return uint64(pad + 1)
}

func words(n int) int { return (n + 7) / 8 }

// dataPtr is a Data list pointer to n bytes starting off words after the
// pointer's end (null when n is 0, as the generated setters leave an
// empty value).
func dataPtr(off, n int) uint64 {
	if n == 0 {
		return 0
	}
	return uint64(uint32(off)<<2|listPtrType) | byteElemSize<<32 | uint64(n)<<35
}

func appendPadded(b, v []byte, w int) []byte {
	b = append(b, v...)
	for i := len(v); i < w*8; i++ {
		b = append(b, 0)
	}
	return b
}

// fallbacks counts the calls encoded through the generated API because
// the list was not where expected (the tests check it stays 0).
var fallbacks atomic.Int64

// errLayout says the element list was not where the allocator was
// expected to put it.
var errLayout = errors.New("watch: unexpected events list layout")

// placeFrames fills p's events with the n events of frames.
func placeFrames(p schema.Watcher_events_Params, frames []*frame, n int) error {
	list, err := p.NewEvents(int32(n))
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := copyFrames(capnp.List(list), frames, n); err != nil {
		if !errors.Is(err, errLayout) {
			return err
		}
		fallbacks.Add(1)
		i := 0
		for _, f := range frames {
			for j := range f.events {
				if err := encodeEvent(list.At(i), &f.events[j]); err != nil {
					return err
				}
				i++
			}
		}
	}
	return nil
}

// copyFrames writes frames' n events into list, a new list of n
// WatchEvents (see the comment at the top). It returns errLayout, having
// written nothing, when list is not at its segment's end.
func copyFrames(list capnp.List, frames []*frame, n int) error {
	seg := list.Segment()
	data := seg.Data()
	// The list ends its segment, or is followed by the landing pad of a
	// far pointer to it when it landed in another segment than the
	// params.
	tag := uint64(n)<<2 | elemTagSizes
	off := len(data) - 8*(1+elemWords*n)
	if off >= 0 && binary.LittleEndian.Uint64(data[off:]) != tag {
		off -= 8
	}
	if off < 0 || binary.LittleEndian.Uint64(data[off:]) != tag {
		return errLayout
	}
	for _, w := range data[off+8 : off+8+8*elemWords] {
		if w != 0 {
			return errLayout
		}
	}
	kidsLen := 0
	for _, f := range frames {
		kidsLen += len(f.kids)
	}
	blob, err := capnp.NewUInt8List(seg, int32(kidsLen))
	if err != nil {
		return err
	}
	kseg := blob.Segment()
	kdata, kids := kseg.Data(), capnp.List(blob).ToPtr().Data()
	koff := cap(kdata) - cap(kids)
	if len(kids) != kidsLen || koff < 0 || koff%8 != 0 || koff+kidsLen > len(kdata) || &kdata[koff] != &kids[0] ||
		(koff+kidsLen)/8 > maxOffsetWords {
		return errLayout
	}
	elems := seg.Data()[off+8 : off+8+8*elemWords*n] // again: the allocation may have moved seg's bytes
	base := uint64(kseg.ID())<<32 | farPtrType
	at, word := 0, koff/8
	for _, f := range frames {
		copy(kids[at:], f.kids)
		// A far pointer holds its landing pad's word offset in bits 3–31:
		// the frame's value is that offset within its kids plus one.
		fb := base + uint64(word-1)<<3
		for i := 0; i < len(f.elems); i += elemWords {
			binary.LittleEndian.PutUint64(elems, f.elems[i])
			if p := f.elems[i+1]; p != 0 {
				binary.LittleEndian.PutUint64(elems[8:], fb+p<<3)
			}
			if p := f.elems[i+2]; p != 0 {
				binary.LittleEndian.PutUint64(elems[16:], fb+p<<3)
			}
			elems = elems[8*elemWords:]
		}
		at += len(f.kids)
		word += len(f.kids) / 8
	}
	return nil
}
