package services

import (
	"errors"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
	"github.com/capraft/capraft/schema"
)

// The one map from what went wrong to what a client sees: a code it acts
// on and a message for humans. The driver's domain errors (errorCode) and
// the state machine's refusals of writes (kvCodeError) are mapped here;
// the services' own refusals (permission, limits, arguments) and the
// answers of forwarded calls carry their code (requestError).

// requestError is an error a request is answered with that carries its
// code: one the services decided, or one a leader answered a forwarded
// call with.
type requestError struct {
	code schema.ErrorCode
	msg  string
}

func (e *requestError) Error() string { return e.msg }

// The services' own errors. Their messages say what to do next.
var (
	errBatchFull = &requestError{schema.ErrorCode_unavailable, "this batch's answers reached the size limit before this read: retry it"}
)

// errorCode maps any error to the code a client sees, and its message.
func errorCode(err error) (schema.ErrorCode, string) {
	var re *requestError
	if errors.As(err, &re) {
		return re.code, err.Error()
	}
	return domainCode(err), err.Error()
}

// domainCode is the code of one of the driver's errors (internal for any
// other error).
func domainCode(err error) schema.ErrorCode {
	var invalid *driver.InvalidError
	var moved *driver.LeaderMovedError
	switch {
	case errors.Is(err, driver.ErrStopped):
		return schema.ErrorCode_shuttingDown
	case errors.Is(err, driver.ErrOutcomeUnknown),
		errors.Is(err, driver.ErrChangeOutcomeUnknown),
		errors.Is(err, driver.ErrTransferOutcomeUnknown):
		return schema.ErrorCode_outcomeUnknown
	case errors.Is(err, driver.ErrTimeout):
		return schema.ErrorCode_timeout
	case errors.Is(err, driver.ErrNoLeader),
		errors.Is(err, driver.ErrNotLeader),
		errors.Is(err, driver.ErrDropped),
		errors.Is(err, driver.ErrConfNotApplied),
		errors.Is(err, driver.ErrChangeInProgress),
		errors.As(err, &moved):
		return schema.ErrorCode_unavailable
	case errors.As(err, &invalid):
		return schema.ErrorCode_invalidArgument
	}
	return schema.ErrorCode_internal
}

// kvCodeError turns a state machine's refusal into a request error.
func kvCodeError(r kv.Result) error {
	code := schema.ErrorCode_internal
	switch r.Code {
	case kv.SessionExpired:
		code = schema.ErrorCode_sessionExpired
	case kv.StaleSequence:
		code = schema.ErrorCode_staleSequence
	case kv.InvalidArgument:
		code = schema.ErrorCode_invalidArgument
	case kv.TooLarge:
		code = schema.ErrorCode_tooLarge
	case kv.LeaseNotFound:
		code = schema.ErrorCode_leaseNotFound
	}
	msg := r.Message
	if msg == "" {
		msg = r.Code.String()
	}
	return &requestError{code, msg}
}
