package driver

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/raftnode/statemachine"
)

// Propose hands data to the loop for proposing as one entry; reply
// receives its outcome exactly once: the state machine's result for the
// entry (Result.Value), or why it was not applied (ErrNotLeader,
// ErrDropped: nothing to undo) or may not have been (ErrOutcomeUnknown,
// StoppedError once proposed). It is called at once if the driver has
// stopped, else on the loop goroutine, and must not block. data is the
// driver's from now on.
func (d *Driver) Propose(data []byte, reply func(Result)) {
	reply = d.stats.countProposal(reply)
	if !d.q.push(&proposal{data: data, reply: reply}) {
		reply(Result{Err: d.StoppedError()})
	}
}

// ProposeWait is Propose, waited for. A proposal not answered within the
// request timeout, or before ctx ends, may still be applied later: its
// outcome is unknown (ErrOutcomeUnknown).
func (d *Driver) ProposeWait(ctx context.Context, data []byte) (statemachine.Result, error) {
	done := make(chan Result, 1)
	d.Propose(data, func(r Result) { done <- r })
	timer := d.clock.NewTimer(d.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case r := <-done:
		return r.Value, r.Err
	case <-timer.C():
		return nil, ErrOutcomeUnknown
	case <-ctx.Done():
		return nil, ErrOutcomeUnknown
	}
}

// ReadBarrier asks for a linearizable read: reply receives nil once the
// state machine reflects every write committed before the call, or why
// it cannot, exactly once (at once if the driver has stopped) and must
// not block.
//
// A read whose leader changed before confirming it (the loop fails it
// with ErrNoLeader then: a paused leader never answers) is asked again of
// the next leader as soon as one is known, within the request timeout. A
// read has no side effect, and a read index obtained later than the read
// began is still linearizable. A read begun with no leader known fails at
// once, so a client cut off from the leader moves on quickly.
func (d *Driver) ReadBarrier(reply func(error)) {
	d.askRead(d.clock.Now().Add(d.cfg.RequestTimeout), maxReadRetries, reply)
}

// maxReadRetries bounds how often one read is asked again: each retry
// follows a leader change, so this only guards against a loop that keeps
// failing reads while a leader is known.
const maxReadRetries = 4

func (d *Driver) askRead(deadline time.Time, retries int, reply func(error)) {
	hadLeader := d.lead.Load() != 0
	r := func(err error) {
		if err != ErrNoLeader || !hadLeader || retries == 0 {
			reply(err)
			return
		}
		// The loop calls this (it fails reads with ErrNoLeader only
		// there): the read waits on the loop for the next leader
		// (retryReads), or for its deadline (tick).
		d.loop.readRetries = append(d.loop.readRetries, readRetry{deadline: deadline, retry: func(err error) {
			if err != nil {
				reply(err)
				return
			}
			d.askRead(deadline, retries-1, reply)
		}})
	}
	if !d.q.push(&readWaiter{reply: r}) {
		reply(d.StoppedError())
	}
}

// ReadIndex waits until the state machine may serve a linearizable read
// (see ReadBarrier): ErrTimeout if that takes longer than the request
// timeout or ctx ends first.
func (d *Driver) ReadIndex(ctx context.Context) error {
	done := make(chan error, 1)
	d.ReadBarrier(func(err error) { done <- err })
	timer := d.clock.NewTimer(d.cfg.RequestTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C():
		return ErrTimeout
	case <-ctx.Done():
		return ErrTimeout
	}
}

// onLoop runs fn on the loop goroutine and returns its result, handed
// back by value over a channel: nothing fn builds stays shared with a
// caller that gave up waiting (ctx ended, driver stopped). A task whose
// caller gave up before the loop took it never runs, so the caller's
// error (ErrTimeout, StoppedError) never hides an effect of fn, such as a
// proposal; a task that already started is waited for (it runs on the
// loop, so it is short).
func onLoop[T any](ctx context.Context, d *Driver, fn func() T) (T, error) {
	const queued, started, abandoned = 0, 1, 2
	var state atomic.Int32
	res := make(chan T, 1)
	var zero T
	if d.cfg.Stepped {
		// The caller is the loop's goroutine (see Step): run fn now.
		if d.Stopped() || d.tr == nil {
			return zero, d.StoppedError()
		}
		var v T
		if d.guarded(func() { v = fn() }) {
			d.exitStepped()
			return zero, d.StoppedError()
		}
		return v, nil
	}
	if !d.q.push(task{func() {
		if state.CompareAndSwap(queued, started) {
			res <- fn()
		}
	}}) {
		return zero, d.StoppedError()
	}
	var err error
	select {
	case v := <-res:
		return v, nil
	case <-d.done:
		err = d.StoppedError()
	case <-ctx.Done():
		err = ErrTimeout
	}
	if state.CompareAndSwap(queued, abandoned) {
		return zero, err
	}
	// fn runs or ran: its result comes, unless fn stopped the loop.
	select {
	case v := <-res:
		return v, nil
	case <-d.done:
		select {
		case v := <-res:
			return v, nil
		default:
			return zero, d.StoppedError()
		}
	}
}
