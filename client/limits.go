package client

import (
	"errors"
	"fmt"
	"strings"

	"github.com/capraft/capraft/internal/kvwire"
)

// The limits of a node with the default configuration (raftnode/kv's
// defaults). The client checks keys and values against them before it
// sends anything, so an oversized request costs no round trip; a node
// configured otherwise still answers for itself (CodeTooLarge). Raise or
// lower them with WithSizeLimits.
const (
	DefaultMaxKeySize   = 8 << 10 // bytes of a key (also a range's prefix and start)
	DefaultMaxValueSize = 1 << 20 // bytes of a value (also a compare-and-swap's expected value)
)

// A node refuses a batch of more operations, or more bytes of keys and
// values, than these (raftnode/kv's MaxBatchOps and MaxBatchBytes): the
// client never coalesces more into one call, whatever WithMaxBatch says.
const (
	nodeMaxBatchOps   = 1024
	nodeMaxBatchBytes = 3 << 20
)

// WithSizeLimits sets the largest key and value the client sends (default
// DefaultMaxKeySize and DefaultMaxValueSize, a default node's limits). Set
// them to a cluster's limits if it was configured with others; zero keeps
// a default.
func WithSizeLimits(maxKey, maxValue int) Option {
	return func(o *options) { o.maxKeySize, o.maxValueSize = maxKey, maxValue }
}

// ErrTooLarge matches (errors.Is) every refusal of a key, value or batch
// over the limits: the client's own (*TooLargeError, nothing was sent)
// and a node's (*ServerError with CodeTooLarge). Retrying will not help.
var ErrTooLarge = errors.New("too large")

// TooLargeError reports an operation the client refused to send because
// a key or value is over its limits (see WithSizeLimits). Nothing was
// sent. It matches ErrTooLarge, and errors.As also finds it as a
// *ServerError with CodeTooLarge, as a node's refusal would be.
type TooLargeError struct {
	Op    string // the operation, e.g. `put "k"` (a long key shortened)
	What  string // "key", "value", "expected value", "range start key"
	Size  int    // bytes
	Limit int    // bytes
}

// Error names the part over the limit, its size and the limit.
func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s: %s of %d bytes is over the %s size limit of %d bytes; shrink it, retrying will not help",
		e.Op, e.What, e.Size, limitName(e.What), e.Limit)
}

func limitName(what string) string {
	if strings.HasSuffix(what, "key") { // "key", "range start key", "compare key"
		return "key"
	}
	return "value"
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// As lets code that handles a node's answers by code (errors.As into a
// *ServerError) treat the client's refusal like the node's.
func (e *TooLargeError) As(target any) bool {
	p, ok := target.(**ServerError)
	if ok {
		*p = &ServerError{Code: CodeTooLarge, Message: fmt.Sprintf("%s: %s of %d bytes is over the %s size limit of %d bytes",
			e.Op, e.What, e.Size, limitName(e.What), e.Limit)}
	}
	return ok
}

// checkSize refuses req if a key or value is over the client's limits.
func (c *Client) checkSize(req *request) error {
	lim := kvwire.Limits{MaxKeySize: c.opts.maxKeySize, MaxValueSize: c.opts.maxValueSize}
	if e := req.op.OverLimit(lim); e != nil {
		return &TooLargeError{Op: req.describe(), What: e.Part, Size: e.Size, Limit: e.Limit}
	}
	return nil
}
