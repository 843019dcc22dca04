package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/raftnode/watch"
	"github.com/capraft/capraft/schema"
)

// Watch starts a watch (see KV.watch in schema/kv.capnp): it confines
// the watched keys to the capability's grant, waits for a read index when
// the start is linearizable, and hands the watcher to the node's watch
// hub, which serves it from this node's applied state. The handle it
// returns ends the watch when cancelled or released.
func (s *kvServer) Watch(ctx context.Context, call schema.KV_watch) error {
	args := call.Args()
	req, err := s.watchRequest(args)
	var w schema.Watcher
	if err == nil {
		if w = args.Watcher(); !w.IsValid() {
			err = invalid("watch without a watcher capability")
		} else {
			w = w.AddRef() // the arguments go when the handler returns
		}
	}
	if err == nil && args.HasReq() {
		if r, _ := args.Req(); r.Linearizable() {
			call.Go()
			err = s.linearizableStart(ctx, &req)
		}
	}
	var start uint64
	var cancel func()
	if err == nil {
		start, cancel, err = s.sv.watches.Watch(w, req, s.ex.Check)
	} else if w.IsValid() {
		w.Release()
	}
	res, aerr := call.AllocResults()
	if aerr != nil {
		if cancel != nil {
			cancel()
		}
		return aerr
	}
	if err != nil {
		var ce *kv.CompactedError
		if errors.As(err, &ce) {
			res.SetOldestRevision(ce.Oldest)
			err = &requestError{schema.ErrorCode_compacted, "compacted: " + ce.Error()}
		} else if errors.Is(err, watch.ErrClosed) {
			err = &requestError{schema.ErrorCode_shuttingDown, err.Error()}
		}
		e, aerr := res.NewError()
		if aerr != nil {
			return aerr
		}
		return fillError(e, err, s.sv.d.Leader())
	}
	res.SetStartRevision(start)
	h := &watchHandle{cancel: cancel}
	return res.SetHandle(schema.Subscription(s.ex.Export(schema.Subscription_Methods(nil, h), h, h)))
}

// watchRequest reads a watch's request, confined to the capability's
// grant: a prefix within the grant is watched as is, a wider one is
// narrowed to the grant's prefix (as range is), any other is refused.
func (s *kvServer) watchRequest(args schema.KV_watch_Params) (watch.Request, error) {
	var req watch.Request
	r, err := args.Req()
	if err != nil {
		return req, invalid("watch request: %v", err)
	}
	prefix, err := r.Prefix()
	if err != nil {
		return req, invalid("watch prefix: %v", err)
	}
	if lim := s.sv.kv.Config().MaxKeySize; len(prefix) > lim {
		return req, tooLarge("watch prefix of %d bytes is over the key size limit of %d bytes", len(prefix), lim)
	}
	req = watch.Request{
		Prefix:   bytes.Clone(prefix),
		Exact:    r.Exact(),
		From:     r.FromRevision(),
		WithPrev: r.PrevValue(),
		Progress: time.Duration(r.ProgressMillis()) * time.Millisecond,
	}
	if r.Linearizable() && req.From != 0 {
		return req, invalid("a linearizable watch starts after a read index: give fromRevision 0, not %d", req.From)
	}
	if sc := &s.scope; sc.restricted && !bytes.HasPrefix(req.Prefix, sc.prefix) {
		if req.Exact || !bytes.HasPrefix(sc.prefix, req.Prefix) {
			what := "prefix"
			if req.Exact {
				what = "key"
			}
			return req, denied("watch of %s %s is outside this KV's grant (%s)", what, quoteKey(req.Prefix), sc.String())
		}
		req.Prefix = bytes.Clone(sc.prefix)
	}
	return req, nil
}

// linearizableStart waits for a read index (within the request timeout)
// and sets req to start after the revision this node then applied, so
// the watch sees every write acknowledged before it was asked for.
func (s *kvServer) linearizableStart(ctx context.Context, req *watch.Request) error {
	if s.sv.d.Stopped() {
		return s.sv.d.StoppedError()
	}
	ctx, cancel := context.WithTimeout(ctx, s.sv.cfg.RequestTimeout)
	defer cancel()
	if err := s.sv.d.ReadIndex(ctx); err != nil {
		return fmt.Errorf("linearizable watch start: %w", err)
	}
	_, head := s.sv.kv.HistoryBounds()
	req.From = head + 1
	return nil
}

// watchHandle is the Subscription a watch's caller holds.
type watchHandle struct {
	once   sync.Once
	cancel func()
}

// Cancel ends the watch: once it returns, no further events call is made
// (one in flight is cancelled, though it may have arrived).
func (h *watchHandle) Cancel(context.Context, schema.Subscription_cancel) error {
	h.once.Do(h.cancel)
	return nil
}

// Shutdown runs when the caller releases the handle or disconnects.
func (h *watchHandle) Shutdown() { h.once.Do(h.cancel) }
