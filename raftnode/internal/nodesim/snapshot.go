package nodesim

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/storage"
)

// Snapshot transfers, as the real transport runs them beside the
// messages: a leader's MsgSnap (metadata only) starts one; the sender
// opens the stored snapshot it names, offers it to the follower's driver
// (ReceiveSnapshot), streams it in writes spread over simulated time
// (each a chance for the network, a crash or a freeze to get in the
// way), checks size and checksum end to end and finishes; the outcome
// reaches the sender's driver as ReportSnapshot. One transfer per
// follower: a new MsgSnap replaces the one under way (never reported),
// unless it names the same snapshot in the same term.

// A transfer's writes are small, so that a transfer spans several
// instants, and at most maxChunks (a large state must still arrive
// within a bounded time).
const (
	minSnapshotChunk = 128
	maxChunks        = 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// transfer is a snapshot transfer under way.
type transfer struct {
	from, to  uint64
	fromEpoch int
	toEpoch   int
	term      uint64
	offer     driver.SnapshotOffer
	src       *storage.SnapshotReader
	sink      driver.SnapshotSink
	n         uint64
	sum       uint32 // of what the follower received
	buf       []byte
	// damageAt is the offset of a byte the network damages (-1: none);
	// damaged says it was.
	damageAt int64
	damaged  bool
	// cancelled: the sender stopped leading, or a newer transfer to the
	// same follower replaced this one; it ends unreported.
	cancelled bool
}

func (c *cluster) startTransfer(ev *netEvent) {
	from := c.current(ev.from, ev.epoch)
	if ev.cancelled || from == nil {
		return // the sender no longer leads, or crashed: nobody to report to
	}
	meta := ev.msg.Snapshot
	for _, tr := range c.transfers {
		if tr.from == ev.from && tr.to == ev.to && !tr.cancelled {
			if tr.term == ev.msg.Term && tr.offer.Meta.Index == meta.Index && tr.offer.Meta.Term == meta.Term {
				return // the same transfer, asked for again
			}
			tr.cancelled = true
		}
	}
	c.stats.SnapshotsSent++
	fail := func(err error) {
		c.stats.SnapshotsFailed++
		c.event("snapshot %d>%d at %d/%d: %v", ev.from, ev.to, meta.Index, meta.Term, err)
		c.schedule(&netEvent{kind: evSnapDone, from: ev.from, to: ev.to, epoch: ev.epoch, msg: ev.msg, err: err}, c.delay())
	}
	to := c.reachable(ev.from, ev.to)
	if to == nil || to.paused() {
		fail(errors.New("follower unreachable"))
		return
	}
	src, err := from.store.OpenSnapshot(meta.Index, meta.Term)
	if err != nil {
		fail(fmt.Errorf("open snapshot: %w", err))
		return
	}
	offer := driver.SnapshotOffer{From: ev.from, Term: ev.msg.Term, Incarnation: ev.msg.Incarnation,
		Meta: src.Meta(), Size: uint64(src.Size()), Checksum: src.Checksum()}
	sink, err := to.d.ReceiveSnapshot(context.Background(), offer)
	if err != nil {
		src.Close()
		fail(fmt.Errorf("offer refused: %w", err))
		return
	}
	tr := &transfer{from: ev.from, to: ev.to, fromEpoch: ev.epoch, toEpoch: to.epoch, term: ev.msg.Term,
		offer: offer, src: src, sink: sink, buf: make([]byte, max(minSnapshotChunk, offer.Size/maxChunks+1)), damageAt: -1}
	if c.lossy && offer.Size > 0 && c.rng.Float64() < c.opts.DamageSnapP {
		tr.damageAt = c.rng.Int64N(int64(offer.Size))
	}
	c.transfers = append(c.transfers, tr)
	c.event("snapshot %d>%d at %d/%d: offered %d bytes", ev.from, ev.to, meta.Index, meta.Term, offer.Size)
	c.schedule(&netEvent{kind: evSnapChunk, tr: tr}, c.between(0, 2*time.Millisecond))
}

// transferChunk makes a transfer's next write, or ends it.
func (c *cluster) transferChunk(tr *transfer) {
	if c.current(tr.from, tr.fromEpoch) == nil || tr.cancelled {
		c.endTransfer(tr, nil, false)
		return
	}
	to := c.current(tr.to, tr.toEpoch)
	switch {
	case to == nil:
		c.endTransfer(tr, errors.New("the follower crashed"), true)
		return
	case c.cut[[2]uint64{tr.from, tr.to}] || (c.lossy && c.rng.Float64() < c.opts.DropP/4):
		c.endTransfer(tr, errors.New("connection lost"), true)
		return
	case to.paused():
		// The follower's process is frozen: the stream waits.
		c.schedule(&netEvent{kind: evSnapChunk, tr: tr}, time.Millisecond)
		return
	}
	k, rerr := tr.src.Read(tr.buf)
	if k > 0 {
		if off := tr.damageAt - int64(tr.n); off >= 0 && off < int64(k) {
			// The network flips a bit (the sender's file is intact).
			tr.buf[off] ^= 1 << c.rng.IntN(8)
			tr.damaged = true
			c.stats.SnapshotsDamaged++
		}
		tr.n += uint64(k)
		tr.sum = crc32.Update(tr.sum, castagnoli, tr.buf[:k])
		if _, err := tr.sink.Write(tr.buf[:k]); err != nil {
			c.endTransfer(tr, fmt.Errorf("write: %w", err), true)
			return
		}
	}
	switch {
	case rerr == nil:
		c.schedule(&netEvent{kind: evSnapChunk, tr: tr}, c.between(0, 2*time.Millisecond))
		return
	case !errors.Is(rerr, io.EOF):
		c.endTransfer(tr, fmt.Errorf("read snapshot: %w", rerr), true)
		return
	}
	// The receiving transport checks size and checksum end to end,
	// unless the simulation leaves that to the driver alone.
	if !c.opts.SkipTransportChecksum && (tr.n != tr.offer.Size || tr.sum != tr.offer.Checksum) {
		c.endTransfer(tr, fmt.Errorf("received %d bytes with CRC-32C %08x, offered %d with %08x", tr.n, tr.sum, tr.offer.Size, tr.offer.Checksum), true)
		return
	}
	if err := tr.sink.Finish(context.Background()); err != nil {
		if tr.damaged {
			c.stats.DamageRefused++
		}
		c.endTransfer(tr, fmt.Errorf("finish: %w", err), true)
		return
	}
	if tr.damaged {
		c.failf("node %d took a snapshot (%d/%d from node %d) that the network damaged", tr.to, tr.offer.Meta.Index, tr.offer.Meta.Term, tr.from)
		return
	}
	c.dirty = true
	c.endTransfer(tr, nil, true)
}

// endTransfer ends tr (err nil: the follower took it) and, if report,
// tells the sender how it ended.
func (c *cluster) endTransfer(tr *transfer, err error, report bool) {
	if err != nil {
		tr.sink.Abort()
		c.stats.SnapshotsFailed++
	}
	tr.src.Close()
	c.transfers = slices.DeleteFunc(c.transfers, func(t *transfer) bool { return t == tr })
	c.event("snapshot %d>%d at %d/%d ends: %v (reported %v)", tr.from, tr.to, tr.offer.Meta.Index, tr.offer.Meta.Term, err, report)
	if report {
		m := tr.offer.Meta
		c.schedule(&netEvent{kind: evSnapDone, from: tr.from, to: tr.to, epoch: tr.fromEpoch, index: m.Index, err: err}, c.delay())
	}
}

// abortTransfers ends the transfers to or from n, which crashed: a
// receiver's sink is abandoned (its verifying goroutine ends), the
// sender learns of the failure when it is still there.
func (c *cluster) abortTransfers(n *node) {
	for _, tr := range slices.Clone(c.transfers) {
		switch {
		case tr.to == n.id:
			c.endTransfer(tr, errors.New("the follower crashed"), c.current(tr.from, tr.fromEpoch) != nil)
		case tr.from == n.id:
			c.endTransfer(tr, errors.New("the sender crashed"), false)
		}
	}
}
