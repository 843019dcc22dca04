package driver

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
)

// oldEnvelope builds a snapshot as the node has written it since the
// envelope exists, byte by byte from its documented format, around
// stream.
func oldEnvelope(addrs map[uint64]string, ids []uint64, stream []byte) []byte {
	h := []byte("CRSN\x01")
	h = binary.AppendUvarint(h, uint64(len(ids)))
	for _, id := range ids {
		h = binary.AppendUvarint(h, id)
		h = binary.AppendUvarint(h, uint64(len(addrs[id])))
		h = append(h, addrs[id]...)
	}
	h = binary.BigEndian.AppendUint32(h, crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli)))
	return append(h, stream...)
}

// machineDriver is a Driver with just what restore and verifyStream
// use, over a key-value store.
func machineDriver() *testDriver {
	kvs := kv.New(kv.Config{})
	return &testDriver{Driver: &Driver{sm: kvs.Machine()}, kv: kvs}
}

// Snapshots already on disk restore: the envelope around a version-1 and a
// version-2 key-value snapshot (kv's golden files), and a bootstrap
// snapshot without a state machine, which restores the empty state.
func TestSnapshotsOnDiskStillRestore(t *testing.T) {
	addrs := map[uint64]string{1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 30: "[::1]:7003"}
	for _, file := range []string{"v1.snap", "v2.snap"} {
		stream, err := os.ReadFile(filepath.Join("..", "kv", "testdata", "snapshot", file))
		if err != nil {
			t.Fatal(err)
		}
		want := kv.New(kv.Config{})
		if err := want.Restore(bytes.NewReader(stream)); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		index := want.AppliedIndex() + 3
		sn := raft.Snapshot{Meta: raft.SnapshotMeta{Index: index, Term: 2}, Data: oldEnvelope(addrs, []uint64{1, 2, 30}, stream)}
		n := machineDriver()
		if err := n.verifyStream(bytes.NewReader(sn.Data), sn.Meta.Index); err != nil {
			t.Fatalf("%s: verify: %v", file, err)
		}
		if err := n.restore(sn); err != nil {
			t.Fatalf("%s: restore: %v", file, err)
		}
		if !maps.Equal(n.loop.addrs, addrs) {
			t.Errorf("%s: addresses %v, want %v", file, n.loop.addrs, addrs)
		}
		if n.sm.Applied() != index || n.kv.Len() != want.Len() || n.kv.Revision() != want.Revision() || n.kv.Sessions() != want.Sessions() {
			t.Errorf("%s: restored applied %d, %d keys, revision %d, %d sessions; want %d, %d, %d, %d", file,
				n.sm.Applied(), n.kv.Len(), n.kv.Revision(), n.kv.Sessions(), index, want.Len(), want.Revision(), want.Sessions())
		}
	}

	boot := raft.BootstrapSnapshot(raft.ConfState{Voters: []uint64{1}})
	boot.Data = oldEnvelope(addrs, []uint64{1, 2, 30}, nil)
	n := machineDriver()
	if err := n.kv.Restore(bytes.NewReader(kvStream(t))); err != nil { // some state, to be replaced
		t.Fatal(err)
	}
	if err := n.verifyStream(bytes.NewReader(boot.Data), boot.Meta.Index); err != nil {
		t.Fatalf("bootstrap snapshot: verify: %v", err)
	}
	if err := n.restore(boot); err != nil {
		t.Fatalf("bootstrap snapshot: restore: %v", err)
	}
	if n.sm.Applied() != boot.Meta.Index || n.kv.Len() != 0 || n.kv.Sessions() != 0 {
		t.Errorf("bootstrap snapshot restored applied %d, %d keys, %d sessions: not the initial state at %d",
			n.sm.Applied(), n.kv.Len(), n.kv.Sessions(), boot.Meta.Index)
	}
	// Only the bootstrap snapshot may come without a state machine.
	late := boot
	late.Meta.Index = boot.Meta.Index + 1
	if err := n.verifyStream(bytes.NewReader(late.Data), late.Meta.Index); err == nil {
		t.Error("a snapshot after the bootstrap one without a state machine was accepted")
	}
}

// kvStream returns the snapshot stream of a store with a key and a
// session, at applied index 2.
func kvStream(t *testing.T) []byte {
	s := kv.New(kv.Config{})
	s.Apply(1, (&kv.Command{Kind: kv.CmdOpenSession}).AppendBinary(nil))
	s.Apply(2, (&kv.Command{Kind: kv.CmdBatch, Session: 1, Ops: []kv.WriteOp{{Seq: 1, Type: kv.OpPut, Key: []byte("k"), Value: []byte("v")}}}).AppendBinary(nil))
	var buf bytes.Buffer
	if _, err := s.Snapshot().WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The envelope writes what it always wrote, reads back the addresses and
// hands the state machine exactly its stream.
func TestSnapshotEnvelopeRoundTrip(t *testing.T) {
	addrs := map[uint64]string{3: "c:3", 1: "a:1", 2: ""}
	store := kv.New(kv.Config{})
	store.Apply(1, (&kv.Command{Kind: kv.CmdOpenSession}).AppendBinary(nil))
	sn := store.Snapshot()
	var stream, buf bytes.Buffer
	sn.WriteTo(&stream)
	if err := writeSnapshot(&buf, addrs, sn); err != nil {
		t.Fatal(err)
	}
	if want := oldEnvelope(addrs, []uint64{1, 2, 3}, stream.Bytes()); !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("envelope bytes changed:\n got  %x\n want %x", buf.Bytes(), want)
	}
	got, r, err := readSnapshot(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if !maps.Equal(got, addrs) || !bytes.Equal(rest, stream.Bytes()) {
		t.Fatalf("read back %v and %d stream bytes; want %v and %d", got, len(rest), addrs, stream.Len())
	}
	if got, r, err := readSnapshot(bytes.NewReader(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty snapshot: %v %v", got, err)
	} else if rest, _ := io.ReadAll(r); len(rest) != 0 {
		t.Fatalf("empty snapshot: %d stream bytes", len(rest))
	}
}

// A damaged envelope header is refused, whatever byte is altered or
// wherever it is cut.
func TestSnapshotEnvelopeRejectsDamage(t *testing.T) {
	addrs := map[uint64]string{1: "a:1", 2: "b:2"}
	b := encodeSnapshot(addrs)
	for cut := 1; cut < len(b); cut++ {
		if _, _, err := readSnapshot(bytes.NewReader(b[:cut])); err == nil {
			t.Errorf("an envelope cut to %d of %d bytes was accepted", cut, len(b))
		}
	}
	for at := range b {
		bad := bytes.Clone(b)
		bad[at] ^= 0x41
		if got, _, err := readSnapshot(bytes.NewReader(bad)); err == nil {
			t.Errorf("an envelope with byte %d altered was accepted: %v", at, got)
		}
	}
}
