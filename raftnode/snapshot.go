package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/raft"
)

// A node's snapshot is an envelope around the state machine's snapshot
// that also carries the members' addresses as of the snapshot's index:
// members added by a membership change are known only from the log, and
// the log before a snapshot is gone.
//
//	magic "CRSN" | version u8 | count uvarint | (id uvarint, len uvarint, addr)* | crc32c of all before | kv snapshot bytes
const (
	snapMagic   = "CRSN"
	snapVersion = 1
	maxAddrLen  = 1024
	maxMembers  = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeSnapshot writes the envelope header followed by the state
// machine's snapshot (nil: an empty store).
func encodeSnapshot(addrs map[uint64]string, sn *kv.Snapshot) []byte {
	var buf bytes.Buffer
	writeSnapshot(&buf, addrs, sn)
	return buf.Bytes()
}

func writeSnapshot(w *bytes.Buffer, addrs map[uint64]string, sn *kv.Snapshot) error {
	ids := make([]uint64, 0, len(addrs))
	for id := range addrs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	h := []byte(snapMagic)
	h = append(h, snapVersion)
	h = binary.AppendUvarint(h, uint64(len(ids)))
	for _, id := range ids {
		h = binary.AppendUvarint(h, id)
		h = binary.AppendUvarint(h, uint64(len(addrs[id])))
		h = append(h, addrs[id]...)
	}
	h = binary.BigEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
	w.Write(h)
	if sn == nil {
		return nil
	}
	_, err := sn.WriteTo(w)
	return err
}

// decodeSnapshot splits a snapshot into the address book and the state
// machine's bytes (empty for a bootstrap snapshot).
func decodeSnapshot(data []byte) (map[uint64]string, []byte, error) {
	if len(data) == 0 {
		return map[uint64]string{}, nil, nil
	}
	errCorrupt := errors.New("corrupt snapshot envelope")
	if len(data) < len(snapMagic)+1 || string(data[:len(snapMagic)]) != snapMagic {
		return nil, nil, errCorrupt
	}
	if v := data[len(snapMagic)]; v != snapVersion {
		return nil, nil, fmt.Errorf("snapshot envelope version %d is not supported (want %d): upgrade raftnode", v, snapVersion)
	}
	p := data[len(snapMagic)+1:]
	next := func() (uint64, bool) {
		v, k := binary.Uvarint(p)
		if k <= 0 {
			return 0, false
		}
		p = p[k:]
		return v, true
	}
	count, ok := next()
	if !ok || count > maxMembers {
		return nil, nil, errCorrupt
	}
	addrs := make(map[uint64]string, count)
	for range count {
		id, ok1 := next()
		l, ok2 := next()
		if !ok1 || !ok2 || l > maxAddrLen || uint64(len(p)) < l {
			return nil, nil, errCorrupt
		}
		addrs[id] = string(p[:l])
		p = p[l:]
	}
	if len(p) < 4 {
		return nil, nil, errCorrupt
	}
	hdrLen := len(data) - len(p)
	if binary.BigEndian.Uint32(p) != crc32.Checksum(data[:hdrLen], castagnoli) {
		return nil, nil, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	return addrs, p[4:], nil
}

// verifySnapshot decodes a snapshot received from a leader in full
// without touching the node's state: the envelope, then the key-value
// store, restored into a scratch store. The core calls it
// (raft.Config.VerifySnapshot) before it installs the snapshot, so one
// this node could not restore is refused, and the leader asked again,
// rather than written to disk, where it would stop the node at every
// start. It costs one more decode per snapshot installed.
func (n *Node) verifySnapshot(sn raft.Snapshot) error {
	_, kvData, err := decodeSnapshot(sn.Data)
	if err != nil {
		return err
	}
	if len(kvData) == 0 {
		// Only a new cluster's bootstrap snapshot carries no store: every
		// later one holds the store's encoding, even of an empty store.
		if boot := raft.BootstrapSnapshot(raft.ConfState{}).Meta.Index; sn.Meta.Index > boot {
			return fmt.Errorf("no key-value store in a snapshot at index %d (only the bootstrap snapshot, at index %d, has none)", sn.Meta.Index, boot)
		}
		return nil
	}
	scratch := kv.New(n.kv.Config())
	if err := scratch.Restore(bytes.NewReader(kvData)); err != nil {
		return fmt.Errorf("key-value store: %w", err)
	}
	if a := scratch.AppliedIndex(); a > sn.Meta.Index {
		return fmt.Errorf("key-value store applied through index %d, beyond the snapshot's %d", a, sn.Meta.Index)
	}
	return nil
}

// restore replaces the state machine and the address book with a
// snapshot's.
func (n *Node) restore(sn raft.Snapshot) error {
	addrs, kvData, err := decodeSnapshot(sn.Data)
	if err != nil {
		return fmt.Errorf("snapshot %d: %w", sn.Meta.Index, err)
	}
	if len(kvData) > 0 {
		if err := n.kv.Restore(bytes.NewReader(kvData)); err != nil {
			return fmt.Errorf("snapshot %d: restore the key-value store: %w", sn.Meta.Index, err)
		}
	} else if err := n.kv.Restore(emptyKVSnapshot()); err != nil {
		return fmt.Errorf("snapshot %d: reset the key-value store: %w", sn.Meta.Index, err)
	}
	n.kv.SetApplied(sn.Meta.Index)
	if n.loop.addrs == nil {
		n.loop.addrs = make(map[uint64]string)
	}
	for id, addr := range addrs {
		if _, fixed := n.cfg.Peers[id]; fixed {
			continue
		}
		n.loop.addrs[id] = addr
		if n.tr != nil && id != n.cfg.ID {
			n.tr.SetPeer(id, addr)
		}
	}
	return nil
}

// emptyKVSnapshot is the snapshot of an empty store.
func emptyKVSnapshot() io.Reader {
	var buf bytes.Buffer
	kv.New(kv.Config{}).Snapshot().WriteTo(&buf)
	return &buf
}

// DefaultSnapshotBytes is Config.SnapshotBytes's default.
const DefaultSnapshotBytes = 64 << 20

// maybeSnapshot starts a background snapshot once enough entries were
// applied since the last one (SnapshotEntries), or enough bytes written
// to the log (SnapshotBytes: a few large values fill a disk long before
// their count matters). The state machine's snapshot is taken on the
// loop (cheap, copy-on-write) with the configuration in effect at the
// same index; serializing and writing it run in the background.
func (n *Node) maybeSnapshot() {
	ls := &n.loop
	applied := n.kv.AppliedIndex()
	if ls.snapshotting || applied <= ls.snapIndex {
		return
	}
	byEntries := applied >= ls.snapIndex+n.cfg.SnapshotEntries && applied >= ls.snapFailed+n.cfg.SnapshotEntries
	if byEntries || n.store.Stats().BytesWritten-ls.snapWALBytes >= n.cfg.SnapshotBytes {
		n.startSnapshot()
	}
}

// startSnapshot snapshots the state as of the applied index now.
func (n *Node) startSnapshot() uint64 {
	ls := &n.loop
	if ls.unsavedHS != nil {
		// The store snapshots only what its durable commit index covers.
		if err := n.save(*ls.unsavedHS, nil, nil); err != nil {
			n.fail(err)
			return 0
		}
	}
	ls.snapshotting = true
	// Counted from here whether it succeeds or not: a failed snapshot is
	// retried SnapshotBytes later.
	ls.snapWALBytes = n.store.Stats().BytesWritten
	kvSnap := n.kv.Snapshot()
	index := kvSnap.Index()
	cs := n.core.ConfState()
	addrs := make(map[uint64]string, len(ls.addrs))
	for id, a := range ls.addrs {
		addrs[id] = a
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var buf bytes.Buffer
		err := writeSnapshot(&buf, addrs, kvSnap)
		if err == nil {
			err = n.store.CreateSnapshot(index, cs, buf.Bytes())
		}
		if err == nil {
			err = n.store.Compact(index)
		}
		if err == nil {
			n.log.Info("snapshot written", "index", index, "bytes", buf.Len())
		}
		n.q.push(snapDone{index, err})
	}()
	return index
}
