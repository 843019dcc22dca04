package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"capnproto.org/go/capnp/v3/server"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// Leases on the KV capability (see schema/kv.capnp). Grants, keepalives
// and revokes are log commands run on the leader (onLeader, one path),
// each carrying the capability's scope, which the state machine checks
// (a lease outside it is not found). Reads (time to live, list) are
// served from the receiving node's applied state.
//
// The leader expires leases: leaseExpirer polls the store's deadline
// index every tick while this node leads and proposes the expiry of the
// leases due, each at most MaxLeaseIDs an entry. A new leader first gives
// every lease its TTL plus an election timeout from the moment it took
// over (as etcd's lessor Promote does), so keepalives lost in the change
// can be sent again.

// leaseStatus is a LeaseStatus in Go form.
type leaseStatus struct {
	id             uint64
	found          bool
	ttl, remaining time.Duration
	keys           int64
	prefix         []byte
}

func statusOf(info kv.LeaseInfo) leaseStatus {
	return leaseStatus{id: info.ID, found: true, ttl: info.TTL, remaining: info.Remaining, keys: int64(info.Keys), prefix: info.Prefix}
}

func (st *leaseStatus) encode(dst schema.LeaseStatus) error {
	dst.SetId(st.id)
	dst.SetFound(st.found)
	if !st.found {
		return nil
	}
	dst.SetTtlMillis(uint64(st.ttl / time.Millisecond))
	dst.SetRemainingMillis(int64(st.remaining / time.Millisecond))
	dst.SetKeys(st.keys)
	return dst.SetPrefix(st.prefix)
}

func decodeStatus(src schema.LeaseStatus) leaseStatus {
	st := leaseStatus{id: src.Id(), found: src.Found()}
	if !st.found {
		return st
	}
	st.ttl = time.Duration(min(src.TtlMillis(), math.MaxInt64/uint64(time.Millisecond))) * time.Millisecond
	st.remaining = time.Duration(src.RemainingMillis()) * time.Millisecond
	st.keys = src.Keys()
	p, _ := src.Prefix()
	st.prefix = bytes.Clone(p)
	return st
}

// leaseCommand runs cmd on the leader: local gets its Applied there,
// remote makes the same call on the leader's KV otherwise.
func (s *kvServer) leaseCommand(ctx context.Context, cmd kv.Command, resendable bool, local func(kv.Applied) error, remote func(context.Context, schema.KV) error) error {
	sv := s.sv
	return sv.onLeader(ctx, leaderCall{
		resendable: resendable,
		writes:     true,
		local: func(ctx context.Context) answer {
			applied, err := sv.proposeCommand(ctx, cmd)
			switch {
			case errors.Is(err, driver.ErrNotLeader):
				return answer{refused: true}
			case err != nil:
				return answer{err: err}
			case applied.Err != nil:
				return answer{err: &requestError{schema.ErrorCode_internal, applied.Err.Error()}}
			}
			return answer{err: local(applied)}
		},
		remote: func(ctx context.Context, rc schema.Raft) (answer, error) {
			kf, krel := rc.Kv(ctx, nil)
			defer krel()
			return answerOf(remote(ctx, kf.Kv()))
		},
	})
}

// scopePrefix is the prefix the capability confines leases to.
func (s *kvServer) scopePrefix() []byte {
	if s.scope.restricted {
		return s.scope.prefix
	}
	return nil
}

// leaseScope is the scope a keepalive or revoke acts within: the longer
// of the capability's prefix and the one the call asks for when one
// starts with the other; ok is false when they exclude each other (no
// lease can be in both).
func (s *kvServer) leaseScope(asked []byte) (scope []byte, ok bool) {
	own := s.scopePrefix()
	switch {
	case bytes.HasPrefix(asked, own):
		return bytes.Clone(asked), true
	case bytes.HasPrefix(own, asked):
		return own, true
	}
	return nil, false
}

// leaseWritable refuses the lease writes on a read-only KV.
func (s *kvServer) leaseWritable(method string) error {
	if s.scope.readOnly {
		return denied("%s refused: this KV is read-only (%s)", method, s.scope.String())
	}
	return nil
}

// LeaseGrant grants a lease through the log.
func (s *kvServer) LeaseGrant(ctx context.Context, call schema.KV_leaseGrant) error {
	args := call.Args()
	ms := args.TtlMillis()
	prefix, err := args.Prefix()
	if err == nil {
		err = s.leaseWritable("leaseGrant")
	}
	if err == nil && s.scope.restricted {
		switch {
		case len(prefix) == 0:
			prefix = s.scope.prefix
		case !bytes.HasPrefix(prefix, s.scope.prefix):
			err = denied("leaseGrant for prefix %s refused: it does not lie within this KV's grant (%s)", quoteKey(prefix), s.scope.String())
		}
	}
	if err == nil && len(prefix) > s.sv.kv.Config().MaxKeySize {
		err = tooLarge("lease prefix of %d bytes is over the key size limit", len(prefix))
	}
	if err != nil {
		return answerError(call.AllocResults, err, s.sv)
	}
	prefix = bytes.Clone(prefix) // the arguments end with the call
	ttl := time.Duration(min(ms, uint64(math.MaxInt64/time.Millisecond))) * time.Millisecond
	call.Go()
	var st leaseStatus
	err = s.leaseCommand(ctx, kv.Command{Kind: kv.CmdLeaseGrant, Lease: kv.LeaseCommand{TTL: ttl, Prefix: prefix}}, false,
		func(a kv.Applied) error {
			if len(a.Results) == 1 && a.Results[0].Code != kv.OK {
				return kvCodeError(a.Results[0])
			}
			if len(a.Leases) != 1 {
				return &requestError{schema.ErrorCode_internal, "lease grant applied without a lease"}
			}
			st = statusOf(a.Leases[0])
			return nil
		},
		func(ctx context.Context, k schema.KV) error {
			f, rel := k.LeaseGrant(ctx, func(p schema.KV_leaseGrant_Params) error {
				p.SetTtlMillis(ms)
				return p.SetPrefix(prefix)
			})
			defer rel()
			r, err := f.Struct()
			if err := forwardedErr(r, err); err != nil {
				return err
			}
			l, err := r.Lease()
			if err != nil {
				return fmt.Errorf("forwarded lease grant: %w", err)
			}
			st = decodeStatus(l)
			return nil
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
		return fillError(e, err, s.sv.d.Leader())
	}
	l, aerr := res.NewLease()
	if aerr != nil {
		return aerr
	}
	return st.encode(l)
}

// LeaseKeepAlive refreshes many leases through one log entry.
func (s *kvServer) LeaseKeepAlive(ctx context.Context, call schema.KV_leaseKeepAlive) error {
	args := call.Args()
	l, err := args.Leases()
	asked, serr := args.Scope()
	if err == nil {
		err = serr
	}
	if err == nil {
		err = s.leaseWritable("leaseKeepAlive")
	}
	scope, inScope := s.leaseScope(asked)
	if err == nil && l.Len() > kv.MaxLeaseIDs {
		err = tooLarge("leaseKeepAlive of %d leases: at most %d a call", l.Len(), kv.MaxLeaseIDs)
	}
	if err != nil {
		return answerError(call.AllocResults, err, s.sv)
	}
	ids := make([]uint64, l.Len())
	for i := range ids {
		ids[i] = l.At(i)
	}
	statuses := make([]leaseStatus, len(ids))
	if !inScope {
		for i := range ids {
			statuses[i] = leaseStatus{id: ids[i]}
		}
		return s.answerStatuses(call, statuses, nil)
	}
	call.Go()
	err = s.leaseCommand(ctx, kv.Command{Kind: kv.CmdLeaseKeepAlive, Lease: kv.LeaseCommand{IDs: ids, Prefix: scope}}, true,
		func(a kv.Applied) error {
			if len(a.Results) != len(ids) || len(a.Leases) != len(ids) {
				return &requestError{schema.ErrorCode_internal, "lease keepalive applied with the wrong number of results"}
			}
			for i := range ids {
				statuses[i] = leaseStatus{id: ids[i]}
				if a.Results[i].Code == kv.OK {
					statuses[i] = statusOf(a.Leases[i])
				}
			}
			return nil
		},
		func(ctx context.Context, k schema.KV) error {
			f, rel := k.LeaseKeepAlive(ctx, func(p schema.KV_leaseKeepAlive_Params) error {
				l, err := p.NewLeases(int32(len(ids)))
				if err != nil {
					return err
				}
				for i, id := range ids {
					l.Set(i, id)
				}
				return p.SetScope(scope)
			})
			defer rel()
			r, err := f.Struct()
			if err := forwardedErr(r, err); err != nil {
				return err
			}
			sl, err := r.Statuses()
			if err != nil || sl.Len() != len(ids) {
				return fmt.Errorf("forwarded lease keepalive: %d statuses for %d leases (%v)", sl.Len(), len(ids), err)
			}
			for i := range ids {
				statuses[i] = decodeStatus(sl.At(i))
			}
			return nil
		})
	return s.answerStatuses(call, statuses, err)
}

// answerStatuses answers a keepalive with statuses, or err.
func (s *kvServer) answerStatuses(call schema.KV_leaseKeepAlive, statuses []leaseStatus, err error) error {
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
	sl, aerr := res.NewStatuses(int32(len(statuses)))
	if aerr != nil {
		return aerr
	}
	for i := range statuses {
		if err := statuses[i].encode(sl.At(i)); err != nil {
			return err
		}
	}
	return nil
}

// LeaseRevoke revokes a lease through the log, deleting its keys.
func (s *kvServer) LeaseRevoke(ctx context.Context, call schema.KV_leaseRevoke) error {
	args := call.Args()
	id := args.Lease()
	asked, err := args.Scope()
	if err == nil {
		err = s.leaseWritable("leaseRevoke")
	}
	scope, inScope := s.leaseScope(asked)
	if err == nil && !inScope {
		err = errLeaseNotFound(id)
	}
	if err != nil {
		return answerError(call.AllocResults, err, s.sv)
	}
	call.Go()
	var rev uint64
	err = s.leaseCommand(ctx, kv.Command{Kind: kv.CmdLeaseRevoke, Lease: kv.LeaseCommand{IDs: []uint64{id}, Prefix: scope}}, true,
		func(a kv.Applied) error {
			if len(a.Results) != 1 {
				return &requestError{schema.ErrorCode_internal, "lease revoke applied without a result"}
			}
			if a.Results[0].Code != kv.OK {
				return kvCodeError(a.Results[0])
			}
			rev = a.Results[0].Revision
			return nil
		},
		func(ctx context.Context, k schema.KV) error {
			f, rel := k.LeaseRevoke(ctx, func(p schema.KV_leaseRevoke_Params) error {
				p.SetLease(id)
				return p.SetScope(scope)
			})
			defer rel()
			r, err := f.Struct()
			if err := forwardedErr(r, err); err != nil {
				return err
			}
			rev = r.Revision()
			return nil
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
		return fillError(e, err, s.sv.d.Leader())
	}
	res.SetRevision(rev)
	return nil
}

// LeaseTimeToLive reads a lease from this node's applied state.
func (s *kvServer) LeaseTimeToLive(_ context.Context, call schema.KV_leaseTimeToLive) error {
	id := call.Args().Lease()
	info, ok := s.sv.kv.Lease(id)
	if !ok || !bytes.HasPrefix(info.Prefix, s.scopePrefix()) {
		return answerError(call.AllocResults, errLeaseNotFound(id), s.sv)
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewLease()
	if err != nil {
		return err
	}
	st := s.sv.readStatus(info)
	return st.encode(l)
}

// maxLeasePage is the most leases one leaseList page returns.
const maxLeasePage = 1000

// LeaseList pages through the leases within the capability's scope, from
// this node's applied state.
func (s *kvServer) LeaseList(_ context.Context, call schema.KV_leaseList) error {
	args := call.Args()
	limit := int(args.Limit())
	if limit <= 0 || limit > maxLeasePage {
		limit = maxLeasePage
	}
	infos, more := s.sv.kv.Leases(s.scopePrefix(), args.After(), limit)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	l, err := res.NewLeases(int32(len(infos)))
	if err != nil {
		return err
	}
	for i := range infos {
		st := s.sv.readStatus(infos[i])
		if err := st.encode(l.At(i)); err != nil {
			return err
		}
	}
	res.SetMore(more)
	return nil
}

// readStatus is a lease read from the applied state, its time left
// counted from this node's clock when that is past the log clock: the
// log clock stands still while no entry is applied, and a lease due
// should read as due.
func (sv *Server) readStatus(info kv.LeaseInfo) leaseStatus {
	st := statusOf(info)
	if now := time.Now().UnixNano(); now > info.Deadline-int64(info.Remaining) {
		st.remaining = time.Duration(info.Deadline - now)
	}
	return st
}

// pastGrace returns the ids of the due leases a leader that took over at
// since may expire at now: those whose TTL plus grace has passed since
// then (a lease due before the change may have been kept alive by calls
// lost in it; its client gets a full TTL and an election to renew it).
func pastGrace(due []kv.LeaseInfo, now, since time.Time, grace time.Duration) []uint64 {
	var ids []uint64
	for _, l := range due {
		if now.After(since.Add(l.TTL + grace)) {
			ids = append(ids, l.ID)
		}
	}
	return ids
}

func errLeaseNotFound(id uint64) error {
	return &requestError{schema.ErrorCode_leaseNotFound, fmt.Sprintf("lease %d is unknown, expired or revoked", id)}
}

// startLeaseExpirer starts the lease expirer of a leadership that began at since,
// ending the previous one's.
func (sv *Server) startLeaseExpirer(since time.Time) {
	sv.leaseMu.Lock()
	defer sv.leaseMu.Unlock()
	if sv.leaseStop != nil {
		close(sv.leaseStop)
		sv.leaseStop = nil
	}
	stop := make(chan struct{})
	if sv.goUntilClosedLocked(func() { sv.expireLeases(since, stop) }) {
		sv.leaseStop = stop
	}
}

// expireLeases proposes the expiry of the leases due while this node
// leads (see the top of the file), polling every tick; it returns when
// the node no longer leads, stop is closed or the services close.
func (sv *Server) expireLeases(since time.Time, stop <-chan struct{}) {
	grace := sv.cfg.ElectionTimeout
	tick := time.NewTicker(sv.d.TickInterval())
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-sv.stopc:
			return
		case <-tick.C:
		}
		if !sv.d.IsLeader() {
			return
		}
		now := time.Now()
		due, _, _ := sv.kv.DueLeases(now.UnixNano(), kv.MaxLeaseIDs)
		ids := pastGrace(due, now, since, grace)
		if len(ids) == 0 {
			continue
		}
		ctx, cancel := sv.untilStopped(sv.cfg.RequestTimeout)
		_, err := sv.proposeCommand(ctx, kv.Command{Kind: kv.CmdLeaseExpire, Lease: kv.LeaseCommand{IDs: ids}})
		cancel()
		if err != nil {
			// The next tick (or the next leader) tries again: an expiry
			// applied twice ends the lease once.
			sv.log.Debug("could not expire leases", "leases", len(ids), "error", err)
		}
	}
}

// leaseMethods adds the lease methods to the KV capability's methods
// served by go-capnp's server (they are rare next to keepalives, one a
// client per interval, and block while they forward).
func (s *kvServer) leaseMethods(rest map[string]func(context.Context, *server.Call) error) {
	rest["leaseGrant"] = func(ctx context.Context, c *server.Call) error {
		return s.LeaseGrant(ctx, schema.KV_leaseGrant{Call: c})
	}
	rest["leaseKeepAlive"] = func(ctx context.Context, c *server.Call) error {
		return s.LeaseKeepAlive(ctx, schema.KV_leaseKeepAlive{Call: c})
	}
	rest["leaseRevoke"] = func(ctx context.Context, c *server.Call) error {
		return s.LeaseRevoke(ctx, schema.KV_leaseRevoke{Call: c})
	}
	rest["leaseTimeToLive"] = func(ctx context.Context, c *server.Call) error {
		return s.LeaseTimeToLive(ctx, schema.KV_leaseTimeToLive{Call: c})
	}
	rest["leaseList"] = func(ctx context.Context, c *server.Call) error {
		return s.LeaseList(ctx, schema.KV_leaseList{Call: c})
	}
}
