package client

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3/exc"

	"github.com/capraft/capraft/schema"
)

// SnapshotInfo describes a snapshot that SaveSnapshot streams: where it
// comes from, and the size and CRC-32C (Castagnoli) of its data as the
// node stored it.
type SnapshotInfo struct {
	ClusterID uint64
	NodeID    uint64 // the node that sent it
	Index     uint64 // the snapshot's last included log index
	Term      uint64
	Size      uint64
	Checksum  uint32
	Voters    []uint64 // the configuration at Index
	Learners  []uint64
	Version   string    // the node's build
	Created   time.Time // when the node began sending
}

// SnapshotSink receives what SaveSnapshot streams: Begin once, then the
// data in order through Write, never concurrently. An error from either
// ends the transfer, and SaveSnapshot returns it.
type SnapshotSink interface {
	Begin(info SnapshotInfo) error
	// Write takes the next bytes; p is valid only during the call.
	Write(p []byte) error
}

// SaveSnapshot asks the node at endpoint (which need not be one of the
// client's endpoints) for a backup: a snapshot of its state covering at
// least every write committed before the call, streamed to sink with
// flow control (the node waits for Write to return before it sends more
// than a few chunks). It checks that the data it passed to sink matches
// the size and checksum the node announced, and returns the snapshot's
// description. The call is not retried: a sink that took part of a
// snapshot must start over. It needs operator authority.
func (c *Client) SaveSnapshot(ctx context.Context, endpoint string, sink SnapshotSink) (SnapshotInfo, error) {
	node, done, err := c.nodeAt(ctx, endpoint)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer done()
	bs := &backupSink{sink: sink}
	sinkCap := schema.BackupSink_ServerToClient(bs)
	defer sinkCap.Release()
	af, arel := node.Admin(ctx, nil)
	defer arel()
	f, rel := af.Admin().SaveSnapshot(ctx, func(p schema.Admin_saveSnapshot_Params) error {
		return p.SetSink(sinkCap.AddRef())
	})
	defer rel()
	res, err := f.Struct()
	if pe := permissionError(err, endpoint); pe != nil {
		return SnapshotInfo{}, fmt.Errorf("save snapshot: %w", pe)
	}
	// A failure of the sink is what to report, not how the node saw it.
	if serr := bs.failed(); serr != nil {
		return SnapshotInfo{}, serr
	}
	if err != nil {
		if ctx.Err() != nil {
			return SnapshotInfo{}, fmt.Errorf("save snapshot from %s: %w", endpoint, ctx.Err())
		}
		return SnapshotInfo{}, &CallError{Op: "save snapshot", Addr: endpoint, ConnectionLost: exc.IsType(err, exc.Disconnected), Err: err}
	}
	if res.HasError() {
		e, err := res.Error()
		if err != nil {
			return SnapshotInfo{}, fmt.Errorf("save snapshot from %s: %w", endpoint, err)
		}
		return SnapshotInfo{}, fmt.Errorf("save snapshot: %w", serverError(e, endpoint))
	}
	si, err := res.Info()
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("save snapshot from %s: %w", endpoint, err)
	}
	info, err := snapshotInfo(si)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("save snapshot from %s: %w", endpoint, err)
	}
	return info, bs.check(info)
}

// snapshotInfo copies a schema.BackupInfo.
func snapshotInfo(s schema.BackupInfo) (SnapshotInfo, error) {
	info := SnapshotInfo{
		ClusterID: s.ClusterId(), NodeID: s.NodeId(), Index: s.Index(), Term: s.Term(),
		Size: s.Size(), Checksum: s.Checksum(), Created: time.UnixMilli(s.CreatedMillis()),
	}
	voters, err := s.Voters()
	if err != nil {
		return SnapshotInfo{}, err
	}
	learners, err := s.Learners()
	if err != nil {
		return SnapshotInfo{}, err
	}
	for i := range voters.Len() {
		info.Voters = append(info.Voters, voters.At(i))
	}
	for i := range learners.Len() {
		info.Learners = append(info.Learners, learners.At(i))
	}
	info.Version, err = s.Version()
	return info, err
}

// backupSink serves the BackupSink capability the node streams to. Its
// calls come one at a time, in order (one capability, no call.Go).
type backupSink struct {
	sink SnapshotSink

	mu      sync.Mutex
	begun   bool
	info    SnapshotInfo
	n       uint64
	crc     uint32
	sinkErr error // the first error of the caller's sink
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Begin takes the description of what follows.
func (b *backupSink) Begin(_ context.Context, call schema.BackupSink_begin) error {
	info, err := call.Args().Info()
	if err != nil {
		return err
	}
	si, err := snapshotInfo(info)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.begun || b.sinkErr != nil {
		return errors.New("begin: called twice, or the transfer already failed")
	}
	b.begun, b.info = true, si
	if err := b.sink.Begin(si); err != nil {
		b.sinkErr = err
		return err
	}
	return nil
}

// Write takes the next bytes of the data.
func (b *backupSink) Write(_ context.Context, call schema.BackupSink_write) error {
	data, err := call.Args().Data()
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.sinkErr != nil:
		return b.sinkErr
	case !b.begun:
		return errors.New("write before begin")
	case b.n+uint64(len(data)) > b.info.Size:
		b.sinkErr = fmt.Errorf("save snapshot: the node sent more than the %d bytes it announced", b.info.Size)
		return b.sinkErr
	}
	if err := b.sink.Write(data); err != nil {
		b.sinkErr = err
		return err
	}
	b.n += uint64(len(data))
	b.crc = crc32.Update(b.crc, castagnoli, data)
	return nil
}

// failed returns the caller's sink's error, if it had one.
func (b *backupSink) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sinkErr
}

// check compares what the sink took with what the node announced and
// answered.
func (b *backupSink) check(final SnapshotInfo) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.begun:
		return errors.New("save snapshot: the node answered without sending anything")
	case final.Index != b.info.Index || final.Size != b.info.Size || final.Checksum != b.info.Checksum:
		return fmt.Errorf("save snapshot: the node announced snapshot %d (%d bytes, CRC-32C %08x) and answered for %d (%d bytes, %08x)",
			b.info.Index, b.info.Size, b.info.Checksum, final.Index, final.Size, final.Checksum)
	case b.n != final.Size:
		return fmt.Errorf("save snapshot: received %d of the %d bytes the node announced; save again", b.n, final.Size)
	case b.crc != final.Checksum:
		return fmt.Errorf("save snapshot: the data received has CRC-32C %08x, the node's snapshot %08x (damaged in transit?); save again", b.crc, final.Checksum)
	}
	return nil
}
