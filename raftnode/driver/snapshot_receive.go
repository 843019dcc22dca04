package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/raftnode/internal/driverbugs"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// Receiving a snapshot from the leader, beside the core (see "Snapshots"
// in raftnode/raft's doc.go). The transport checked who offers it (a
// member proven on the Raft capability, the stream's header) and hands
// the data here as it arrives; this side decides whether the snapshot is
// heard at all (only from the leader the core follows, in that leader's
// term, and only beyond what this node has committed), writes it to a
// temporary file while the state machine verifies it from the same bytes
// (one pass, nothing held in memory), and once the transport has checked
// size and checksum end to end, makes the file durable and steps the
// snapshot's metadata into the core. A snapshot that fails anything never
// reaches the core: the node keeps its log and state and runs on, and the
// leader tries again.
//
// One snapshot is received at a time: a new offer (a new leader, or the
// leader starting over) abandons the one under way.

// Errors that end a snapshot transfer on this side.
var (
	errSnapshotReplaced  = errors.New("a newer snapshot transfer replaced this one")
	errSnapshotAbandoned = errors.New("the snapshot transfer was abandoned")
	errTrailingSnapshot  = errors.New("data after the end of the state machine's snapshot")
)

// snapshotReceiving is the receiving side's state, shared by the
// transfers (which run on connection goroutines).
type snapshotReceiving struct {
	mu      sync.Mutex
	current *snapSink // the transfer under way, if any
	closed  bool      // the node is closing: no more transfers

	refused  atomic.Uint64 // snapshots refused after their data arrived
	lastWarn atomic.Int64  // unix nanos of the last refusal logged at Warn
	// writes and largestWrite count what the transfers wrote, for tests:
	// nothing here copies a write, so the largest write is the most of a
	// snapshot this side holds in memory at once (besides the state
	// machine's own verification).
	writes       atomic.Uint64
	largestWrite atomic.Int64
}

// SnapshotOffer is what a leader says of a snapshot before its data.
type SnapshotOffer struct {
	// From is the sender, Term the term it leads, Incarnation its
	// storage's.
	From, Term, Incarnation uint64
	// Meta names the snapshot: index, term and configuration.
	Meta raft.SnapshotMeta
	// Size is the length of the data, Checksum its CRC-32C (Castagnoli).
	Size     uint64
	Checksum uint32
}

// SnapshotSink receives one snapshot's data, in order, as it arrives.
type SnapshotSink interface {
	// Write takes the next bytes. p is valid only during the call. An
	// error ends the transfer (Abort follows).
	Write(p []byte) (int, error)
	// Finish is called once all the offered bytes were written and
	// matched the offer's size and checksum. It returns once the snapshot
	// is checked, durable and handed to the core, or why not (Abort
	// follows).
	Finish(ctx context.Context) error
	// Abort discards what was written. It may be called more than once,
	// and after Finish.
	Abort()
}

// ReceiveSnapshot takes the snapshot a peer offers, if the core would
// hear it, and returns where its data goes (the transport checked who
// offers it, and checks the data's size and checksum end to end).
func (d *Driver) ReceiveSnapshot(ctx context.Context, offer SnapshotOffer) (SnapshotSink, error) {
	why, err := onLoop(ctx, d, func() error { return d.snapshotHeard(offer) })
	if err != nil {
		return nil, err
	}
	if why != nil {
		d.log.Debug("refused a snapshot offer", "from", offer.From, "term", offer.Term, "index", offer.Meta.Index, "reason", why)
		return nil, why
	}
	w, err := d.store.ReceiveSnapshot(offer.Meta)
	if err != nil {
		return nil, fmt.Errorf("receive snapshot %d: %w", offer.Meta.Index, err)
	}
	pr, pw := io.Pipe()
	s := &snapSink{d: d, offer: offer, w: w, pw: pw, verified: make(chan error, 1), start: d.clock.Now()}
	rc := &d.receiving
	rc.mu.Lock()
	if rc.closed {
		rc.mu.Unlock()
		w.Abort()
		return nil, ErrStopped
	}
	old := rc.current
	rc.current = s
	d.wg.Add(1) // under the lock: stop aborts every sink it counts
	rc.mu.Unlock()
	if old != nil {
		old.abort(errSnapshotReplaced)
	}
	verify := d.verifyStream
	if driverbugs.On.InstallUnverified { // injected bug (driverbugs)
		verify = discardStream
	}
	go func() {
		defer d.wg.Done()
		// The state machine reads the same bytes as they are written to
		// the file: one pass, checked before anything is installed.
		err := verify(pr, offer.Meta.Index)
		if err == nil {
			err = errTrailingSnapshot // for a write that comes after the end
			s.verified <- nil
		} else {
			s.verified <- err
		}
		pr.CloseWithError(err)
	}()
	return s, nil
}

// snapshotHeard says why the core would not take the snapshot offer
// describes, or nil. Run on the loop.
func (d *Driver) snapshotHeard(offer SnapshotOffer) error {
	st := d.core.Status()
	switch {
	case d.loop.stopping != nil:
		return ErrStopped
	case offer.Term != st.Term || offer.From != st.Lead:
		// Who is heard: only the leader this node follows, in its term.
		// The leader tries again once this node answers its heartbeats.
		return fmt.Errorf("refused: this node follows node %d in term %d, not node %d in term %d", st.Lead, st.Term, offer.From, offer.Term)
	case offer.Meta.Index <= st.Commit:
		// The data is of no use, but the leader must learn how far this
		// node is, or it offers the same snapshot forever (its probe
		// found no entry to send from: this node's log diverged just
		// after the leader's snapshot). The core answers a snapshot at
		// or below its commit index with that index, as an append's
		// answer, without its data.
		meta := offer.Meta
		m := raft.Message{Type: raft.MsgSnap, From: offer.From, To: d.cfg.ID, Term: offer.Term,
			Incarnation: offer.Incarnation, Snapshot: &meta}
		if err := d.core.Step(m); err != nil {
			d.stepRefused(m, err)
		}
		return fmt.Errorf("refused: snapshot %d is not beyond this node's commit index %d (told the leader)", offer.Meta.Index, st.Commit)
	}
	return nil
}

// snapSink receives one snapshot's data (SnapshotSink).
type snapSink struct {
	d        *Driver
	offer    SnapshotOffer
	w        *storage.SnapshotWriter
	pw       *io.PipeWriter
	verified chan error // the state machine's verdict, once
	start    time.Time  // when the offer was taken (Observer.SnapshotReceived)

	mu   sync.Mutex
	done bool  // finished or aborted
	err  error // why it was aborted
}

// Write writes p to the file and hands it to the verifying state machine.
func (s *snapSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return 0, s.err
	}
	rc := &s.d.receiving
	rc.writes.Add(1)
	for prev := rc.largestWrite.Load(); int64(len(p)) > prev && !rc.largestWrite.CompareAndSwap(prev, int64(len(p))); prev = rc.largestWrite.Load() {
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	if _, err := s.pw.Write(p); err != nil {
		// The state machine stopped reading: it refused the stream, or
		// its stream ended before this data.
		return 0, s.refused(err)
	}
	return len(p), nil
}

// finish waits for the state machine's verdict, makes the file durable and
// steps the snapshot into the core; it returns once the core took it.
func (s *snapSink) finish(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return s.err
	}
	s.pw.Close()
	var verr error
	select {
	case verr = <-s.verified:
	case <-ctx.Done():
		return fmt.Errorf("verify snapshot %d: %w", s.offer.Meta.Index, ctx.Err())
	}
	if verr != nil {
		return s.refused(verr)
	}
	if (s.w.Size() != s.offer.Size || s.w.Checksum() != s.offer.Checksum) && !driverbugs.On.InstallUnverified { // injected bug (driverbugs)
		return s.refused(fmt.Errorf("the file holds %d bytes with CRC-32C %08x, the offer %d bytes with %08x",
			s.w.Size(), s.w.Checksum(), s.offer.Size, s.offer.Checksum))
	}
	// Durable before the core hears of it: the core's next Ready
	// installs it, and the node may crash right after.
	if err := s.w.Commit(); err != nil {
		return fmt.Errorf("write snapshot %d: %w", s.offer.Meta.Index, err)
	}
	s.done, s.err = true, errSnapshotAbandoned
	s.d.receiving.clear(s)
	meta := s.offer.Meta
	m := raft.Message{Type: raft.MsgSnap, From: s.offer.From, To: s.d.cfg.ID, Term: s.offer.Term,
		Incarnation: s.offer.Incarnation, Snapshot: &meta}
	_, err := onLoop(ctx, s.d, func() struct{} {
		if err := s.d.core.Step(m); err != nil {
			s.d.stepRefused(m, err)
		}
		return struct{}{}
	})
	if err != nil {
		return fmt.Errorf("hand snapshot %d to the core: %w", meta.Index, err)
	}
	s.d.log.Info("received a snapshot from the leader", "from", s.offer.From, "index", meta.Index, "bytes", s.offer.Size)
	return nil
}

// refused records that the snapshot failed a check after its data came:
// it is discarded, the node keeps its state, and the leader tries again.
// Called with mu held.
func (s *snapSink) refused(err error) error {
	err = fmt.Errorf("refused snapshot %d/%d from node %d: %w", s.offer.Meta.Index, s.offer.Meta.Term, s.offer.From, err)
	s.abortLocked(err)
	rc := &s.d.receiving
	rc.refused.Add(1)
	now := s.d.clock.Now().UnixNano()
	if last := rc.lastWarn.Load(); now-last >= int64(refusalLogEvery) && rc.lastWarn.CompareAndSwap(last, now) {
		s.d.log.Warn("refused a snapshot from the leader that failed verification: this node keeps its state and the leader "+
			"sends the snapshot again; if this repeats, the leader's snapshot may be damaged", "error", err)
	}
	return err
}

// Abort discards the snapshot (SnapshotSink).
func (s *snapSink) Abort() { s.abort(errSnapshotAbandoned) }

func (s *snapSink) abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortLocked(err)
}

func (s *snapSink) abortLocked(err error) {
	if s.done {
		return
	}
	s.done, s.err = true, err
	s.pw.CloseWithError(err)
	if aerr := s.w.Abort(); aerr != nil {
		s.d.log.Warn("discarding a partial snapshot", "error", aerr)
	}
	s.d.receiving.clear(s)
}

// stop refuses further transfers and abandons the one under way (the
// node is closing), so that its goroutines end.
func (rc *snapshotReceiving) stop() {
	rc.mu.Lock()
	rc.closed = true
	cur := rc.current
	rc.mu.Unlock()
	if cur != nil {
		cur.abort(ErrStopped)
	}
}

// clear forgets s as the transfer under way.
func (rc *snapshotReceiving) clear(s *snapSink) {
	rc.mu.Lock()
	if rc.current == s {
		rc.current = nil
	}
	rc.mu.Unlock()
}

// installSnapshot restores the state machine from the snapshot the core
// installed (and handleReady saved): a bootstrap snapshot from its data,
// a leader's from the file the receiver wrote, as a stream.
func (d *Driver) installSnapshot(sn raft.Snapshot) error {
	var err error
	if sn.Data != nil {
		err = d.restore(sn)
	} else {
		err = d.restoreStored(sn.Meta)
	}
	if err != nil {
		return err
	}
	d.loop.snapIndex = sn.Meta.Index
	d.failStaleProposals(sn.Meta.Index)
	if d.loop.bootstrapping && sn.Data != nil {
		d.loop.bootstrapping = false
		d.log.Info("bootstrapped a new cluster with every initial member (all answered, none held data)",
			"members", sn.Meta.ConfState.Voters)
		return nil
	}
	d.loop.installed++
	d.log.Info("installed a snapshot from the leader", "index", sn.Meta.Index)
	d.checkCounted(sn.Meta.ConfState)
	return nil
}

// ReceiveStats counts what the snapshot receiver did.
type ReceiveStats struct {
	// Refused counts the snapshots refused after their data arrived (a
	// checksum or the state machine's verification failed).
	Refused uint64
	// Writes counts the writes of snapshot data taken, LargestWrite the
	// largest in bytes: nothing here copies a write, so that is the most
	// of a snapshot the receiver holds in memory at once.
	Writes       uint64
	LargestWrite int64
}

// ReceiveStats returns the snapshot receiver's counters.
func (d *Driver) ReceiveStats() ReceiveStats {
	rc := &d.receiving
	return ReceiveStats{Refused: rc.refused.Load(), Writes: rc.writes.Load(), LargestWrite: rc.largestWrite.Load()}
}
