package services

import (
	"context"
	"errors"
	"fmt"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// kvServer is the KV capability. Every node serves it: the leader
// proposes writes itself, a follower hands requests with writes to the
// leader's KV capability, and every node serves linearizable reads
// locally after a read index. scope is what the capability grants; it is
// enforced here, before a request runs or is handed on.
type kvServer struct {
	sv    *Server
	ex    *rpc.Exporter
	scope kvScope
}

// kvCapability returns a KV capability confined to sc, exported through
// ex (restrict exports the capabilities it derives there too, so they
// share the checks of the grant ex carries: see rpc.Exporter.WithCheck).
// The caller owns the client.
func (sv *Server) kvCapability(ex *rpc.Exporter, sc kvScope) capnp.Client {
	s := &kvServer{sv: sv, ex: ex, scope: sc}
	inline, rest := s.methods()
	return ex.ExportInline(schema.KV_Methods(nil, nil), inline, rest, s)
}

// forward hands a request to the leader (see onLeader) and returns its
// results. Its writes are resendable when they belong to a session, whose
// sequence numbers make the state machine apply each at most once however
// often it arrives; a lost write without one has an unknown outcome (the
// client retries it with the same session and sequence number).
func (sv *Server) forward(ctx context.Context, session, ackedBelow uint64, ops []kvwire.Op) []kvResult {
	var results []kvResult
	writes := hasWrite(ops)
	err := sv.onLeader(ctx, leaderCall{
		resendable: !writes || session != 0,
		writes:     writes,
		local: func(ctx context.Context) answer {
			// A handed-over request is never handed on again.
			results = sv.executeWait(kvRequest{ctx: ctx, session: session, ackedBelow: ackedBelow, ops: ops, forwarded: true})
			return answer{refused: leaderRefused(results)}
		},
		remote: func(ctx context.Context, rc schema.Raft) (answer, error) {
			rs, err := forwardOnce(ctx, rc, session, ackedBelow, ops)
			if err != nil {
				return answer{}, err
			}
			results = rs
			return answer{refused: leaderRefused(rs)}, nil
		},
	})
	if err != nil {
		return fillAll(make([]kvResult, len(ops)), err, sv.d.Leader())
	}
	return results
}

// leaderRefused reports whether the node a request was forwarded to
// refused all of it without proposing anything: it does not lead
// (unavailable), or it is stopping (shuttingDown, which it answers only
// for what it never proposed). The request can then go to the next
// leader. The forwarding node is not stopping, so passing shuttingDown
// on would send the client away from a working node.
func leaderRefused(rs []kvResult) bool {
	for i := range rs {
		if rs[i].err == nil {
			return false
		}
		if code, _ := errorCode(rs[i].err); code != schema.ErrorCode_unavailable && code != schema.ErrorCode_shuttingDown {
			return false
		}
	}
	return len(rs) > 0
}

// forwardOnce makes one batch call on the leader's Raft capability rc
// and reads its results.
func forwardOnce(ctx context.Context, rc schema.Raft, session, ackedBelow uint64, ops []kvwire.Op) ([]kvResult, error) {
	kf, krel := rc.Kv(ctx, nil)
	defer krel()
	fut, rel := kf.Kv().Batch(ctx, func(p schema.KV_batch_Params) error {
		l, err := kvwire.NewRequest(p, kvwire.Header{Session: session, AckedBelow: ackedBelow, Forwarded: true}, len(ops))
		if err != nil {
			return err
		}
		for i := range ops {
			if err := kvwire.EncodeOp(l.At(i), &ops[i]); err != nil {
				return err
			}
		}
		return nil
	})
	defer rel()
	res, err := fut.Struct()
	if err != nil {
		return nil, fmt.Errorf("forward to the leader: %w", err)
	}
	l, err := kvwire.Results(res, len(ops))
	if err != nil {
		return nil, fmt.Errorf("forward to the leader: malformed results (%v)", err)
	}
	results := make([]kvResult, len(ops))
	for i := range ops {
		results[i] = forwardedResult(l.At(i), &ops[i])
	}
	return results, nil
}

// batchResultsSize is the size of KV.batch's results struct.
var batchResultsSize = rpc.ResultsSize(schema.NewKV_batch_Results)

// serveBatch runs many operations in one call. It is served inline (see
// rpc.Exporter.ExportInline): the request runs without a goroutine of
// its own unless it must wait for the leader or read ranges (execute). An operation that is malformed, over a limit or
// outside the scope is answered with its error; the others run.
func (s *kvServer) serveBatch(call *rpc.InlineCall) {
	req, err := kvwire.DecodeRequest(schema.KV_batch_Params(call.Args()), kvLimits(s.sv.kv.Config()))
	if err != nil {
		call.Return(err)
		return
	}
	ops, bad := req.Ops, req.Errs
	if s.scope.confines() {
		if bad == nil {
			bad = make([]error, len(ops))
		}
		s.scope.confineBatch(ops, bad)
	}
	valid := ops
	if bad != nil {
		valid = make([]kvwire.Op, 0, len(ops))
		for i := range ops {
			if bad[i] == nil {
				valid = append(valid, ops[i])
			}
		}
	}
	// The operations' keys and values point into the arguments.
	release := call.KeepArgs()
	s.run(call.Context(), req.Session, req.AckedBelow, valid, req.Forwarded, release, s.sv.observed("batch", valid, func(got []kvResult) {
		call.ReturnResults(batchResultsSize, func(st capnp.Struct) error {
			return encodeBatch(schema.KV_batch_Results(st), ops, bad, got)
		})
	}))
}

// run executes a request of an inline call (see execute) and hands the
// results to answer. release is called once ops are not needed.
func (s *kvServer) run(ctx context.Context, session, ackedBelow uint64, ops []kvwire.Op, forwarded bool, release func(), answer func([]kvResult)) {
	if s.scope.restricted && hasWrite(ops) {
		answer = s.scope.screen(session, ops, answer)
	}
	s.sv.execute(kvRequest{ctx: ctx, session: session, ackedBelow: ackedBelow, ops: ops, forwarded: forwarded, release: release}, answer)
}

// encodeBatch encodes a batch's results: the error of each operation that
// had one in bad (nil: none had), and got, in order, for the others.
func encodeBatch(res schema.KV_batch_Results, ops []kvwire.Op, bad []error, got []kvResult) error {
	out, err := res.NewResults(int32(len(ops)))
	if err != nil {
		return err
	}
	j := 0
	for i := range ops {
		var r kvResult
		if bad != nil && bad[i] != nil {
			r.err = bad[i]
		} else {
			r = got[j]
			j++
		}
		if err := encodeResult(out.At(i), &ops[i], &r); err != nil {
			return err
		}
	}
	return nil
}

// singleMethod returns the inline server of a single-operation method
// (put, get, delete, cas, range, txn): decode reads the session and the
// operation from the arguments (see kvwire.DecodePutCall). The operation
// runs as a batch of one. Arguments that cannot be read fail the call
// (decode's error with an operation of kind 0); an operation the decoder
// refuses (its error with the kind set: see kvwire.DecodeTxnCall), over
// a limit or outside the scope is answered with its error.
func singleMethod[P ~capnp.StructKind, R interface {
	~capnp.StructKind
	NewResult() (schema.Result, error)
}](s *kvServer, newResults func(*capnp.Segment) (R, error), decode func(P) (session uint64, o kvwire.Op, err error)) rpc.InlineServe {
	size := rpc.ResultsSize(newResults)
	return func(call *rpc.InlineCall) {
		session, o, err := decode(P(call.Args()))
		if err != nil && o.Kind == 0 {
			call.Return(err)
			return
		}
		ops := []kvwire.Op{o}
		answer := s.sv.observed(o.Kind.String(), ops, func(got []kvResult) {
			call.ReturnResults(size, func(st capnp.Struct) error {
				dst, err := R(st).NewResult()
				if err != nil {
					return err
				}
				return encodeResult(dst, &ops[0], &got[0])
			})
		})
		if err == nil {
			err = ops[0].CheckSize(kvLimits(s.sv.kv.Config()))
		}
		if err != nil {
			answer([]kvResult{{err: err}})
			return
		}
		if s.scope.confines() {
			if err := s.scope.confine(&ops[0]); err != nil {
				answer([]kvResult{{err: err}})
				return
			}
		}
		s.run(call.Context(), session, 0, ops, false, call.KeepArgs(), answer)
	}
}

// methods returns the KV capability's methods by name: the operations,
// served inline, and the session methods, served by go-capnp's server
// (they are rare, and block while they forward).
func (s *kvServer) methods() (inline map[string]rpc.InlineServe, rest map[string]func(context.Context, *server.Call) error) {
	inline = map[string]rpc.InlineServe{
		"batch":  s.serveBatch,
		"put":    singleMethod(s, schema.NewKV_put_Results, kvwire.DecodePutCall),
		"delete": singleMethod(s, schema.NewKV_delete_Results, kvwire.DecodeDeleteCall),
		"cas":    singleMethod(s, schema.NewKV_cas_Results, kvwire.DecodeCASCall),
		"get":    singleMethod(s, schema.NewKV_get_Results, kvwire.DecodeGetCall),
		"range":  singleMethod(s, schema.NewKV_range_Results, kvwire.DecodeRangeCall),
		"txn": singleMethod(s, schema.NewKV_txn_Results, func(p schema.KV_txn_Params) (uint64, kvwire.Op, error) {
			return kvwire.DecodeTxnCall(p, kvLimits(s.sv.kv.Config()))
		}),
	}
	rest = map[string]func(context.Context, *server.Call) error{
		"openSession": func(ctx context.Context, c *server.Call) error {
			return s.OpenSession(ctx, schema.KV_openSession{Call: c})
		},
		"keepAlive": func(ctx context.Context, c *server.Call) error {
			return s.KeepAlive(ctx, schema.KV_keepAlive{Call: c})
		},
		"closeSession": func(ctx context.Context, c *server.Call) error {
			return s.CloseSession(ctx, schema.KV_closeSession{Call: c})
		},
		"restrict": func(ctx context.Context, c *server.Call) error {
			return s.Restrict(ctx, schema.KV_restrict{Call: c})
		},
		"watch": func(ctx context.Context, c *server.Call) error {
			return s.Watch(ctx, schema.KV_watch{Call: c})
		},
	}
	s.leaseMethods(rest)
	return inline, rest
}

// sessionCall runs a session command on the leader (see onLeader),
// handing it over when this node does not lead. Session calls are not
// sent again once they may have reached a leader: opening a session is
// not idempotent; the client retries.
func (s *kvServer) sessionCall(ctx context.Context, cmd kv.Command, forward func(context.Context, schema.KV) (uint64, error)) (uint64, error) {
	sv := s.sv
	var v uint64
	err := sv.onLeader(ctx, leaderCall{
		writes: true,
		local: func(ctx context.Context) answer {
			applied, err := sv.proposeCommand(ctx, cmd)
			switch {
			case errors.Is(err, driver.ErrNotLeader):
				return answer{refused: true}
			case err != nil:
				return answer{err: err}
			case applied.Err != nil:
				return answer{err: &requestError{schema.ErrorCode_internal, applied.Err.Error()}}
			case len(applied.Results) > 0 && applied.Results[0].Code != kv.OK:
				return answer{err: kvCodeError(applied.Results[0])}
			}
			v = applied.Session
			return answer{}
		},
		remote: func(ctx context.Context, rc schema.Raft) (answer, error) {
			kf, krel := rc.Kv(ctx, nil)
			defer krel()
			var err error
			v, err = forward(ctx, kf.Kv())
			return answerOf(err)
		},
	})
	return v, err
}

// OpenSession registers a client session through the log.
func (s *kvServer) OpenSession(ctx context.Context, call schema.KV_openSession) error {
	call.Go()
	var id uint64
	err := s.sessionAllowed("openSession")
	if err == nil {
		id, err = s.sessionCall(ctx, kv.Command{Kind: kv.CmdOpenSession}, func(ctx context.Context, k schema.KV) (uint64, error) {
			f, rel := k.OpenSession(ctx, nil)
			defer rel()
			r, err := f.Struct()
			if err := forwardedErr(r, err); err != nil {
				return 0, err
			}
			return r.Session(), nil
		})
	}
	res, aerr := call.AllocResults()
	if aerr != nil {
		return aerr
	}
	if err != nil {
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, s.sv.d.Leader())
	}
	res.SetSession(id)
	res.SetTtlMillis(uint64(s.sv.kv.Config().SessionTTL / time.Millisecond))
	return nil
}

// KeepAlive refreshes a session through the log.
func (s *kvServer) KeepAlive(ctx context.Context, call schema.KV_keepAlive) error {
	if err := s.sessionAllowed("keepAlive"); err != nil {
		return answerError(call.AllocResults, err, s.sv)
	}
	session := call.Args().Session()
	call.Go()
	_, err := s.sessionCall(ctx, kv.Command{Kind: kv.CmdKeepAlive, Session: session}, func(ctx context.Context, k schema.KV) (uint64, error) {
		f, rel := k.KeepAlive(ctx, func(p schema.KV_keepAlive_Params) error { p.SetSession(session); return nil })
		defer rel()
		return 0, forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, s.sv)
}

// CloseSession forgets a session.
func (s *kvServer) CloseSession(ctx context.Context, call schema.KV_closeSession) error {
	if err := s.sessionAllowed("closeSession"); err != nil {
		return answerError(call.AllocResults, err, s.sv)
	}
	session := call.Args().Session()
	call.Go()
	_, err := s.sessionCall(ctx, kv.Command{Kind: kv.CmdCloseSession, Session: session}, func(ctx context.Context, k schema.KV) (uint64, error) {
		f, rel := k.CloseSession(ctx, func(p schema.KV_closeSession_Params) error { p.SetSession(session); return nil })
		defer rel()
		return 0, forwardedErr(f.Struct())
	})
	return answerError(call.AllocResults, err, s.sv)
}

// sessionAllowed refuses the session methods on a read-only KV.
func (s *kvServer) sessionAllowed(method string) error {
	if s.scope.readOnly {
		return s.scope.deniedSession(method)
	}
	return nil
}

// Restrict derives a KV confined to the intersection of this one's scope
// and the restriction asked for (see kvScope.narrow), exported on the
// same connection.
func (s *kvServer) Restrict(_ context.Context, call schema.KV_restrict) error {
	args := call.Args()
	prefix, err := args.Prefix()
	if err != nil {
		return invalid("restrict prefix: %v", err)
	}
	// A longer prefix would match no key; refusing it also bounds what
	// each derived capability holds.
	if lim := s.sv.kv.Config(); len(prefix) > lim.MaxKeySize {
		return tooLarge("restrict prefix of %d bytes is over the key size limit of %d bytes", len(prefix), lim.MaxKeySize)
	}
	sc, err := s.scope.narrow(prefix, args.RestrictPrefix(), args.ReadOnly())
	if err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetKv(schema.KV(s.sv.kvCapability(s.ex, sc)))
}
