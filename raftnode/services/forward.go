package services

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/schema"
)

// One path hands requests to the leader: onLeader, for KV batches,
// session calls and admin calls alike, with one error policy.
//
//   - This node leads: the request runs here.
//   - Another node leads: the call goes to its Raft capability (Raft.kv,
//     Raft.admin; a member forwards through it) and its answer is the
//     request's.
//   - Refused before it was sent (the leader cannot be reached), or
//     refused by its receiver without effect (it no longer leads, or is
//     stopping): nothing happened, so it is asked again of the next
//     leader, once one is known, within the request timeout; after that,
//     unavailable (no leader).
//   - Lost after it was sent (the connection failed, or the leader
//     stopped answering and another node leads: see whileLeading): the
//     request may or may not have taken effect. A request that may reach
//     a leader more than once with the same effect (reads; writes with a
//     session's sequence numbers, which the state machine applies at most
//     once) is sent again to the next leader, and abandoned as soon as
//     another node leads; any other is answered outcomeUnknown.

// leaderCall is a request that runs on the leader.
type leaderCall struct {
	// resendable: the request may reach a leader more than once with the
	// same effect. writes: it may change the state (a resendable write
	// lost after it was sent and not answered in time has an unknown
	// outcome).
	resendable, writes bool
	// local runs the request on this node, which leads.
	local func(ctx context.Context) answer
	// remote makes the call on the leader's Raft capability and returns
	// its answer, or the call's failure.
	remote func(ctx context.Context, rc schema.Raft) (answer, error)
}

// answer is what a node made of a request: its outcome (err, nil on
// success, the request's own results being the caller's), or a refusal
// without effect that another leader may not make (refused).
type answer struct {
	err     error
	refused bool
}

// answerOf reads a forwarded call's outcome: an answer (the error field
// of its results, a *requestError, or nil), or the call's failure.
func answerOf(err error) (answer, error) {
	var re *requestError
	if err == nil || errors.As(err, &re) {
		return answer{err: err}, nil
	}
	return answer{}, err
}

// onLeader runs c on the leader with the policy above and returns its
// outcome.
func (sv *Server) onLeader(ctx context.Context, c leaderCall) error {
	ctx, cancel := context.WithTimeout(ctx, sv.cfg.RequestTimeout)
	defer cancel()
	// mayHaveRun: a write was lost after it was sent; it may have been
	// applied, so giving up says outcomeUnknown, not unavailable.
	mayHaveRun := false
	for {
		lead, err := sv.d.WaitLeader(ctx)
		if err != nil {
			return gaveUp(err, mayHaveRun)
		}
		wake := sv.d.LeaderChanged()
		if lead == sv.cfg.ID {
			if a := c.local(ctx); !a.refused {
				return a.err
			}
		} else {
			grace := sv.movedGrace()
			if c.resendable {
				grace = 0
			}
			var a answer
			sent, moved, err := sv.callLeader(ctx, lead, grace, func(ctx context.Context, rc schema.Raft) error {
				var err error
				a, err = c.remote(ctx, rc)
				return err
			})
			switch {
			case err == nil && !a.refused:
				return a.err
			case err == nil || !sent:
				// Nothing happened: ask the next leader.
			case !c.resendable && moved:
				return &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf(
					"leader %d stopped answering and node %d leads now; the request may or may not have taken effect: check before retrying", lead, sv.d.Leader())}
			case !c.resendable:
				return &requestError{schema.ErrorCode_outcomeUnknown, fmt.Sprintf(
					"leader %d: %v; the request may or may not have taken effect: check before retrying", lead, err)}
			default:
				mayHaveRun = mayHaveRun || c.writes
				if moved {
					sv.log.Debug("call to the leader abandoned: another node leads now; sending it there", "old", lead, "leader", sv.d.Leader())
					continue
				}
				sv.log.Debug("call to the leader lost; sending it again", "leader", lead, "error", err)
			}
		}
		// Wait for news of a leader (or a tick: the same leader may
		// answer now), then try again.
		retry := time.NewTimer(sv.d.TickInterval())
		select {
		case <-wake:
		case <-retry.C:
		case <-ctx.Done():
		}
		retry.Stop()
		if ctx.Err() != nil {
			return gaveUp(driver.ErrNoLeader, mayHaveRun)
		}
	}
}

// gaveUp is the outcome of a request that found no leader to run it
// (err says why); one that was sent and lost may have run.
func gaveUp(err error, mayHaveRun bool) error {
	if mayHaveRun && !errors.Is(err, driver.ErrStopped) {
		return driver.ErrOutcomeUnknown
	}
	return err
}

// errLeaderMoved is the cause of a call to the leader abandoned because
// another node leads now.
var errLeaderMoved = errors.New("another node leads now")

// whileLeading returns a context that ends with ctx, or once a node other
// than lead (this node included) has been known to lead for grace. done
// releases it and reports whether it ended because the leader moved.
//
// A leader that stops answering without closing its connections (a
// paused process, a black-holed link) would hold a call until the request
// timeout; a new leader is the sign that it may never answer. A call that
// is safe to send again abandons it at once (grace 0). One that is not
// waits a moment first, since a deposed leader that still runs answers it
// right away (a leadership transfer moves the leader by design).
func (sv *Server) whileLeading(ctx context.Context, lead uint64, grace time.Duration) (_ context.Context, done func() (moved bool)) {
	wctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	watch := func() {
		for {
			wake := sv.d.LeaderChanged()
			if l := sv.d.Leader(); l != 0 && l != lead {
				break
			}
			select {
			case <-wake:
			case <-stop:
				return
			case <-wctx.Done():
				return
			}
		}
		if grace > 0 {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-t.C:
			case <-stop:
				return
			case <-wctx.Done():
				return
			}
		}
		cancel(errLeaderMoved)
	}
	// Most calls are answered in a round trip: watch only those that
	// take a heartbeat interval, so they cost a timer and not a
	// goroutine. A new leader takes an election timeout to appear, so
	// the late start delays nothing.
	start := time.AfterFunc(sv.cfg.HeartbeatInterval, watch)
	return wctx, func() bool {
		start.Stop()
		close(stop)
		cancel(nil)
		return context.Cause(wctx) == errLeaderMoved
	}
}

// movedGrace is how long a call that cannot be sent again waits for a
// deposed leader's answer once another node leads: half an election
// timeout, so such calls too end within about an election timeout of
// the new leader's election.
func (sv *Server) movedGrace() time.Duration { return sv.cfg.ElectionTimeout / 2 }

// callLeader calls lead's Raft capability (through which a member
// forwards: Raft.kv, Raft.admin) with call, under a context
// that ends when another node has led for grace (see whileLeading). sent
// reports whether the call may have reached lead, moved whether a failure
// came from the leader moving.
func (sv *Server) callLeader(ctx context.Context, lead uint64, grace time.Duration, call func(context.Context, schema.Raft) error) (sent, moved bool, err error) {
	ctx, done := sv.whileLeading(ctx, lead, grace)
	defer func() {
		if done() && err != nil {
			moved = true
		}
	}()
	rc, err := sv.tr.Raft(ctx, lead)
	if err != nil {
		return false, false, fmt.Errorf("reach leader %d: %w", lead, err)
	}
	defer rc.Release()
	return true, false, call(ctx, rc)
}

// forwardedErr returns a forwarded call's failure, or the error field of
// its results (res, err come straight from the call's Struct()); read it
// before releasing the call (the error's text lives in its message).
func forwardedErr[R interface {
	Error() (schema.Error, error)
	HasError() bool
}](res R, err error) error {
	if err != nil {
		return err
	}
	e, eerr := res.Error()
	return remoteError(e, eerr == nil && res.HasError())
}

// remoteError turns a forwarded call's Error struct into a Go error.
func remoteError(e schema.Error, has bool) error {
	if !has {
		return nil
	}
	msg, _ := e.Message_()
	return &requestError{e.Code(), msg}
}
