package services

import (
	"context"
	"fmt"
	"io"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/internal/transport"
	"github.com/capraft/capraft/schema"
)

// Backups (Admin.saveSnapshot): the answering node streams a stored
// snapshot to the caller's sink, the way a leader streams one to a
// follower (transport's snapshot_send.go): read from the file once into
// one buffer, a bounded window of writes in flight, each write waited for
// within a timeout. It all runs on the call's goroutine, never the loop:
// a slow caller slows only its own transfer, and a vanished one ends it
// (its calls fail, or time out) and the file is closed.

// Backup transfer parameters: the peer transport's, so a backup loads a
// node no more than a snapshot sent to a follower.
const (
	backupChunk   = transport.DefaultSnapshotChunk
	backupWindow  = transport.DefaultSnapshotWindow
	backupTimeout = transport.DefaultSnapshotTimeout
)

// errBackupBusy answers a backup asked for while another is under way.
var errBackupBusy = &requestError{schema.ErrorCode_unavailable, "a backup is already being sent by this node: retry when it is done, or ask another node"}

// SaveSnapshot streams a backup to the caller's sink.
func (a adminServer) SaveSnapshot(ctx context.Context, call schema.Admin_saveSnapshot) error {
	// The argument is valid only until the handler returns: keep a
	// reference of our own.
	sink := call.Args().Sink().AddRef()
	defer sink.Release()
	call.Go()
	info, err := a.sv.sendBackup(ctx, sink)
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	if err != nil {
		a.sv.log.Warn("backup failed", "error", err)
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, a.sv.d.Leader())
	}
	bi, aerr := res.NewInfo()
	if aerr != nil {
		return aerr
	}
	return info.fill(bi)
}

// backupInfo is what a sink is told of a backup (schema.BackupInfo).
type backupInfo struct {
	cluster, node, index, term, size uint64
	checksum                         uint32
	voters, learners                 []uint64
	version                          string
	created                          time.Time
}

func (b backupInfo) fill(s schema.BackupInfo) error {
	s.SetClusterId(b.cluster)
	s.SetNodeId(b.node)
	s.SetIndex(b.index)
	s.SetTerm(b.term)
	s.SetSize(b.size)
	s.SetChecksum(b.checksum)
	s.SetCreatedMillis(b.created.UnixMilli())
	for _, l := range []struct {
		ids []uint64
		new func(int32) (capnp.UInt64List, error)
	}{{b.voters, s.NewVoters}, {b.learners, s.NewLearners}} {
		list, err := l.new(int32(len(l.ids)))
		if err != nil {
			return err
		}
		for i, id := range l.ids {
			list.Set(i, id)
		}
	}
	return s.SetVersion(b.version)
}

// sendBackup opens a snapshot covering every write committed before the
// call (driver.OpenBackup) and streams it to sink.
func (sv *Server) sendBackup(ctx context.Context, sink schema.BackupSink) (backupInfo, error) {
	if !sv.backingUp.CompareAndSwap(false, true) {
		return backupInfo{}, errBackupBusy
	}
	defer sv.backingUp.Store(false)
	// The services closing ends the transfer too.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sv.stopc:
			cancel()
		case <-ctx.Done():
		}
	}()

	rctx, rcancel := context.WithTimeout(ctx, sv.cfg.RequestTimeout)
	src, err := sv.d.OpenBackup(rctx)
	rcancel()
	if err != nil {
		return backupInfo{}, err
	}
	defer src.Close()
	cs := src.Meta.ConfState
	info := backupInfo{
		cluster: sv.clusterID, node: sv.cfg.ID, index: src.Meta.Index, term: src.Meta.Term,
		size: uint64(src.Size()), checksum: src.Checksum(),
		voters: cs.Voters, learners: cs.Learners, version: sv.cfg.Version, created: time.Now(),
	}
	sv.log.Info("sending a backup", "index", info.index, "bytes", info.size)
	start := time.Now()
	if err := streamBackup(ctx, sink, src, info); err != nil {
		return backupInfo{}, fmt.Errorf("backup of snapshot %d: %w", info.index, err)
	}
	sv.log.Info("backup sent", "index", info.index, "bytes", info.size, "took", time.Since(start).Round(time.Millisecond))
	return info, nil
}

// backupSinkError is a sink call that failed or timed out: the caller
// went away or could not keep up. Nothing is wrong with the node.
func backupSinkError(what string, err error) error {
	return &requestError{schema.ErrorCode_unavailable, fmt.Sprintf("the backup's receiver failed %s: %v", what, err)}
}

// streamBackup tells sink what comes, then writes src's data to it with
// at most backupWindow writes in flight.
func streamBackup(ctx context.Context, sink schema.BackupSink, src driver.BackupSource, info backupInfo) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wait := func(f *capnp.Future, what string) error {
		timer := time.NewTimer(backupTimeout)
		defer timer.Stop()
		select {
		case <-f.Done():
			_, err := f.Struct()
			if err != nil {
				return backupSinkError(what, err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, driver.ErrStopped)
		case <-timer.C:
			return backupSinkError(what, fmt.Errorf("no answer within %v", backupTimeout))
		}
	}
	type write struct {
		fut  *capnp.Future
		rel  capnp.ReleaseFunc
		what string
	}
	var pending []write
	defer func() {
		if len(pending) == 0 {
			return
		}
		// Left in flight by a failure: cancelling them sends Finish,
		// and a release waits until that is sent, which a caller that
		// stopped reading its connection holds up until the connection
		// closes (idle timeout, shutdown). So they are released apart:
		// the transfer ends and the file is closed now.
		cancel()
		left := pending
		go func() {
			for _, w := range left {
				w.rel()
			}
		}()
	}()
	// A write is released here only once its answer came: releasing an
	// unanswered one waits for that answer, and when the caller's
	// connection ends, the connection answers its questions only after
	// every call it serves (this one included) has returned. So a failed
	// wait leaves the write pending, for the deferred release apart.
	oldest := func() error {
		w := pending[0]
		if err := wait(w.fut, w.what); err != nil {
			return err
		}
		pending = pending[1:]
		w.rel()
		return nil
	}
	// begin counts in the window like a write: the data follows it at
	// once, in order on the one capability.
	bf, brel := sink.Begin(ctx, func(p schema.BackupSink_begin_Params) error {
		s, err := p.NewInfo()
		if err != nil {
			return err
		}
		return info.fill(s)
	})
	pending = append(pending, write{fut: bf.Future, rel: brel, what: "begin"})
	buf := make([]byte, min(int64(backupChunk), max(src.Size(), 1)))
	var sent int64
	for done := false; !done; {
		n, rerr := io.ReadFull(src, buf)
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			done = true
		case rerr != nil:
			// A damaged file fails its last read (storage.SnapshotReader).
			return fmt.Errorf("read the snapshot file at byte %d: %w", sent, rerr)
		}
		if n == 0 {
			break
		}
		if len(pending) >= backupWindow {
			if err := oldest(); err != nil {
				return err
			}
		}
		chunk := buf[:n]
		// The arguments are copied into the call's message before Write
		// returns, so buf is free again at once.
		wf, wrel := sink.Write(ctx, func(p schema.BackupSink_write_Params) error { return p.SetData(chunk) })
		pending = append(pending, write{fut: wf.Future, rel: wrel, what: "a write"})
		sent += int64(n)
	}
	if sent != src.Size() {
		return fmt.Errorf("read %d bytes of %d from the snapshot file", sent, src.Size())
	}
	for len(pending) > 0 {
		if err := oldest(); err != nil {
			return err
		}
	}
	return nil
}
