package raftnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// kvServer is the KV capability. Every node serves it: the leader
// proposes writes itself, a follower hands requests with writes to the
// leader's KV capability, and every node serves linearizable reads
// locally after a read index.
type kvServer struct{ n *Node }

// execute runs one request's operations and returns one result per op.
// forwarded marks a request a follower handed over: it is never handed
// on again, so two nodes with different ideas of the leader cannot bounce
// a request between them.
func (n *Node) execute(ctx context.Context, session, ackedBelow uint64, ops []kvOp, forwarded bool) []kvResult {
	results := make([]kvResult, len(ops))
	if isClosed(n.done) {
		// A stopped node no longer follows the log: even serializable
		// reads would serve an ever staler state.
		return fillAll(results, n.stoppedError(), 0)
	}
	var writes []int
	linearRead := false
	for i := range ops {
		if ops[i].isWrite() {
			writes = append(writes, i)
		} else if !ops[i].serializable {
			linearRead = true
		}
	}
	if len(writes) > 0 && !n.isLeader.Load() {
		if forwarded {
			return fillAll(results, errNotLeader, n.lead.Load())
		}
		return n.forward(ctx, session, ackedBelow, ops)
	}

	var prop *proposal
	if len(writes) > 0 {
		if session == 0 {
			for _, i := range writes {
				results[i].err = invalid("writes need a session (open one with KV.openSession)")
			}
		} else {
			cmd := kv.Command{Kind: kv.CmdBatch, Session: session, AckedBelow: ackedBelow, Ops: make([]kv.WriteOp, len(writes))}
			for j, i := range writes {
				cmd.Ops[j] = ops[i].writeOp()
			}
			prop = n.submit(&cmd)
		}
	}
	var read *readWaiter
	if linearRead {
		read = &readWaiter{done: make(chan error, 1)}
		n.q.push(read)
	}

	if prop != nil {
		applied, err := n.await(ctx, prop)
		if errors.Is(err, errNotLeader) && !forwarded {
			// Leadership moved between the check and the proposal;
			// nothing was appended, so handing the request on is safe.
			return n.forward(ctx, session, ackedBelow, ops)
		}
		for j, i := range writes {
			switch {
			case err != nil:
				results[i].err = err
				results[i].leaderHint = n.lead.Load()
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
	var readErr error
	if read != nil {
		readErr = n.awaitRead(ctx, read)
	}
	served := 0 // bytes of keys and values read so far
	for i := range ops {
		o := &ops[i]
		if o.isWrite() {
			continue
		}
		if readErr != nil && !o.serializable {
			results[i].err = readErr
			results[i].leaderHint = n.lead.Load()
			continue
		}
		if served > maxBatchReadBytes {
			// The answer must fit in one message: the client sends the
			// remaining reads again in a later batch.
			results[i].err = errBatchFull
			continue
		}
		n.read(o, &results[i])
		served += resultBytes(&results[i])
	}
	return results
}

// read serves a read from the local state machine.
func (n *Node) read(o *kvOp, r *kvResult) {
	switch o.kind {
	case opGet:
		r.kv, r.found, r.rev = n.kv.Get(o.key)
	case opRange:
		r.kvs, r.more, r.rev = n.kv.Range(o.key, o.after, o.limit)
		// A page larger than a client's message limit would abort its
		// whole connection: cut it short (at least one key) and let the
		// client page on with more.
		size := 0
		for i := range r.kvs {
			size += len(r.kvs[i].Key) + len(r.kvs[i].Value)
			if i > 0 && size > maxRangePageBytes {
				r.kvs, r.more = r.kvs[:i], true
				break
			}
		}
	}
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

// submit hands a command to the loop for proposing.
func (n *Node) submit(cmd *kv.Command) *proposal {
	cmd.ID = n.proposeID.Add(1)
	cmd.Time = time.Now().UnixNano()
	p := &proposal{id: cmd.ID, data: cmd.AppendBinary(nil), done: make(chan proposalResult, 1)}
	n.q.push(p)
	return p
}

// await waits for a proposal's outcome. Once submitted, a write that is
// not answered in time may still be applied later: its outcome is
// unknown.
func (n *Node) await(ctx context.Context, p *proposal) (kv.Applied, error) {
	timer := time.NewTimer(n.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case r := <-p.done:
		return r.applied, r.err
	case <-timer.C:
		return kv.Applied{}, errOutcomeUnknown
	case <-ctx.Done():
		return kv.Applied{}, errOutcomeUnknown
	case <-n.done:
		select {
		case r := <-p.done:
			return r.applied, r.err
		default:
			// The loop answers everything it took before done is
			// closed: this proposal never reached it.
			return kv.Applied{}, n.stoppedError()
		}
	}
}

// awaitRead waits until the state machine may serve a linearizable read.
func (n *Node) awaitRead(ctx context.Context, r *readWaiter) error {
	timer := time.NewTimer(n.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-r.done:
		return err
	case <-timer.C:
		return errTimeout
	case <-ctx.Done():
		return errTimeout
	case <-n.done:
		return n.stoppedError()
	}
}

// proposeCommand proposes a session command on the leader and waits for
// it to be applied.
func (n *Node) proposeCommand(ctx context.Context, cmd kv.Command) (kv.Applied, error) {
	if !n.isLeader.Load() {
		return kv.Applied{}, errNotLeader
	}
	return n.await(ctx, n.submit(&cmd))
}

// forward hands a request to the leader's KV capability and returns its
// results. A write whose call fails after it was sent has an unknown
// outcome; the client retries it with the same session and sequence
// number, which the state machine deduplicates.
func (n *Node) forward(ctx context.Context, session, ackedBelow uint64, ops []kvOp) []kvResult {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	hasWrite := false
	for i := range ops {
		hasWrite = hasWrite || ops[i].isWrite()
	}
	for {
		lead, err := n.waitLeader(ctx)
		if err != nil {
			return fillAll(make([]kvResult, len(ops)), err, 0)
		}
		if lead == n.cfg.ID {
			return n.execute(ctx, session, ackedBelow, ops, true)
		}
		wake := n.leaderChanged()
		results, sent, err := n.forwardOnce(ctx, lead, session, ackedBelow, ops)
		if err == nil && !allNotLeader(results) {
			return results
		}
		if err != nil && sent && hasWrite {
			n.log.Debug("forwarded write lost", "leader", lead, "error", err)
			return fillAll(make([]kvResult, len(ops)), errOutcomeUnknown, lead)
		}
		// Nothing was applied (not sent, or the leader refused it as not
		// leader): wait for news of a leader, then try again.
		retry := time.NewTimer(n.loop.tick)
		select {
		case <-wake:
		case <-retry.C:
		case <-ctx.Done():
		}
		retry.Stop()
		if ctx.Err() != nil {
			if err == nil {
				return results
			}
			return fillAll(make([]kvResult, len(ops)), errNoLeader, lead)
		}
	}
}

func allNotLeader(rs []kvResult) bool {
	for i := range rs {
		var re *requestError
		if !errors.As(rs[i].err, &re) || re.code != schema.ErrorCode_unavailable {
			return false
		}
	}
	return len(rs) > 0
}

// forwardOnce makes one batch call to the leader. sent reports whether
// the call may have reached it.
func (n *Node) forwardOnce(ctx context.Context, lead, session, ackedBelow uint64, ops []kvOp) (results []kvResult, sent bool, err error) {
	node, err := n.tr.Node(ctx, lead)
	if err != nil {
		return nil, false, fmt.Errorf("reach leader %d: %w", lead, err)
	}
	defer node.Release()
	kf, krel := node.Kv(ctx, nil)
	defer krel()
	fut, rel := kf.Kv().Batch(ctx, func(p schema.KV_batch_Params) error {
		req, err := p.NewReq()
		if err != nil {
			return err
		}
		req.SetSession(session)
		req.SetAckedBelow(ackedBelow)
		req.SetForwarded(true)
		l, err := req.NewOps(int32(len(ops)))
		if err != nil {
			return err
		}
		for i := range ops {
			if err := encodeOp(l.At(i), &ops[i]); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	res, err := fut.Struct()
	if err != nil {
		return nil, true, fmt.Errorf("forward to leader %d: %w", lead, err)
	}
	l, err := res.Results()
	if err != nil || l.Len() != len(ops) {
		return nil, true, fmt.Errorf("forward to leader %d: malformed results (%v)", lead, err)
	}
	results = make([]kvResult, len(ops))
	for i := range ops {
		results[i] = decodeResult(l.At(i), &ops[i])
	}
	return results, true, nil
}

// Batch runs many operations in one call.
func (s kvServer) Batch(ctx context.Context, call schema.KV_batch) error {
	req, err := call.Args().Req()
	if err != nil {
		return invalid("batch: %v", err)
	}
	l, err := req.Ops()
	if err != nil {
		return invalid("batch ops: %v", err)
	}
	ops := make([]kvOp, l.Len())
	bad := make([]error, l.Len())
	valid := make([]kvOp, 0, l.Len())
	for i := range ops {
		ops[i], bad[i] = decodeOp(l.At(i))
		if bad[i] == nil {
			valid = append(valid, ops[i])
		}
	}
	call.Go()
	got := s.n.execute(ctx, req.Session(), req.AckedBelow(), valid, req.Forwarded())
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	out, err := res.NewResults(int32(len(ops)))
	if err != nil {
		return err
	}
	j := 0
	for i := range ops {
		r := kvResult{err: bad[i]}
		if bad[i] == nil {
			r = got[j]
			j++
		}
		if err := encodeResult(out.At(i), &ops[i], &r); err != nil {
			return err
		}
	}
	return nil
}

// single serves one of the single-operation methods: it decodes the
// operation, lets the next call on the capability start, runs it as a
// batch of one and encodes the result.
func (s kvServer) single(ctx context.Context, session, seq uint64, decode func() (kvOp, error), next func(), alloc func() (schema.Result, error)) error {
	o, err := decode()
	if err != nil {
		return err
	}
	next()
	o.seq = seq
	r := s.n.execute(ctx, session, 0, []kvOp{o}, false)[0]
	dst, err := alloc()
	if err != nil {
		return err
	}
	return encodeResult(dst, &o, &r)
}

// decodeWith reads a method's operation struct with get and converts it
// with decode.
func decodeWith[P any](name string, get func() (P, error), decode func(P) (kvOp, error)) func() (kvOp, error) {
	return func() (kvOp, error) {
		p, err := get()
		if err != nil {
			return kvOp{}, invalid("%s: %v", name, err)
		}
		return decode(p)
	}
}

// resultOf allocates a method's results and its result struct.
func resultOf[R interface {
	NewResult() (schema.Result, error)
}](alloc func() (R, error)) func() (schema.Result, error) {
	return func() (schema.Result, error) {
		res, err := alloc()
		if err != nil {
			return schema.Result{}, err
		}
		return res.NewResult()
	}
}

// Put writes one key.
func (s kvServer) Put(ctx context.Context, call schema.KV_put) error {
	a := call.Args()
	return s.single(ctx, a.Session(), a.Seq(), decodeWith("put", a.Op, decodePut), call.Go, resultOf(call.AllocResults))
}

// Get reads one key.
func (s kvServer) Get(ctx context.Context, call schema.KV_get) error {
	return s.single(ctx, 0, 0, decodeWith("get", call.Args().Op, decodeGet), call.Go, resultOf(call.AllocResults))
}

// Delete removes one key.
func (s kvServer) Delete(ctx context.Context, call schema.KV_delete) error {
	a := call.Args()
	return s.single(ctx, a.Session(), a.Seq(), decodeWith("delete", a.Op, decodeDelete), call.Go, resultOf(call.AllocResults))
}

// Cas compares and swaps one key.
func (s kvServer) Cas(ctx context.Context, call schema.KV_cas) error {
	a := call.Args()
	return s.single(ctx, a.Session(), a.Seq(), decodeWith("cas", a.Op, decodeCAS), call.Go, resultOf(call.AllocResults))
}

// Range reads one page of keys.
func (s kvServer) Range(ctx context.Context, call schema.KV_range) error {
	return s.single(ctx, 0, 0, decodeWith("range", call.Args().Op, decodeRange), call.Go, resultOf(call.AllocResults))
}

// sessionCall runs a session command on the leader, handing it over when
// this node does not lead.
func (s kvServer) sessionCall(ctx context.Context, cmd kv.Command, forward func(schema.KV) (uint64, error)) (uint64, error) {
	n := s.n
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RequestTimeout)
	defer cancel()
	for {
		lead, err := n.waitLeader(ctx)
		if err != nil {
			return 0, err
		}
		if lead != n.cfg.ID {
			node, err := n.tr.Node(ctx, lead)
			if err != nil {
				return 0, &requestError{schema.ErrorCode_unavailable, fmt.Sprintf("reach leader %d: %v", lead, err)}
			}
			kf, krel := node.Kv(ctx, nil)
			v, err := forward(kf.Kv())
			krel()
			node.Release()
			return v, err
		}
		applied, err := n.proposeCommand(ctx, cmd)
		if errors.Is(err, errNotLeader) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if applied.Err != nil {
			return 0, &requestError{schema.ErrorCode_internal, applied.Err.Error()}
		}
		if len(applied.Results) > 0 && applied.Results[0].Code != kv.OK {
			return 0, kvCodeError(applied.Results[0])
		}
		return applied.Session, nil
	}
}

// remoteError turns a forwarded call's Error struct into a Go error.
func remoteError(e schema.Error, has bool) error {
	if !has {
		return nil
	}
	msg, _ := e.Message_()
	return &requestError{e.Code(), msg}
}

// OpenSession registers a client session through the log.
func (s kvServer) OpenSession(ctx context.Context, call schema.KV_openSession) error {
	call.Go()
	id, err := s.sessionCall(ctx, kv.Command{Kind: kv.CmdOpenSession}, func(k schema.KV) (uint64, error) {
		f, rel := k.OpenSession(ctx, nil)
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return 0, &requestError{schema.ErrorCode_unavailable, err.Error()}
		}
		e, eerr := r.Error()
		if err := remoteError(e, eerr == nil && r.HasError()); err != nil {
			return 0, err
		}
		return r.Session(), nil
	})
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	if err != nil {
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, s.n.lead.Load())
	}
	res.SetSession(id)
	res.SetTtlMillis(uint64(s.n.kv.Config().SessionTTL / time.Millisecond))
	return nil
}

// KeepAlive refreshes a session through the log.
func (s kvServer) KeepAlive(ctx context.Context, call schema.KV_keepAlive) error {
	session := call.Args().Session()
	call.Go()
	_, err := s.sessionCall(ctx, kv.Command{Kind: kv.CmdKeepAlive, Session: session}, func(k schema.KV) (uint64, error) {
		f, rel := k.KeepAlive(ctx, func(p schema.KV_keepAlive_Params) error { p.SetSession(session); return nil })
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return 0, &requestError{schema.ErrorCode_unavailable, err.Error()}
		}
		e, eerr := r.Error()
		return 0, remoteError(e, eerr == nil && r.HasError())
	})
	return answerError(call.AllocResults, err, s.n)
}

// CloseSession forgets a session.
func (s kvServer) CloseSession(ctx context.Context, call schema.KV_closeSession) error {
	session := call.Args().Session()
	call.Go()
	_, err := s.sessionCall(ctx, kv.Command{Kind: kv.CmdCloseSession, Session: session}, func(k schema.KV) (uint64, error) {
		f, rel := k.CloseSession(ctx, func(p schema.KV_closeSession_Params) error { p.SetSession(session); return nil })
		defer rel()
		r, err := f.Struct()
		if err != nil {
			return 0, &requestError{schema.ErrorCode_unavailable, err.Error()}
		}
		e, eerr := r.Error()
		return 0, remoteError(e, eerr == nil && r.HasError())
	})
	return answerError(call.AllocResults, err, s.n)
}
