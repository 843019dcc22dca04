package kvwire

import (
	"reflect"
	"testing"

	"github.com/capraft/capraft/schema"
)

// A prefix delete travels with its flag; the empty prefix is refused
// with invalidArgument while decoding, before anything runs.
func TestDeletePrefixDecodes(t *testing.T) {
	o := Op{Kind: Delete, Seq: 3, Key: []byte("p/"), Prefix: true}
	got, err := DecodeOp(readOp(t, encodeOp(t, &o)))
	if err != nil || !reflect.DeepEqual(got, o) {
		t.Fatalf("decoded %+v %v, want %+v", got, err, o)
	}

	_, seg := newMessage(t)
	p, err := schema.NewRootKV_delete_Params(seg)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.NewOp()
	if err != nil {
		t.Fatal(err)
	}
	d.SetPrefix(true)
	_, got, err = DecodeDeleteCall(p)
	if err == nil || errCode(t, err) != schema.ErrorCode_invalidArgument || !got.Prefix {
		t.Fatalf("empty prefix: %+v %v, want invalidArgument", got, err)
	}
}

// A delete's count is what the node said; a node from before prefix
// deletes sets deleted without a count, which reads as 1.
func TestDeleteCountOfAnOlderNode(t *testing.T) {
	for _, tc := range []struct {
		deleted bool
		count   uint64
		want    uint64
	}{{false, 0, 0}, {true, 0, 1}, {true, 1, 1}, {true, 7, 7}} {
		_, seg := newMessage(t)
		src, err := schema.NewRootResult(seg)
		if err != nil {
			t.Fatal(err)
		}
		d, err := src.NewDelete()
		if err != nil {
			t.Fatal(err)
		}
		d.SetDeleted(tc.deleted)
		d.SetCount(tc.count)
		r, err := DecodeResult(src, Delete)
		if err != nil || r.Count != tc.want || r.Succeeded != tc.deleted {
			t.Errorf("deleted %v count %d: decoded %+v %v, want count %d", tc.deleted, tc.count, r, err, tc.want)
		}
	}
}
