package services

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// The KV request path. One mechanism serves every request, inline or
// not: execute never waits. Its writes are proposed and its
// linearizable reads wait for a read barrier through callbacks of the
// driver; the last of them to arrive completes the request (on the
// driver's loop, mostly: that is the fast inline completion), reads what
// the request reads, and hands the results on. Only what must wait takes
// a goroutine: handing the request to the leader (forward), and ranges,
// which may read megabytes and are read off the loop.

// kvRequest is one request's operations as a KV method received them.
type kvRequest struct {
	// ctx is the call's: it bounds handing the request to the leader.
	ctx                 context.Context
	session, ackedBelow uint64
	ops                 []kvwire.Op
	// forwarded marks a request a follower handed over: it is never
	// handed on again, so two nodes with different ideas of the leader
	// cannot bounce a request between them.
	forwarded bool
	// release, if set, is called once ops are no longer needed (their
	// keys and values point into the call's arguments), before done.
	release func()
}

// execute runs req and calls done with one result per operation, exactly
// once: at once, or from the driver's callbacks, or from a goroutine.
// Within the request timeout, or the writes are answered outcomeUnknown
// (they may still be applied) and the linearizable reads timeout.
func (sv *Server) execute(req kvRequest, done func([]kvResult)) {
	ops := req.ops
	x := &execution{sv: sv, req: req, done: done}
	x.writes = x.writeBuf[:0]
	switch {
	case len(ops) == 0:
		x.answer(nil)
		return
	case sv.d.Stopped():
		// A stopped node no longer follows the log: even serializable
		// reads would serve an ever staler state.
		x.answer(fillAll(make([]kvResult, len(ops)), sv.d.StoppedError(), 0))
		return
	}
	for i := range ops {
		switch o := &ops[i]; {
		case o.IsWrite():
			x.writes = append(x.writes, i)
		case !o.Serializable:
			x.linear = true
		}
		x.ranges = x.ranges || ops[i].Kind == kvwire.Range || ops[i].Kind == kvwire.Txn
	}
	if len(x.writes) > 0 && !sv.d.IsLeader() {
		if req.forwarded {
			x.answer(fillAll(make([]kvResult, len(ops)), driver.ErrNotLeader, sv.d.Leader()))
			return
		}
		go x.forward()
		return
	}
	propose := len(x.writes) > 0 && req.session != 0
	if propose {
		x.parts++
	}
	if x.linear {
		x.parts++
	}
	if x.parts == 0 {
		x.complete(false)
		return
	}
	x.timer = time.AfterFunc(sv.cfg.RequestTimeout, x.expire)
	if propose {
		sv.submit(writeCommand(req.session, req.ackedBelow, ops, x.writes), x.proposed)
	}
	if x.linear {
		sv.d.ReadBarrier(x.readable)
	}
}

// executeWait is execute, waited for.
func (sv *Server) executeWait(req kvRequest) []kvResult {
	ch := make(chan []kvResult, 1)
	sv.execute(req, func(rs []kvResult) { ch <- rs })
	return <-ch
}

// execution is a request under way: it joins the outcome of its
// proposal and of its read barrier, and whichever completes it (the last
// of them, the request timeout, or a hand-over to the leader) does so
// once.
type execution struct {
	sv   *Server
	req  kvRequest
	done func([]kvResult)

	writes   []int // the positions of the writes among the operations
	writeBuf [4]int
	// linear: there are linearizable reads; ranges: there are ranges,
	// read off the loop.
	linear, ranges bool
	timer          *time.Timer // answers what is late (expire)

	mu       sync.Mutex
	parts    int  // outcomes still awaited: the proposal's, the read barrier's
	finished bool // completed (or handed over): later outcomes are dropped
	wrote    bool // the proposal's outcome is in written
	written  driver.Result
	read     bool // the read barrier's outcome is in readErr
	readErr  error
}

// proposed receives the outcome of the request's writes.
func (x *execution) proposed(r driver.Result) {
	x.mu.Lock()
	if x.finished {
		x.mu.Unlock()
		return
	}
	if errors.Is(r.Err, driver.ErrNotLeader) && !x.req.forwarded {
		// Leadership moved between the check and the proposal; nothing
		// was appended, so handing the request on is safe.
		x.finished = true
		x.mu.Unlock()
		x.timer.Stop()
		go x.forward()
		return
	}
	x.wrote, x.written = true, r
	x.arrived()
}

// readable receives the outcome of the request's read barrier.
func (x *execution) readable(err error) {
	x.mu.Lock()
	if x.finished {
		x.mu.Unlock()
		return
	}
	x.read, x.readErr = true, err
	x.arrived()
}

// arrived counts an outcome in, with x.mu held, which it releases, and
// completes the request with the last.
func (x *execution) arrived() {
	x.parts--
	last := x.parts == 0
	x.finished = x.finished || last
	x.mu.Unlock()
	if last {
		x.timer.Stop()
		x.complete(false)
	}
}

// expire completes the request after the request timeout with what has
// arrived: a write not answered may still be applied later (its outcome
// is unknown), a read not confirmed timed out.
func (x *execution) expire() {
	x.mu.Lock()
	if x.finished {
		x.mu.Unlock()
		return
	}
	x.finished = true
	if !x.wrote {
		x.written = driver.Result{Err: driver.ErrOutcomeUnknown}
	}
	if !x.read {
		x.readErr = driver.ErrTimeout
	}
	x.mu.Unlock()
	x.complete(true)
}

// complete fills the results and answers. ownGoroutine says it runs on a
// goroutine of its own (the timer's); otherwise a request with ranges
// continues on one, off the loop and the connection.
func (x *execution) complete(ownGoroutine bool) {
	if x.ranges && !ownGoroutine {
		go x.complete(true)
		return
	}
	ops := x.req.ops
	results := make([]kvResult, len(ops))
	switch {
	case len(x.writes) == 0:
	case x.req.session == 0:
		for _, i := range x.writes {
			results[i].err = errNoSession
		}
	default:
		x.sv.fillWrites(results, x.writes, applied(x.written.Value), x.written.Err)
	}
	x.sv.readAll(ops, results, x.readErr)
	x.answer(results)
}

// forward hands the request to the leader, on a goroutine of its own.
func (x *execution) forward() {
	r := x.req
	x.answer(x.sv.forward(r.ctx, r.session, r.ackedBelow, r.ops))
}

// answer releases the operations and hands results on.
func (x *execution) answer(results []kvResult) {
	if x.req.release != nil {
		x.req.release()
	}
	x.done(results)
}

// readAll serves the reads among ops into results; readErr, if not nil,
// fails the linearizable ones.
func (sv *Server) readAll(ops []kvwire.Op, results []kvResult, readErr error) {
	served := 0 // bytes of keys and values read so far
	for i := range ops {
		o := &ops[i]
		if o.IsWrite() {
			if o.Kind == kvwire.Txn && results[i].err == nil && results[i].w.Code == kv.OK {
				// Its reads ran as it was applied; they count here.
				results[i].txn = txnResults(o, &results[i].w, &served)
			}
			continue
		}
		if readErr != nil && !o.Serializable {
			results[i].err = readErr
			results[i].leaderHint = sv.d.Leader()
			continue
		}
		if served > maxBatchReadBytes {
			// The answer must fit in one message: the client sends the
			// remaining reads again in a later batch.
			results[i].err = errBatchFull
			continue
		}
		sv.read(o, &results[i], &served)
	}
}

// read serves a read from the local state machine and adds the bytes it
// read to served.
func (sv *Server) read(o *kvwire.Op, r *kvResult, served *int) {
	switch o.Kind {
	case kvwire.Get:
		r.kv, r.found, r.rev = sv.kv.Get(o.Key)
	case kvwire.Range:
		r.kvs, r.more, r.rev = sv.kv.Range(o.Key, o.After, int(o.Limit))
		r.kvs, r.more = cutPage(r.kvs, r.more)
	case kvwire.Txn:
		r.w = sv.kv.ReadTxn(kvTxn(o))
		r.rev = r.w.Revision
		if r.w.Code == kv.OK {
			r.txn = txnResults(o, &r.w, served) // counts what it read
		}
		return
	}
	*served += resultBytes(r)
}

// cutPage cuts a range page larger than a client's message limit, which
// would abort its whole connection, short (at least one key): the client
// pages on with more.
func cutPage(kvs []kv.KeyValue, more bool) ([]kv.KeyValue, bool) {
	size := 0
	for i := range kvs {
		size += len(kvs[i].Key) + len(kvs[i].Value)
		if i > 0 && size > maxRangePageBytes {
			return kvs[:i], true
		}
	}
	return kvs, more
}

// maxRangePageBytes bounds the keys and values of one Range page, well
// under the default 16 MiB message limit of clients.
const maxRangePageBytes = 4 << 20

// maxBatchReadBytes bounds the keys and values the reads of one batch
// return; reads beyond it are answered errBatchFull. With values of at
// most 1 MiB and range pages of at most 4 MiB, the answer stays under
// clients' 16 MiB message limit.
const maxBatchReadBytes = 8 << 20

func resultBytes(r *kvResult) int {
	n := len(r.kv.Key) + len(r.kv.Value)
	for i := range r.kvs {
		n += len(r.kvs[i].Key) + len(r.kvs[i].Value)
	}
	return n
}

func fillAll(results []kvResult, err error, hint uint64) []kvResult {
	for i := range results {
		results[i] = kvResult{err: err, leaderHint: hint}
	}
	return results
}

var errNoSession = invalid("writes need a session (open one with KV.openSession)")

// writeCommand is the log command for the write operations of ops at
// the positions writes.
func writeCommand(session, ackedBelow uint64, ops []kvwire.Op, writes []int) *kv.Command {
	cmd := &kv.Command{Kind: kv.CmdBatch, Session: session, AckedBelow: ackedBelow, Ops: make([]kv.WriteOp, len(writes))}
	for j, i := range writes {
		cmd.Ops[j] = writeOp(&ops[i])
	}
	return cmd
}

// fillWrites sets the results of the write operations at the positions
// writes from their proposal's outcome.
func (sv *Server) fillWrites(results []kvResult, writes []int, applied kv.Applied, err error) {
	for j, i := range writes {
		switch {
		case err != nil:
			results[i].err = err
			results[i].leaderHint = sv.d.Leader()
		case applied.Err != nil:
			results[i].err = &requestError{schema.ErrorCode_internal, applied.Err.Error()}
		case j < len(applied.Results):
			results[i].w = applied.Results[j]
			results[i].rev = applied.Results[j].Revision
		default:
			results[i].err = &requestError{schema.ErrorCode_internal, "the state machine returned too few results"}
		}
	}
}

// submit hands a command to the driver for proposing; reply receives its
// outcome, exactly once (at once if the driver has stopped). The command
// is encoded before submit returns.
func (sv *Server) submit(cmd *kv.Command, reply func(driver.Result)) {
	cmd.ID = sv.proposeID.Add(1)
	cmd.Time = time.Now().UnixNano()
	sv.d.Propose(cmd.AppendBinary(nil), reply)
}

// proposeCommand proposes a session or authority command on the leader
// and waits for it to be applied. Once proposed, a command not answered
// in time may still be applied later: its outcome is unknown.
func (sv *Server) proposeCommand(ctx context.Context, cmd kv.Command) (kv.Applied, error) {
	if !sv.d.IsLeader() {
		return kv.Applied{}, driver.ErrNotLeader
	}
	cmd.ID = sv.proposeID.Add(1)
	cmd.Time = time.Now().UnixNano()
	res, err := sv.d.ProposeWait(ctx, cmd.AppendBinary(nil))
	return applied(res), err
}
