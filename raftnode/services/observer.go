package services

import (
	"time"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/raftnode/kv"
)

// RequestObserver sees every KV request this node answers, for metrics.
// It runs on whichever goroutine answers the request and must not block.
type RequestObserver interface {
	// Request reports a KV call: its method (put, get, delete, cas,
	// range, txn, batch), the code it was answered with ("ok", or the
	// schema's ErrorCode name of the first operation that failed), and
	// how long it took from its arrival.
	Request(method, code string, took time.Duration)
}

// observed returns answer, reporting the request to the configured
// RequestObserver first; ops are the operations got answers, in order.
func (sv *Server) observed(method string, ops []kvwire.Op, answer func([]kvResult)) func([]kvResult) {
	obs := sv.cfg.Requests
	if obs == nil {
		return answer
	}
	start := time.Now()
	return func(got []kvResult) {
		obs.Request(method, resultCode(ops, got), time.Since(start))
		answer(got)
	}
}

// resultCode is the code a request answered with got is counted under:
// the first failed operation's, as its client sees it.
func resultCode(ops []kvwire.Op, got []kvResult) string {
	for i := range got {
		err := got[i].err
		if err == nil && i < len(ops) && (ops[i].IsWrite() || ops[i].Kind == kvwire.Txn) && got[i].w.Code != kv.OK {
			err = kvCodeError(got[i].w)
		}
		if err != nil {
			code, _ := errorCode(err)
			return code.String()
		}
	}
	return "ok"
}
