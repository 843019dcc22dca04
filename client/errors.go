package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/capraft/capraft/schema"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrLeaseNotFound is wrapped by the errors of lease operations, and
	// of puts with a lease, whose lease is unknown, expired or revoked.
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrCompareFailed: a compare-and-swap or compare-and-delete found the
	// key in another state than expected; nothing was written. The error
	// is a *CompareFailedError holding the key's current state.
	ErrCompareFailed = errors.New("compare failed")
	// ErrUnknownOutcome: a write, a membership change or a leadership
	// transfer may or may not have taken effect (an attempt reached a node
	// but its answer was lost, or the node did not see it through, and it
	// could not be retried to a conclusion). The error says how to find
	// out: read the key, list the members, see which node leads.
	ErrUnknownOutcome = errors.New("outcome unknown: it may or may not have taken effect")
	// ErrSessionExpired: the cluster forgot the client's session (it was
	// idle for longer than its time to live). Writes that were never
	// attempted are resent in a new session automatically; a retried
	// write whose session expired returns ErrUnknownOutcome wrapping this.
	ErrSessionExpired = errors.New("session expired")
	// ErrPermissionDenied: the credential the client presented (or its
	// absence) does not grant the operation, or a token was refused at
	// login (malformed, tampered, expired or revoked). The error is a
	// *ServerError with CodePermissionDenied whose Message is the node's
	// and names the credential needed. It is not retried: another node
	// would answer the same.
	ErrPermissionDenied = errors.New("permission denied")
)

// ErrorCode classifies an error answered by a node. It mirrors the
// schema's ErrorCode.
type ErrorCode uint16

// Error codes, as in schema/kv.capnp.
const (
	CodeInternal        = ErrorCode(schema.ErrorCode_internal)
	CodeUnavailable     = ErrorCode(schema.ErrorCode_unavailable)
	CodeOutcomeUnknown  = ErrorCode(schema.ErrorCode_outcomeUnknown)
	CodeSessionExpired  = ErrorCode(schema.ErrorCode_sessionExpired)
	CodeInvalidArgument = ErrorCode(schema.ErrorCode_invalidArgument)
	CodeTooLarge        = ErrorCode(schema.ErrorCode_tooLarge)
	CodeStaleSequence   = ErrorCode(schema.ErrorCode_staleSequence)
	CodeShuttingDown    = ErrorCode(schema.ErrorCode_shuttingDown)
	CodeTimeout         = ErrorCode(schema.ErrorCode_timeout)
	// CodePermissionDenied: outside what the connection's credential
	// grants; errors.Is(err, ErrPermissionDenied) holds.
	CodePermissionDenied = ErrorCode(schema.ErrorCode_permissionDenied)
	// CodeLeaseNotFound: the lease is unknown, expired or revoked;
	// errors.Is(err, ErrLeaseNotFound) holds.
	CodeLeaseNotFound = ErrorCode(schema.ErrorCode_leaseNotFound)
)

// String returns the code's name as in the schema ("tooLarge").
func (c ErrorCode) String() string { return schema.ErrorCode(c).String() }

// ServerError is an error a node answered with, for the cases that have no
// sentinel of their own (an invalid or too large request, an internal
// error) and, wrapped in an UnavailableError or with ErrUnknownOutcome,
// for the transient ones the client retried until its context ended.
type ServerError struct {
	Code       ErrorCode
	Message    string
	Addr       string // the node that answered
	LeaderHint uint64 // the node id the answering node believed to lead, or 0
}

// Error describes the node's message, the answering node and what to do next.
func (e *ServerError) Error() string {
	msg := e.Message
	switch {
	case e.Code == CodePermissionDenied:
		msg = ErrPermissionDenied.Error() + ": " + msg
	case msg == "":
		msg = e.Code.String()
	}
	s := fmt.Sprintf("%s (from %s)", msg, e.Addr)
	if e.Addr == "" {
		s = msg
	}
	switch e.Code {
	case CodeInvalidArgument:
		return s + "; fix the request, retrying will not help"
	case CodeTooLarge:
		return s + "; split the request or shrink the value, retrying will not help"
	case CodeInternal:
		return s + "; see the node's log"
	}
	return s
}

// Is makes errors.Is(err, ErrSessionExpired) true for a sessionExpired
// answer, errors.Is(err, ErrTooLarge) for a tooLarge one and
// errors.Is(err, ErrPermissionDenied) for a permissionDenied one.
func (e *ServerError) Is(target error) bool {
	return target == ErrSessionExpired && e.Code == CodeSessionExpired ||
		target == ErrTooLarge && e.Code == CodeTooLarge ||
		target == ErrPermissionDenied && e.Code == CodePermissionDenied ||
		target == ErrLeaseNotFound && e.Code == CodeLeaseNotFound
}

// permissionPrefix starts the text of every exception a node raises for a
// capability the connection does not hold (see schema/node.capnp).
const permissionPrefix = "permissionDenied: "

// permissionError returns the *ServerError for err, an exception from the
// node at addr, if its text says permission was denied; else nil. The
// message is the node's, from after the prefix (which repeats the code).
func permissionError(err error, addr string) *ServerError {
	if err == nil {
		return nil
	}
	msg := err.Error()
	i := strings.Index(msg, permissionPrefix)
	if i < 0 {
		return nil
	}
	return &ServerError{Code: CodePermissionDenied, Message: msg[i+len(permissionPrefix):], Addr: addr}
}

// CompareFailedError reports a failed compare-and-swap or
// compare-and-delete. errors.Is(err, ErrCompareFailed) holds for it.
type CompareFailedError struct {
	Key string
	// Current is the key's current state, or nil if the key does not exist.
	Current *KeyValue
	// Revision is the store's revision at which the compare was made.
	Revision uint64
}

// Error describes the key and its current state.
func (e *CompareFailedError) Error() string {
	if e.Current == nil {
		return fmt.Sprintf("compare failed on key %q: the key does not exist", e.Key)
	}
	return fmt.Sprintf("compare failed on key %q: its mod revision is %d, value %s",
		e.Key, e.Current.ModRevision, quoteValue(e.Current.Value))
}

// Is makes errors.Is(err, ErrCompareFailed) true.
func (e *CompareFailedError) Is(target error) bool { return target == ErrCompareFailed }

// quoteValue shows a value in an error message, shortened if long.
func quoteValue(v []byte) string {
	const max = 64
	if len(v) > max {
		return fmt.Sprintf("%q... (%d bytes)", v[:max], len(v))
	}
	return fmt.Sprintf("%q", v)
}

// UnavailableError reports that no node could serve the operation: none
// could be reached, or those reached had no leader, until the operation's
// context ended. It wraps the errors met (and the context's error).
type UnavailableError struct {
	op     string // the operation that gave up, if any
	causes []error
	ctxErr error // the context's error, when the operation gave up
}

// Error describes the errors met, and why the operation gave up.
func (e *UnavailableError) Error() string {
	msgs := make([]string, len(e.causes))
	for i, err := range e.causes {
		msgs[i] = err.Error()
	}
	if e.op != "" {
		s := e.op + ": unavailable: "
		if len(msgs) == 0 {
			s += "no node answered"
		} else {
			s += strings.Join(msgs, "; ")
		}
		if e.ctxErr != nil {
			s += " (gave up: " + e.ctxErr.Error() + "; is a majority of the cluster up and reachable?)"
		}
		return s
	}
	if len(e.causes) == 1 {
		return msgs[0]
	}
	return "no endpoint reachable: " + strings.Join(msgs, "; ")
}

// Unwrap returns the errors met at each endpoint, and the context's error
// if the operation gave up.
func (e *UnavailableError) Unwrap() []error {
	if e.ctxErr == nil {
		return e.causes
	}
	return append(append([]error(nil), e.causes...), e.ctxErr)
}

// IsUnavailable reports whether err says that no node could serve the
// operation (none reachable, or no leader).
func IsUnavailable(err error) bool {
	var u *UnavailableError
	return errors.As(err, &u)
}

// unavailable builds the error for an operation retried in vain until its
// context ended: the last failure (if any) and the context's error.
func unavailable(op string, last, ctxErr error) error {
	e := &UnavailableError{op: op, ctxErr: ctxErr}
	var u *UnavailableError
	switch {
	case last == nil:
	case errors.As(last, &u):
		e.causes = append(e.causes, u.causes...)
	default:
		e.causes = append(e.causes, last)
	}
	return e
}

// outcome says what a call whose outcome is unknown may have done, and
// how to find out.
type outcome struct{ effect, check string }

var (
	writeOutcome    = outcome{"the write may or may not have been applied", "read the key to find out"}
	memberOutcome   = outcome{"the membership change may or may not have been made", "list the members to find out"}
	transferOutcome = outcome{"leadership may or may not have moved", "see which node leads to find out"}
)

// unknownOutcomeError wraps ErrUnknownOutcome and the failure that caused
// it.
type unknownOutcomeError struct {
	op    string
	what  outcome
	cause error
}

// Error says the call's outcome is unknown, what it may have done, how to
// find out, and why.
func (e *unknownOutcomeError) Error() string {
	s := e.op + ": outcome unknown: " + e.what.effect + "; " + e.what.check
	if e.cause == nil {
		return s
	}
	return s + ": " + e.cause.Error()
}

func (e *unknownOutcomeError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrUnknownOutcome}
	}
	return []error{ErrUnknownOutcome, e.cause}
}

// CallError reports a call that reached a node and failed.
type CallError struct {
	Op             string // the operation, e.g. "ping"
	Addr           string // the node's address
	ConnectionLost bool   // the connection broke; the call's outcome is unknown
	Err            error
}

// Error describes the call, the node and the cause.
func (e *CallError) Error() string {
	if e.ConnectionLost {
		return fmt.Sprintf("connection to %s lost during %s: %s", e.Addr, e.Op, rootMessage(e.Err))
	}
	return fmt.Sprintf("%s on %s failed: %s", e.Op, e.Addr, rootMessage(e.Err))
}

// Unwrap returns the underlying error.
func (e *CallError) Unwrap() error { return e.Err }

// rootMessage returns the innermost message of a go-capnp error, without
// the "schema/x.capnp:Iface.method:" prefixes that only repeat the call.
func rootMessage(err error) string {
	for {
		inner := errors.Unwrap(err)
		if inner == nil {
			return err.Error()
		}
		err = inner
	}
}

// serverError converts a schema Error answered by the node at addr.
func serverError(e schema.Error, addr string) *ServerError {
	msg, _ := e.Message_()
	code := ErrorCode(e.Code())
	return &ServerError{Code: code, Message: trimCode(code, msg), Addr: addr, LeaderHint: e.LeaderHint()}
}

// trimCode drops a "permissionDenied: " the node may have started a
// permissionDenied answer's message with: Error says it already.
func trimCode(code ErrorCode, msg string) string {
	if code == CodePermissionDenied {
		return strings.TrimPrefix(msg, permissionPrefix)
	}
	return msg
}
