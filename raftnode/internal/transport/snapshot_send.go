package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/schema"
)

// The sending side of snapshot transfers, beside the core (see
// "Snapshots" in raftnode/raft's doc.go). A leader's core asks for a
// transfer with a MsgSnap, metadata only; Send hands it here instead of to
// a lane. Each transfer runs on a goroutine and a connection of its own,
// so no append or heartbeat ever waits behind it: it opens the snapshot
// (Config.OpenSnapshot), offers it to the follower (Raft.installSnapshot),
// streams the data in writes of SnapshotChunk bytes, read from the file
// once into one buffer, with at most SnapshotWindow writes in flight, and
// finishes; then it reports the outcome (Config.SnapshotDone), which the
// driver hands to the core (ReportSnapshot).
//
// One transfer per follower: a MsgSnap for a follower that has one under
// way replaces it, unless it names the same snapshot in the same term.

// Defaults for the snapshot fields of Config.
const (
	DefaultSnapshotChunk   = 256 << 10
	DefaultSnapshotWindow  = 4
	DefaultSnapshotTimeout = 30 * time.Second
)

// SnapshotSource is a snapshot opened to be sent: its data is read once,
// from start to end.
type SnapshotSource interface {
	// Size is the length of the data in bytes.
	Size() int64
	// Checksum is the CRC-32C (Castagnoli) of the whole data, as recorded
	// when it was written: the follower checks what it received against
	// it.
	Checksum() uint32
	// Read reads the next bytes. A source whose data turns out damaged
	// fails its last Read with an error instead of io.EOF.
	io.Reader
	io.Closer
}

// SnapshotStats counts the snapshot transfers a transport sent.
type SnapshotStats struct {
	// Started counts transfers; Finished those the follower took, Failed
	// those that ended otherwise (and were reported so), Superseded those
	// a newer transfer to the same follower replaced (never reported).
	Started, Finished, Failed, Superseded uint64
	// BytesRead counts the data read from sources, BytesSent the data
	// the followers' writes returned for.
	BytesRead, BytesSent uint64
	// Buffers counts the buffers allocated to read data into (one per
	// transfer); LargestBuffer is the largest, in bytes. No transfer holds
	// more of a snapshot than its buffer and the writes in flight.
	Buffers       uint64
	LargestBuffer int
}

// snapSender runs the transport's snapshot transfers.
type snapSender struct {
	t *Transport

	mu     sync.Mutex
	active map[uint64]*transfer // by follower
	closed bool
	stats  SnapshotStats
	wg     sync.WaitGroup
}

// transfer is one snapshot transfer under way.
type transfer struct {
	m      raft.Message // the core's MsgSnap
	cancel context.CancelFunc
	// superseded: another transfer replaced this one, or the sender was
	// stopped: it ends without a report.
	superseded bool
}

func newSnapSender(t *Transport) *snapSender {
	return &snapSender{t: t, active: make(map[uint64]*transfer)}
}

// send starts the transfer m asks for (a MsgSnap from this node's core).
func (s *snapSender) send(m raft.Message) {
	if m.Snapshot == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if old := s.active[m.To]; old != nil {
		if old.m.Term == m.Term && old.m.Snapshot.Index == m.Snapshot.Index && old.m.Snapshot.Term == m.Snapshot.Term {
			return // the one under way will report
		}
		old.superseded = true
		old.cancel()
		s.stats.Superseded++
	}
	ctx, cancel := context.WithCancel(context.Background())
	tr := &transfer{m: m, cancel: cancel}
	s.active[m.To] = tr
	s.stats.Started++
	s.wg.Add(1)
	go s.run(ctx, tr)
}

// cancelAll stops every transfer under way, without reports (the core
// that asked for them no longer leads).
func (s *snapSender) cancelAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, tr := range s.active {
		tr.superseded = true
		tr.cancel()
		s.stats.Superseded++
		delete(s.active, id)
	}
}

// close stops every transfer and waits for their goroutines.
func (s *snapSender) close() {
	s.cancelAll()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wg.Wait()
}

// run streams one snapshot and reports how that ended.
func (s *snapSender) run(ctx context.Context, tr *transfer) {
	defer s.wg.Done()
	defer tr.cancel()
	m := tr.m
	start := time.Now()
	err := s.stream(ctx, m)
	s.mu.Lock()
	report := !tr.superseded
	if s.active[m.To] == tr {
		delete(s.active, m.To)
	}
	switch {
	case !report:
	case err == nil:
		s.stats.Finished++
	default:
		s.stats.Failed++
	}
	s.mu.Unlock()
	log := s.t.log.With("peer", m.To, "snapshot", m.Snapshot.Index, "term", m.Term)
	switch {
	case !report:
		log.Debug("snapshot transfer replaced or stopped", "error", err)
		return
	case err == nil:
		log.Info("snapshot sent", "took", time.Since(start).Round(time.Millisecond))
	default:
		log.Warn("snapshot transfer failed; the leader tries again once the follower answers", "error", err)
	}
	s.t.cfg.Observer.SnapshotSent(m.To, time.Since(start), err)
	s.t.cfg.SnapshotDone(m.To, m.Snapshot.Index, err)
}

// count updates the statistics.
func (s *snapSender) count(f func(st *SnapshotStats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// stream does the transfer's work: open the snapshot, connect, offer,
// write, finish.
func (s *snapSender) stream(ctx context.Context, m raft.Message) error {
	cfg := &s.t.cfg
	addr, ok := s.t.peerAddr(m.To)
	if !ok {
		return fmt.Errorf("node %d: %w", m.To, ErrUnknownPeer)
	}
	if cfg.OpenSnapshot == nil {
		return errors.New("this node cannot send snapshots (no Config.OpenSnapshot)")
	}
	src, err := cfg.OpenSnapshot(*m.Snapshot)
	if err != nil {
		return fmt.Errorf("open snapshot %d: %w", m.Snapshot.Index, err)
	}
	defer src.Close()

	dctx, cancel := s.t.dialContext(ctx)
	cc, rc, err := s.t.dialRaft(dctx, m.To, addr)
	cancel()
	if err != nil {
		return err
	}
	// Close the connection before releasing anything: releasing a
	// question the peer never answered blocks on a live connection.
	var releases []capnp.ReleaseFunc
	defer func() {
		cc.Close()
		for _, r := range releases {
			r()
		}
		rc.Release()
	}()
	wait := func(f *capnp.Future, what string) (capnp.Struct, error) {
		timer := time.NewTimer(cfg.SnapshotTimeout)
		defer timer.Stop()
		select {
		case <-f.Done():
			return f.Struct()
		case <-ctx.Done():
			return capnp.Struct{}, fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-cc.Done():
			return capnp.Struct{}, fmt.Errorf("%s: connection closed", what)
		case <-timer.C:
			return capnp.Struct{}, fmt.Errorf("%s: no answer within %v", what, cfg.SnapshotTimeout)
		}
	}

	of, orel := rc.InstallSnapshot(ctx, func(p schema.Raft_installSnapshot_Params) error {
		h, err := p.NewHeader()
		if err != nil {
			return err
		}
		setHeader(h, header{cluster: cfg.ClusterID, from: cfg.LocalID, to: m.To, inc: cfg.Incarnation})
		o, err := p.NewOffer()
		if err != nil {
			return err
		}
		o.SetTerm(m.Term)
		o.SetSize(uint64(src.Size()))
		o.SetChecksum(src.Checksum())
		meta, err := o.NewMeta()
		if err != nil {
			return err
		}
		return encodeSnapshotMeta(meta, m.Snapshot)
	})
	releases = append(releases, orel)
	res, err := wait(of.Future, "offer")
	if err != nil {
		return fmt.Errorf("offer snapshot %d: %w", m.Snapshot.Index, err)
	}
	stream := schema.Raft_installSnapshot_Results(res).Stream().AddRef()
	releases = append(releases, stream.Release)

	buf := make([]byte, min(int64(cfg.SnapshotChunk), max(src.Size(), 1)))
	s.count(func(st *SnapshotStats) {
		st.Buffers++
		st.LargestBuffer = max(st.LargestBuffer, len(buf))
	})
	type write struct {
		fut *capnp.Future
		rel capnp.ReleaseFunc
		n   int
	}
	var pending []write
	oldest := func() error {
		w := pending[0]
		pending = pending[1:]
		_, err := wait(w.fut, "write")
		w.rel()
		if err != nil {
			return err
		}
		s.count(func(st *SnapshotStats) { st.BytesSent += uint64(w.n) })
		return nil
	}
	defer func() {
		// Left in flight by a failure: released after the connection
		// closed (the deferred cleanup runs in reverse order).
		for _, w := range pending {
			releases = append(releases, w.rel)
		}
	}()
	var sent int64
	paced := time.Now()
	for done := false; !done; {
		n, rerr := io.ReadFull(src, buf)
		s.count(func(st *SnapshotStats) { st.BytesRead += uint64(n) })
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			done = true
		case rerr != nil:
			return fmt.Errorf("read snapshot %d at byte %d: %w", m.Snapshot.Index, sent, rerr)
		}
		if n == 0 {
			break
		}
		if len(pending) >= cfg.SnapshotWindow {
			if err := oldest(); err != nil {
				return fmt.Errorf("write snapshot %d: %w", m.Snapshot.Index, err)
			}
		}
		if rate := cfg.SnapshotRate; rate > 0 {
			// Paced: the chunk leaves no earlier than the rate allows.
			if d := time.Until(paced.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))); d > 0 {
				timer := time.NewTimer(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					return fmt.Errorf("snapshot %d: %w", m.Snapshot.Index, context.Cause(ctx))
				}
			}
		}
		chunk := buf[:n]
		// The arguments are copied into the call's message before Write
		// returns, so buf is free again at once.
		wf, wrel := stream.Write(ctx, func(p schema.SnapshotStream_write_Params) error { return p.SetData(chunk) })
		pending = append(pending, write{fut: wf.Future, rel: wrel, n: n})
		sent += int64(n)
	}
	if sent != src.Size() {
		return fmt.Errorf("snapshot %d: read %d bytes of %d", m.Snapshot.Index, sent, src.Size())
	}
	for len(pending) > 0 {
		if err := oldest(); err != nil {
			return fmt.Errorf("write snapshot %d: %w", m.Snapshot.Index, err)
		}
	}
	ff, frel := stream.Finish(ctx, nil)
	releases = append(releases, frel)
	if _, err := wait(ff.Future, "finish"); err != nil {
		return fmt.Errorf("finish snapshot %d: %w", m.Snapshot.Index, err)
	}
	return nil
}

// peerAddr returns the address of peer id, if it is known.
func (t *Transport) peerAddr(id uint64) (string, bool) {
	t.mu.RLock()
	p, ok := t.peers[id]
	t.mu.RUnlock()
	if !ok {
		return "", false
	}
	_, addr := p.lanes[LaneData].stats()
	return addr, true
}

// SnapshotStats returns the counters of the snapshot transfers sent.
func (t *Transport) SnapshotStats() SnapshotStats {
	t.snaps.mu.Lock()
	defer t.snaps.mu.Unlock()
	return t.snaps.stats
}

// CancelSnapshots stops every snapshot transfer under way, without
// reporting them: call it when this node stops leading (its core no
// longer waits for the reports).
func (t *Transport) CancelSnapshots() { t.snaps.cancelAll() }
