package driver

import (
	"errors"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
)

// Peers that are authenticated can still be stale or buggy: the core
// refuses their messages that it may not hear (raft's "Who is heard"),
// the receiver refuses snapshots that fail verification
// (snapshot_receive.go), and the node says so here, at most once per
// sender per refusalLogEvery, so a peer that keeps sending cannot flood
// the log.

const (
	// refusalLogEvery is how often, at most, one sender's refused
	// messages are logged.
	refusalLogEvery = 10 * time.Second
	// maxRefusalSenders bounds the senders remembered for rate limiting;
	// past it the memory starts over (a few more lines, never more memory).
	maxRefusalSenders = 256
)

// refusalLog rate-limits the warnings about refused peer messages. Owned
// by the loop goroutine.
type refusalLog struct {
	bySender map[uint64]*refusalCount
}

type refusalCount struct {
	logged     time.Time
	suppressed int // refusals not logged since logged
}

// allow reports whether a refusal from sender may be logged at now, and
// how many went unlogged since the last one that was.
func (l *refusalLog) allow(sender uint64, now time.Time) (ok bool, suppressed int) {
	if l.bySender == nil || len(l.bySender) >= maxRefusalSenders {
		l.bySender = make(map[uint64]*refusalCount)
	}
	c := l.bySender[sender]
	if c == nil {
		l.bySender[sender] = &refusalCount{logged: now}
		return true, 0
	}
	if now.Sub(c.logged) < refusalLogEvery {
		c.suppressed++
		return false, 0
	}
	suppressed = c.suppressed
	c.logged, c.suppressed = now, 0
	return true, suppressed
}

// stepRefused reports why the core refused peer message m (Step's error):
// a warning, rate-limited per sender, when it means something is wrong
// with a peer or the data it sent; debug otherwise (malformed or stale
// messages, which a healthy cluster produces too).
func (d *Driver) stepRefused(m raft.Message, err error) {
	var what string
	switch {
	case errors.Is(err, raft.ErrNotMember):
		what = "ignored a Raft message from a node that is not a member of this node's configuration " +
			"(a removed or misconfigured node; check its --id and the member list)"
	case errors.Is(err, raft.ErrNotFromLeader) && m.Type == raft.MsgTimeoutNow:
		what = "ignored a TimeoutNow that did not come from the leader of this term: only the leader hands over leadership"
	default:
		d.log.Debug("ignored a peer message", "msg", m.String(), "error", err)
		return
	}
	ok, suppressed := d.loop.refusals.allow(m.From, d.clock.Now())
	if !ok {
		return
	}
	args := []any{"from", m.From, "type", m.Type.String(), "term", m.Term, "error", err}
	if suppressed > 0 {
		args = append(args, "more_since_last_logged", suppressed)
	}
	d.log.Warn(what, args...)
}
