package nodesim

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/capraft/capraft/e2e/history"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
)

// Simulated clients. Each runs one operation at a time against a node it
// picks (mostly the one it believes leads), through the driver's own
// request path as the key-value service uses it: a write is a session
// batch command (kv.Command) proposed with Propose, retried with the same
// session and sequence number whenever its outcome is unknown, so the
// session makes it exactly-once; a linearizable read waits for
// ReadBarrier and then reads the node's store; a serializable read reads
// the store at once. Linearizable operations go into a porcupine history
// (a write whose outcome stays unknown is pending forever); every read is
// also checked against the log prefix the replica had applied.

type opKind int

const (
	opOpen opKind = iota // open a session
	opPut                // session write
	opGet                // linearizable read
	opSGet               // serializable read
	opCAS                // session compare-and-swap
)

func (k opKind) String() string {
	return [...]string{"open", "put", "get", "sget", "cas"}[k]
}

// maxTries bounds the attempts of one operation.
const maxTries = 8

type client struct {
	id      int
	session uint64
	seq     uint64 // the last sequence number used
	nops    int
	nextAt  time.Time // when the next operation starts (no operation in flight)
	op      *pendingOp
	stopped bool // no new operations (the chaos is over)
	// parked are the writes given up on during the chaos whose outcome
	// is still unknown: once healed, the client retries each with its
	// session and sequence number, which makes the outcome known (the
	// session answers with the saved result, or applies it now).
	parked []*pendingOp
	// seen is the value the client last saw for each key ("" absent):
	// what its compare-and-swaps expect.
	seen map[string]string
}

type pendingOp struct {
	// id identifies the client operation, whatever the sequence numbers
	// its attempts use.
	id         uint64
	kind       opKind
	key, value string
	// session is the session a write was made in; resumed: it was
	// parked and is retried after healing.
	session uint64
	resumed bool
	// uncertain: an attempt was lost or failed with an outcome unknown,
	// so its sequence number may have been applied: every later attempt
	// keeps it.
	uncertain bool
	// expect is what a compare-and-swap expects ("": the key absent).
	expect   string
	seq      uint64
	call     int64 // history clock at the call
	tries    int
	attempt  int
	node     uint64
	epoch    int
	deadline time.Time // the attempt in flight is lost by then
	retryAt  time.Time // the next attempt starts then (zero: one is in flight)
	// The attempt's answer, set by the driver's callback.
	answered bool
	res      driver.Result
	readErr  error
}

// wakeAt is when the client next has something to do (zero: nothing).
func (cl *client) wakeAt() time.Time {
	switch op := cl.op; {
	case op == nil && cl.stopped:
		return time.Time{}
	case op == nil:
		return cl.nextAt
	case !op.retryAt.IsZero():
		return op.retryAt
	default:
		return op.deadline
	}
}

func (c *cluster) historyTick() int64 {
	c.hclock++
	return c.hclock
}

// runClients lets every client act on what happened.
func (c *cluster) runClients() {
	for _, cl := range c.clients {
		if c.err != nil {
			return
		}
		c.clientStep(cl)
	}
}

func (c *cluster) clientStep(cl *client) {
	op := cl.op
	switch {
	case op == nil && cl.stopped && len(cl.parked) > 0:
		op, cl.parked = cl.parked[0], cl.parked[1:]
		op.resumed, op.tries, op.retryAt = true, 0, time.Time{}
		cl.op = op
		c.event("client %d: resumes %v %s %s seq %d", cl.id, op.kind, op.key, op.value, op.seq)
		c.attempt(cl)
	case op == nil:
		if cl.stopped || c.now.Before(cl.nextAt) {
			return
		}
		cl.op = c.newOp(cl)
		c.attempt(cl)
	case !op.retryAt.IsZero():
		if !c.now.Before(op.retryAt) {
			c.attempt(cl)
		}
	case op.answered:
		c.answered(cl)
	case !c.now.Before(op.deadline) || c.current(op.node, op.epoch) == nil:
		// No answer: the node crashed or the request is lost.
		c.event("client %d: %v attempt %d at node %d lost", cl.id, op.kind, op.attempt, op.node)
		op.uncertain = true
		c.retry(cl)
	}
}

func (c *cluster) newOp(cl *client) *pendingOp {
	if cl.session == 0 {
		return &pendingOp{kind: opOpen}
	}
	cl.nops++
	c.opID++
	op := &pendingOp{id: c.opID, key: fmt.Sprintf("k%d", c.rng.IntN(c.opts.Keys)), session: cl.session}
	switch r := c.rng.IntN(20); {
	case r < 7:
		cl.seq++
		op.kind, op.seq, op.value = opPut, cl.seq, c.value(cl)
	case r < 10:
		cl.seq++
		op.kind, op.seq, op.value = opCAS, cl.seq, c.value(cl)
		op.expect = cl.seen[op.key]
	case r < 17:
		op.kind = opGet
	default:
		op.kind = opSGet
	}
	op.call = c.historyTick()
	return op
}

// pickNode picks the node for an attempt: the leader, mostly.
func (c *cluster) pickNode() *node {
	if l := c.leader(); l != nil && c.rng.IntN(4) != 0 {
		return l
	}
	up := c.upNodes()
	if len(up) == 0 {
		return nil
	}
	return up[c.rng.IntN(len(up))]
}

// attempt makes the next attempt of cl's operation.
func (c *cluster) attempt(cl *client) {
	op := cl.op
	n := c.pickNode()
	if n == nil {
		op.retryAt = c.now.Add(20 * time.Millisecond)
		return
	}
	op.tries++
	op.attempt++
	op.node, op.epoch = n.id, n.epoch
	op.deadline = c.now.Add(2 * requestTimeout)
	op.retryAt = time.Time{}
	op.answered, op.res, op.readErr = false, driver.Result{}, nil
	a := op.attempt
	c.event("client %d: %v %s %s seq %d attempt %d at node %d", cl.id, op.kind, op.key, op.value, op.seq, a, n.id)
	c.dirty = true
	switch op.kind {
	case opOpen:
		c.cmdID++
		cmd := kv.Command{Kind: kv.CmdOpenSession, ID: c.cmdID, Time: c.now.UnixNano()}
		c.propose(n, cmd.AppendBinary(nil), c.later(n, func(r driver.Result) {
			if op.attempt == a {
				op.answered, op.res = true, r
			}
		}))
	case opPut, opCAS:
		c.cmdID++
		w := kv.WriteOp{Seq: op.seq, Type: kv.OpPut, Key: []byte(op.key), Value: []byte(op.value)}
		if op.kind == opCAS {
			w.Type, w.Compare, w.CompareValue = kv.OpCAS, kv.CompareValue, []byte(op.expect)
			if op.expect == "" {
				w.Compare, w.CompareValue = kv.CompareAbsent, nil
			}
		}
		cmd := kv.Command{Kind: kv.CmdBatch, ID: c.cmdID, Time: c.now.UnixNano(), Session: op.session, AckedBelow: cl.ackedBelow(op),
			Ops: []kv.WriteOp{w}}
		c.checker.puts[c.cmdID] = putInfo{session: op.session, seq: op.seq, key: op.key, value: op.value, cas: op.kind == opCAS, op: op.id}
		c.propose(n, cmd.AppendBinary(nil), c.later(n, func(r driver.Result) {
			if op.attempt == a {
				op.answered, op.res = true, r
			}
		}))
	case opGet:
		if c.opts.bugs.readWithoutBarrier {
			op.answered = true
			return
		}
		n.d.ReadBarrier(c.laterErr(n, func(err error) {
			if op.attempt == a {
				op.answered, op.readErr = true, err
			}
		}))
	case opSGet:
		c.stats.SerializableReads++
		c.read(n, op.key)
		c.done(cl)
	}
}

// read reads key from n's store and records it for the prefix check.
func (c *cluster) read(n *node, key string) (found bool, value string) {
	kvp, found, _ := n.kv.Get([]byte(key))
	c.checker.reads = append(c.checker.reads, readCheck{node: n.id, key: key, applied: n.kv.AppliedIndex(), found: found, value: string(kvp.Value)})
	return found, string(kvp.Value)
}

// answered handles the answer to the attempt in flight.
func (c *cluster) answered(cl *client) {
	op := cl.op
	switch op.kind {
	case opOpen:
		if ap, ok := op.res.Value.(*kv.Applied); ok && op.res.Err == nil && ap.Err == nil {
			c.unpark(cl)
			cl.session = ap.Session
			c.event("client %d: session %d", cl.id, ap.Session)
			c.done(cl)
			return
		}
		c.event("client %d: open: %v", cl.id, op.res.Err)
		c.retry(cl)
	case opPut, opCAS:
		if op.res.Err != nil && c.opts.bugs.ackFailedWrites {
			c.stats.Acked++
			c.record(cl, op, history.Output{})
			c.done(cl)
			return
		}
		if op.res.Err != nil {
			c.event("client %d: put seq %d: %v", cl.id, op.seq, op.res.Err)
			switch {
			case !notApplied(op.res.Err):
				op.uncertain = true
			case !op.uncertain && !op.resumed && op.session == cl.session:
				// Not applied, and never will be, nor was any attempt
				// before: the client may write again as a new write,
				// with a new sequence number (a driver that says so of
				// a write it may have applied makes it apply twice:
				// exactly-once checks it).
				cl.seq++
				op.seq = cl.seq
			}
			c.retry(cl)
			return
		}
		ap, ok := op.res.Value.(*kv.Applied)
		if !ok || ap.Err != nil || len(ap.Results) != 1 {
			c.failf("client %d: put seq %d: unexpected result %#v", cl.id, op.seq, op.res.Value)
			return
		}
		switch r := ap.Results[0]; r.Code {
		case kv.OK:
			c.stats.Acked++
			c.event("client %d: %v %s=%s acked (rev %d, succeeded %v)", cl.id, op.kind, op.key, op.value, r.Revision, r.Succeeded)
			switch {
			case op.kind == opPut || r.Succeeded:
				cl.see(op.key, op.value)
			case r.Found:
				cl.see(op.key, string(r.Prev.Value))
			default:
				cl.see(op.key, "")
			}
			c.record(cl, op, history.Output{OK: r.Succeeded})
			c.done(cl)
		default:
			// The session expired or forgot the result: what an
			// earlier attempt did is unknown.
			c.event("client %d: put seq %d: %v %s", cl.id, op.seq, r.Code, r.Message)
			cl.session = 0
			c.giveUp(cl)
			c.unpark(cl)
		}
	case opGet:
		n := c.current(op.node, op.epoch)
		if op.readErr != nil || n == nil {
			c.event("client %d: get %s: %v", cl.id, op.key, op.readErr)
			c.retry(cl)
			return
		}
		c.stats.Reads++
		found, value := c.read(n, op.key)
		cl.see(op.key, value)
		c.event("client %d: get %s = %v %s", cl.id, op.key, found, value)
		c.record(cl, op, history.Output{Found: found, Value: value})
		c.done(cl)
	}
}

// notApplied reports whether err says that a proposal was not applied
// and never will be.
func notApplied(err error) bool {
	return errors.Is(err, driver.ErrDropped) || errors.Is(err, driver.ErrNotLeader)
}

// retry schedules another attempt, or gives up after maxTries.
func (c *cluster) retry(cl *client) {
	op := cl.op
	if op.tries >= maxTries {
		c.giveUp(cl)
		return
	}
	op.retryAt = c.now.Add(c.between(5*time.Millisecond, 40*time.Millisecond))
}

// giveUp ends an operation without a known outcome: a write stays
// pending forever in the history, a read tells nothing.
func (c *cluster) giveUp(cl *client) {
	op := cl.op
	c.event("client %d: gives up %v %s %s", cl.id, op.kind, op.key, op.value)
	switch op.kind {
	case opPut, opCAS:
		if !op.resumed && op.session == cl.session && cl.session != 0 {
			cl.parked = append(cl.parked, op)
			break
		}
		c.stats.Unknown++
		c.record(cl, op, history.Output{Unknown: true})
	case opGet:
		c.stats.FailedReads++
	}
	c.done(cl)
}

func (c *cluster) done(cl *client) {
	cl.op = nil
	cl.nextAt = c.now.Add(c.between(0, c.opts.Think))
}

// record adds a finished linearizable operation to the history.
func (c *cluster) record(cl *client, op *pendingOp, out history.Output) {
	in := history.Input{Kind: history.Get, Key: op.key}
	switch op.kind {
	case opPut:
		in = history.Input{Kind: history.Put, Key: op.key, Value: op.value}
	case opCAS:
		in = history.Input{Kind: history.CAS, Key: op.key, Value: op.value, Expect: op.expect, ExpectAbsent: op.expect == ""}
	}
	ret := int64(math.MaxInt64)
	if !out.Unknown {
		ret = c.historyTick()
	}
	c.checker.history = append(c.checker.history, porcupine.Operation{ClientId: cl.id, Input: in, Call: op.call, Output: out, Return: ret})
}

// finishClients stops new operations and waits for those in flight.
func (c *cluster) finishClients() error {
	for _, cl := range c.clients {
		cl.stopped = true
	}
	idle := func() bool {
		for _, cl := range c.clients {
			if cl.op != nil || len(cl.parked) > 0 {
				return false
			}
		}
		return true
	}
	if !c.runUntil(c.now.Add(4*maxTries*3*requestTimeout), idle) {
		if c.err != nil {
			return c.err
		}
		return errors.New("liveness: the clients' operations do not finish after healing")
	}
	return nil
}

// see records the value the client saw for key ("": absent).
func (cl *client) see(key, value string) {
	if cl.seen == nil {
		cl.seen = map[string]string{}
	}
	cl.seen[key] = value
}

// value returns a value no other write writes: the client's id and
// operation count, padded to Options.ValueSize.
func (c *cluster) value(cl *client) string {
	v := fmt.Sprintf("c%d.%d", cl.id, cl.nops)
	if pad := c.opts.ValueSize - len(v); pad > 0 {
		v += "." + strings.Repeat("x", pad-1)
	}
	return v
}

// ackedBelow is the AckedBelow of a write: the session may forget the
// results below op's sequence number, but not those of parked writes.
func (cl *client) ackedBelow(op *pendingOp) uint64 {
	ack := op.seq
	for _, p := range cl.parked {
		if p.session == op.session {
			ack = min(ack, p.seq)
		}
	}
	return ack
}

// unpark gives up for good on the parked writes: their session is gone,
// so their outcome stays unknown.
func (c *cluster) unpark(cl *client) {
	for _, op := range cl.parked {
		c.stats.Unknown++
		c.record(cl, op, history.Output{Unknown: true})
	}
	cl.parked = nil
}
