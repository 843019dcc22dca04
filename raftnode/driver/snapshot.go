package driver

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sort"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/statemachine"
)

// A node's snapshot is an envelope around the state machine's snapshot
// that also carries the members' addresses as of the snapshot's index:
// members added by a membership change are known only from the log, and
// the log before a snapshot is gone.
//
//	magic "CRSN" | version u8 | count uvarint | (id uvarint, len uvarint, addr)* | crc32c of all before | state machine stream
//
// The state machine's stream is opaque here: it runs to the end of the
// snapshot, and the state machine validates it (storage also checksums
// the whole snapshot file). A new cluster's bootstrap snapshot has no
// stream (the state machine's initial state); a snapshot of zero bytes
// (no envelope either) is read as one with no addresses and no stream.
const (
	snapMagic   = "CRSN"
	snapVersion = 1
	maxAddrLen  = 1024
	maxMembers  = 1 << 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errCorruptEnvelope is wrapped by the errors of envelopes that do not
// decode.
var errCorruptEnvelope = errors.New("corrupt snapshot envelope")

// encodeSnapshot returns a snapshot of addrs without a state machine: a
// new cluster's bootstrap snapshot.
func encodeSnapshot(addrs map[uint64]string) []byte {
	var buf bytes.Buffer
	writeSnapshot(&buf, addrs, nil) // writes to a bytes.Buffer do not fail
	return buf.Bytes()
}

// writeSnapshot writes the envelope header to w, followed by the state
// machine's snapshot (nil: none).
func writeSnapshot(w io.Writer, addrs map[uint64]string, sn statemachine.Snapshot) error {
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
	if _, err := w.Write(h); err != nil {
		return fmt.Errorf("write snapshot envelope: %w", err)
	}
	if sn == nil {
		return nil
	}
	if _, err := sn.WriteTo(w); err != nil {
		return fmt.Errorf("write the state machine's snapshot: %w", err)
	}
	return nil
}

// readSnapshot reads a snapshot's envelope from r and returns the address
// book and the state machine's stream, which is the rest of r (through a
// buffer). A snapshot of zero bytes has no addresses and an empty stream.
func readSnapshot(r io.Reader) (map[uint64]string, *bufio.Reader, error) {
	br := bufio.NewReader(r)
	if _, err := br.Peek(1); err == io.EOF {
		return map[uint64]string{}, br, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("read snapshot envelope: %w", err)
	}
	// hdr keeps the bytes read, for the checksum.
	hdr := make([]byte, len(snapMagic)+1, 64)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:len(snapMagic)]) != snapMagic {
		return nil, nil, errCorruptEnvelope
	}
	if v := hdr[len(snapMagic)]; v != snapVersion {
		return nil, nil, fmt.Errorf("snapshot envelope version %d is not supported (want %d): upgrade raftnode", v, snapVersion)
	}
	next := func() (uint64, bool) {
		v, err := binary.ReadUvarint(br)
		if err != nil {
			return 0, false
		}
		hdr = binary.AppendUvarint(hdr, v)
		return v, true
	}
	count, ok := next()
	if !ok || count > maxMembers {
		return nil, nil, errCorruptEnvelope
	}
	addrs := make(map[uint64]string, min(count, 64))
	for range count {
		id, ok1 := next()
		l, ok2 := next()
		if !ok1 || !ok2 || l > maxAddrLen {
			return nil, nil, errCorruptEnvelope
		}
		hdr = append(hdr, make([]byte, l)...)
		if _, err := io.ReadFull(br, hdr[len(hdr)-int(l):]); err != nil {
			return nil, nil, errCorruptEnvelope
		}
		addrs[id] = string(hdr[len(hdr)-int(l):])
	}
	var sum [4]byte
	if _, err := io.ReadFull(br, sum[:]); err != nil {
		return nil, nil, errCorruptEnvelope
	}
	if binary.BigEndian.Uint32(sum[:]) != crc32.Checksum(hdr, castagnoli) {
		return nil, nil, fmt.Errorf("%w: checksum mismatch", errCorruptEnvelope)
	}
	return addrs, br, nil
}

// verifyStream decodes a snapshot's stream r, as of index, in full
// without touching the node's state: the envelope, then the state
// machine's stream (Machine.Verify). The receiver of a snapshot from a
// leader runs it on the data as it arrives (snapshot_receive.go), before
// the snapshot reaches the core, so one this node could not restore is
// refused, and the leader asked again, rather than installed, where it
// would stop the node at every start.
func (d *Driver) verifyStream(r io.Reader, index uint64) error {
	_, sm, err := readSnapshot(r)
	if err != nil {
		return err
	}
	if _, err := sm.Peek(1); err == io.EOF {
		// Only a new cluster's bootstrap snapshot carries no state
		// machine: every later one holds its stream, even of an empty
		// state.
		if boot := raft.BootstrapSnapshot(raft.ConfState{}).Meta.Index; index > boot {
			return fmt.Errorf("no state machine in a snapshot at index %d (only the bootstrap snapshot, at index %d, has none)", index, boot)
		}
		return nil
	}
	if err := d.sm.Verify(sm, index); err != nil {
		return fmt.Errorf("state machine: %w", err)
	}
	return nil
}

// restore replaces the state machine and the address book with those of
// a snapshot held in memory (a bootstrap snapshot, or the one
// --force-new-cluster writes). On error the state machine is unchanged.
func (d *Driver) restore(sn raft.Snapshot) error {
	return d.restoreFrom(bytes.NewReader(sn.Data), sn.Meta.Index)
}

// restoreStored restores from the store's snapshot file meta names, read
// as a stream, once (the store checks its checksum as the read reaches
// the end, and the state machine changes nothing unless its whole stream
// is good). On error the state machine is unchanged.
func (d *Driver) restoreStored(meta raft.SnapshotMeta) error {
	r, err := d.store.OpenSnapshot(meta.Index, meta.Term)
	if err != nil {
		return fmt.Errorf("snapshot %d: %w", meta.Index, err)
	}
	defer r.Close()
	return d.restoreFrom(r, meta.Index)
}

// restoreFrom replaces the state machine and the address book with those
// of the snapshot stream r, as of index. On error the state machine is
// unchanged.
func (d *Driver) restoreFrom(r io.Reader, index uint64) error {
	addrs, sm, err := readSnapshot(r)
	if err != nil {
		return fmt.Errorf("snapshot %d: %w", index, err)
	}
	// A snapshot without a state machine stream (a new cluster's
	// bootstrap snapshot) restores the initial state.
	if err := d.sm.Restore(sm, index); err != nil {
		return fmt.Errorf("snapshot %d: restore the state machine: %w", index, err)
	}
	if d.loop.addrs == nil {
		d.loop.addrs = make(map[uint64]string)
	}
	for id, addr := range addrs {
		if _, fixed := d.cfg.Peers[id]; fixed {
			continue
		}
		d.loop.addrs[id] = addr
		if d.tr != nil && id != d.cfg.ID {
			d.tr.SetPeer(id, addr)
		}
	}
	return nil
}

// maybeSnapshot starts a background snapshot once enough entries were
// applied since the last one (SnapshotEntries), or enough bytes written
// to the log (SnapshotBytes: a few large values fill a disk long before
// their count matters). The state machine's snapshot is taken on the
// loop (cheap, copy-on-write) with the configuration in effect at the
// same index; serializing and writing it run in the background.
func (d *Driver) maybeSnapshot() {
	ls := &d.loop
	applied := d.sm.Applied()
	if ls.snapshotting || applied <= ls.snapIndex {
		return
	}
	byEntries := applied >= ls.snapIndex+d.cfg.SnapshotEntries && applied >= ls.snapFailed+d.cfg.SnapshotEntries
	if byEntries || d.store.Stats().BytesWritten-ls.snapWALBytes >= d.cfg.SnapshotBytes {
		d.startSnapshot()
	}
}

// startSnapshot snapshots the state as of the applied index now: on the
// loop it takes the state machine's copy-on-write view and the
// configuration in effect; a goroutine streams the view into the
// snapshot file (through a buffer of its own, never the whole snapshot in
// memory), commits it and compacts the log, while the loop goes on.
func (d *Driver) startSnapshot() uint64 {
	ls := &d.loop
	if ls.unsavedHS != nil {
		// The store snapshots only what its durable commit index covers.
		if err := d.save(*ls.unsavedHS, nil, nil); err != nil {
			d.fail(err)
			return 0
		}
	}
	ls.snapshotting = true
	// Counted from here whether it succeeds or not: a failed snapshot is
	// retried SnapshotBytes later.
	ls.snapWALBytes = d.store.Stats().BytesWritten
	smSnap, err := d.sm.Snapshot()
	if err != nil {
		index := d.sm.Applied()
		d.q.push(snapDone{index, fmt.Errorf("state machine: %w", err)})
		return index
	}
	index := smSnap.Index()
	cs := d.core.ConfState()
	addrs := make(map[uint64]string, len(ls.addrs))
	for id, a := range ls.addrs {
		addrs[id] = a
	}
	d.wg.Add(1)
	d.goFn(func() {
		defer d.wg.Done()
		start := d.clock.Now()
		size, err := d.writeSnapshotFile(index, cs, addrs, smSnap)
		if err == nil {
			err = d.store.Compact(index)
		}
		d.obs.SnapshotSaved(d.since(start), err)
		if err == nil {
			d.log.Info("snapshot written", "index", index, "bytes", size)
		}
		d.q.push(snapDone{index, err})
	})
	return index
}

// snapshotWriteBuffer is the buffer between a state machine's snapshot
// stream and the snapshot file: large enough that the file sees few
// writes, small against any state.
const snapshotWriteBuffer = 256 << 10

// writeSnapshotFile streams the envelope and the state machine's view sn
// into a new snapshot file at index, commits it and releases sn. It
// returns the snapshot's size.
func (d *Driver) writeSnapshotFile(index uint64, cs raft.ConfState, addrs map[uint64]string, sn statemachine.Snapshot) (uint64, error) {
	w, err := d.store.NewSnapshot(index, cs)
	if err != nil {
		sn.Release()
		return 0, err
	}
	bw := bufio.NewWriterSize(w, snapshotWriteBuffer)
	err = writeSnapshot(bw, addrs, sn)
	if err == nil {
		err = bw.Flush()
	}
	// The view is written (or failed): the state machine may free it
	// before the file is synced.
	sn.Release()
	if err == nil {
		err = w.Commit()
	}
	if err != nil {
		w.Abort()
		return 0, err
	}
	return w.Size(), nil
}
