package services

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/capraft/capraft/internal/kvwire"
	"github.com/capraft/capraft/schema"
)

// kvScope is what a KV capability grants. The zero value grants
// everything: every key, reads and writes, for as long as the capability
// lives. KV.restrict derives narrower scopes (narrow); a scope never
// widens.
//
// A scope is enforced on the node that receives the call, before the
// request runs or is handed to the leader: what a follower forwards is
// already confined (a range is narrowed, a refused op never leaves), so
// the leader can serve forwarded requests with full authority.
type kvScope struct {
	// restricted confines every operation to the keys that start with
	// prefix (the empty prefix is every key).
	restricted bool
	prefix     []byte
	// readOnly refuses writes, and the session methods (sessions exist
	// to write).
	readOnly bool
	// A credential that can end (a token) is checked on every call by
	// the Exporter the capability is exported through (see
	// rpc.Exporter.WithCheck), so capabilities derived by restrict end
	// with it too.
}

// confines reports whether operations need checking at all: false for
// the zero scope, which costs requests this one test.
func (s *kvScope) confines() bool { return s.restricted || s.readOnly }

// String describes the grant for error messages.
func (s *kvScope) String() string {
	var b strings.Builder
	if s.restricted {
		fmt.Fprintf(&b, "keys with prefix %s", quoteKey(s.prefix))
	} else {
		b.WriteString("every key")
	}
	if s.readOnly {
		b.WriteString(", read-only")
	} else {
		b.WriteString(", read-write")
	}
	return b.String()
}

// narrow returns s further restricted as KV.restrict asks: to prefix
// when restrictPrefix is set (it must lie within s's prefix), and
// read-only when readOnly is set or s already is.
func (s kvScope) narrow(prefix []byte, restrictPrefix, readOnly bool) (kvScope, error) {
	if restrictPrefix {
		if s.restricted && !bytes.HasPrefix(prefix, s.prefix) {
			return kvScope{}, denied("restrict to prefix %s refused: it does not lie within this KV's grant (%s); a restriction only narrows",
				quoteKey(prefix), s.String())
		}
		s.restricted, s.prefix = true, bytes.Clone(prefix)
	}
	s.readOnly = s.readOnly || readOnly
	return s, nil
}

// confine checks o against s and returns the error o is answered with
// when s does not grant it. A range over a prefix wider than s's
// (a prefix of it: the empty prefix, say) is narrowed in place to s's
// prefix: it then reads exactly the keys both prefixes select, so its
// pages, and whether more follow, never reach past the grant. A range
// whose prefix neither lies within s's nor contains it selects no key
// s grants, and is refused.
func (s *kvScope) confine(o *kvwire.Op) error {
	if o.Kind == kvwire.Txn {
		return s.confineTxn(o)
	}
	if s.readOnly && o.IsWrite() {
		what := "key"
		if o.Prefix {
			what = "prefix"
		}
		return denied("%s of %s %s refused: this KV is read-only (%s)", o.Kind, what, quoteKey(o.Key), s.String())
	}
	if !s.restricted || bytes.HasPrefix(o.Key, s.prefix) {
		return nil
	}
	if o.Kind == kvwire.Delete && o.Prefix {
		// Never narrowed, unlike a range: a delete must not quietly do
		// less than asked.
		return denied("delete of prefix %s is outside this KV's grant (%s): a prefix to delete must start with the grant's",
			quoteKey(o.Key), s.String())
	}
	if o.Kind == kvwire.Range {
		if bytes.HasPrefix(s.prefix, o.Key) {
			o.Key = s.prefix
			return nil
		}
		return denied("range over prefix %s is outside this KV's grant (%s)", quoteKey(o.Key), s.String())
	}
	return denied("%s of key %s is outside this KV's grant (%s)", o.Kind, quoteKey(o.Key), s.String())
}

// confineBatch confines the operations of a batch that have no error
// yet, recording refusals in bad. A refused read fails alone. A refused
// write refuses the whole batch: every other operation is answered that
// the batch was refused, and nothing in it runs.
func (s *kvScope) confineBatch(ops []kvwire.Op, bad []error) {
	refused := -1
	for i := range ops {
		if bad[i] != nil {
			continue
		}
		if bad[i] = s.confine(&ops[i]); bad[i] != nil && refused < 0 && ops[i].IsWrite() {
			refused = i
		}
	}
	if refused < 0 {
		return
	}
	// One short message for all: a batch may hold a thousand operations.
	err := denied("not run: this batch was refused because this KV does not grant its operation %d (a %s); nothing in the batch was applied",
		refused, ops[refused].Kind)
	for i := range bad {
		if bad[i] == nil {
			bad[i] = err
		}
	}
}

// screen wraps answer to withhold what a write's result says about a key
// outside s: a write whose session and sequence number were used before
// is answered with the saved result of that earlier write, whatever key
// it wrote, and sessions are not tied to a capability. The result of a
// write that found a previous state names that state's key; one outside
// the grant is replaced by a refusal. ops is read for kinds and sequence
// numbers only (their keys may be released by the time answer runs).
func (s *kvScope) screen(session uint64, ops []kvwire.Op, answer func([]kvResult)) func([]kvResult) {
	return func(rs []kvResult) {
		for i := range rs {
			r := &rs[i]
			if r.err == nil && ops[i].IsWrite() && r.w.Found && !bytes.HasPrefix(r.w.Prev.Key, s.prefix) {
				*r = kvResult{err: denied("%s with sequence number %d of session %d answered an earlier write outside this KV's grant (%s): use sequence numbers of your own",
					ops[i].Kind, ops[i].Seq, session, s.String())}
			}
		}
		answer(rs)
	}
}

// hasWrite reports whether ops hold a write.
func hasWrite(ops []kvwire.Op) bool {
	for i := range ops {
		if ops[i].IsWrite() {
			return true
		}
	}
	return false
}

// deniedSession is the answer to a session method on a read-only KV.
func (s *kvScope) deniedSession(method string) error {
	return denied("%s refused: this KV is read-only (%s) and sessions are for writing", method, s.String())
}

// denied is the error of an operation outside a capability's grant. The
// text starts "permissionDenied: " as the authority errors do, so a
// client that prints only the message still says what happened.
func denied(format string, args ...any) error {
	return &requestError{schema.ErrorCode_permissionDenied, "permissionDenied: " + fmt.Sprintf(format, args...)}
}

// quoteKey quotes a key or prefix for an error message, cut short: every
// refused operation of a large batch carries its own message, and the
// answer must stay within a client's message size limit.
func quoteKey(k []byte) string {
	const maxShown = 64
	if len(k) > maxShown {
		return fmt.Sprintf("%q…(%d bytes)", k[:maxShown], len(k))
	}
	return fmt.Sprintf("%q", k)
}
