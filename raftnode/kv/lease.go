package kv

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/google/btree"
)

// Leases. A lease is granted through the log (its id is the grant
// entry's index) with a TTL; keys written with the lease (WriteOp.Lease,
// TxnOp.Lease) are deleted when it is revoked or expires. Its deadline is
// in log time: the grant and every keepalive set it to the store's clock
// plus the TTL.
//
// A lease never expires by itself as entries are applied: expiry is an
// entry of its own (CmdLeaseExpire), which the leader proposes when it
// sees a lease due (DueLeases) and which deletes only the leases whose
// deadline the log clock has passed when it is applied. Followers never
// expire anything on their own clock, a keepalive applied before the
// expiry entry saves the lease, and an expiry entry proposed twice (by
// two leaders) deletes the lease once: the second finds it gone. When
// the leader proposes expiries is its policy (the services give leases a
// grace after a leader change); what they do is the log's.
//
// The keys of the leases one revoke or expire entry deletes are deleted
// as one transaction: through the transaction path, at one revision.

// Lease limits' defaults (see Config).
const (
	DefaultMinLeaseTTL = time.Second
	DefaultMaxLeaseTTL = 24 * time.Hour
	DefaultMaxLeases   = 100_000
)

// MaxLeaseIDs is the most lease ids one keepalive, revoke or expire
// command carries.
const MaxLeaseIDs = 1024

// LeaseCommand is the body of the lease commands.
type LeaseCommand struct {
	// TTL (CmdLeaseGrant) is the lease's time to live, within the store's
	// MinLeaseTTL and MaxLeaseTTL.
	TTL time.Duration
	// Prefix (CmdLeaseGrant) bounds the keys the lease may be attached
	// to: the granting capability's prefix (empty: any key). For the
	// other commands it is the scope of the capability that sent them:
	// a lease whose prefix does not start with it is left alone, as if
	// it did not exist (LeaseNotFound).
	Prefix []byte
	// IDs (CmdLeaseRevoke, CmdLeaseKeepAlive, CmdLeaseExpire) are the
	// leases the command acts on, at most MaxLeaseIDs.
	IDs []uint64
}

// LeaseInfo is a lease's state.
type LeaseInfo struct {
	// ID is the lease's id: its grant entry's log index.
	ID uint64
	// TTL is the time to live it was granted with.
	TTL time.Duration
	// Deadline is the log time (unix nanoseconds) after which the lease
	// may be expired; Remaining is Deadline minus the store's log clock
	// (negative: due).
	Deadline  int64
	Remaining time.Duration
	// Prefix bounds the keys the lease may be attached to. Shared with
	// the store: read-only.
	Prefix []byte
	// Keys is the number of keys attached (Lease only; -1 in Leases).
	Keys int
}

// Lease result messages.
const (
	msgLeaseNotFound = "lease unknown, expired or revoked"
	msgLeaseTTL      = "lease TTL outside the store's bounds"
	msgLeasesFull    = "the store holds the maximum number of leases"
	msgLeasePrefix   = "key outside the prefix of its lease"
	msgLeaseIDs      = "too many lease ids in one command"
)

// lease is a lease's stored state, a value: a change replaces it, so
// snapshots share the tree.
type lease struct {
	id       uint64
	ttl      int64 // nanoseconds
	deadline int64
	prefix   []byte // never modified
}

func lessLease(a, b lease) bool { return a.id < b.id }

// leaseExp orders the leases by deadline, then id: the minimum is the
// next due.
type leaseExp struct {
	deadline int64
	id       uint64
}

func lessLeaseExp(a, b leaseExp) bool {
	if a.deadline != b.deadline {
		return a.deadline < b.deadline
	}
	return a.id < b.id
}

// attachment is a key attached to a lease; the key is the entry's.
type attachment struct {
	lease uint64
	key   []byte
}

func lessAttachment(a, b attachment) bool {
	if a.lease != b.lease {
		return a.lease < b.lease
	}
	return bytes.Compare(a.key, b.key) < 0
}

// leaseTrees is the lease state: the leases by id, by deadline, and the
// keys attached to each.
type leaseTrees struct {
	leases   *btree.BTreeG[lease]
	leaseExp *btree.BTreeG[leaseExp]
	attached *btree.BTreeG[attachment]
}

func newLeaseTrees() leaseTrees {
	return leaseTrees{
		leases:   btree.NewG(treeDegree, lessLease),
		leaseExp: btree.NewG(treeDegree, lessLeaseExp),
		attached: btree.NewG(treeDegree, lessAttachment),
	}
}

// clone returns copy-on-write clones of the trees.
func (t leaseTrees) clone() leaseTrees {
	return leaseTrees{leases: t.leases.Clone(), leaseExp: t.leaseExp.Clone(), attached: t.attached.Clone()}
}

// leaseDeadline returns clock+ttl, saturating.
func leaseDeadline(clock, ttl int64) int64 {
	if clock > math.MaxInt64-ttl {
		return math.MaxInt64
	}
	return clock + ttl
}

func (s *Store) leaseInfo(l lease) LeaseInfo {
	return LeaseInfo{ID: l.id, TTL: time.Duration(l.ttl), Deadline: l.deadline, Remaining: time.Duration(l.deadline - s.clock), Prefix: l.prefix, Keys: -1}
}

// grantLease grants the lease id (the entry's index).
func (s *Store) grantLease(id uint64, c *LeaseCommand) (Result, LeaseInfo) {
	switch {
	case c.TTL < s.cfg.MinLeaseTTL || c.TTL > s.cfg.MaxLeaseTTL:
		return Result{Code: InvalidArgument, Message: msgLeaseTTL, Revision: s.rev}, LeaseInfo{}
	case len(c.Prefix) > s.cfg.MaxKeySize:
		return Result{Code: TooLarge, Message: msgKeyTooLarge, Revision: s.rev}, LeaseInfo{}
	case s.lt.leases.Len() >= s.cfg.MaxLeases:
		return Result{Code: TooLarge, Message: msgLeasesFull, Revision: s.rev}, LeaseInfo{}
	}
	l := lease{id: id, ttl: int64(c.TTL), deadline: leaseDeadline(s.clock, int64(c.TTL)), prefix: bytes.Clone(c.Prefix)}
	s.lt.leases.ReplaceOrInsert(l)
	s.lt.leaseExp.ReplaceOrInsert(leaseExp{deadline: l.deadline, id: id})
	info := s.leaseInfo(l)
	info.Keys = 0
	return Result{Revision: s.rev, Succeeded: true}, info
}

// keepAliveLeases refreshes the leases ids within scope: one result and
// one info per id (LeaseNotFound for a lease that is gone or outside
// scope).
func (s *Store) keepAliveLeases(ids []uint64, scope []byte) ([]Result, []LeaseInfo) {
	res := make([]Result, len(ids))
	infos := make([]LeaseInfo, len(ids))
	for i, id := range ids {
		l, ok := s.lt.leases.Get(lease{id: id})
		if !ok || !bytes.HasPrefix(l.prefix, scope) {
			res[i] = Result{Code: LeaseNotFound, Message: msgLeaseNotFound, Revision: s.rev}
			continue
		}
		if d := leaseDeadline(s.clock, l.ttl); d != l.deadline {
			s.lt.leaseExp.Delete(leaseExp{deadline: l.deadline, id: id})
			l.deadline = d
			s.lt.leases.ReplaceOrInsert(l)
			s.lt.leaseExp.ReplaceOrInsert(leaseExp{deadline: d, id: id})
		}
		res[i] = Result{Revision: s.rev, Succeeded: true}
		infos[i] = s.leaseInfo(l)
	}
	return res, infos
}

// endLeases revokes (expire false) or expires the leases ids within
// scope: a lease that is gone or outside scope, or (expiring) whose deadline the clock has not passed,
// is left alone (Succeeded false). The keys of every lease ended are
// deleted by one transaction, at one revision: every result holds the
// store's revision after it.
func (s *Store) endLeases(ids []uint64, scope []byte, expire bool) []Result {
	res := make([]Result, len(ids))
	var dels []TxnOp
	for i, id := range ids {
		l, ok := s.lt.leases.Get(lease{id: id})
		switch {
		case !ok || !bytes.HasPrefix(l.prefix, scope):
			res[i] = Result{Code: LeaseNotFound, Message: msgLeaseNotFound}
			continue
		case expire && l.deadline >= s.clock:
			continue // kept alive since the leader saw it due
		}
		res[i].Succeeded = true
		s.lt.leases.Delete(l)
		s.lt.leaseExp.Delete(leaseExp{deadline: l.deadline, id: id})
		s.lt.attached.AscendGreaterOrEqual(attachment{lease: id}, func(a attachment) bool {
			if a.lease != id {
				return false
			}
			dels = append(dels, TxnOp{Type: TxnDelete, Key: a.key})
			return true
		})
	}
	if len(dels) > 0 {
		// The transaction path detaches each key as it deletes it.
		if r := s.txn(&Txn{Then: dels}, true); r.Code != OK {
			for i := range res {
				res[i] = Result{Code: Internal, Message: "lease keys' deletion: " + r.Message}
			}
		}
	}
	for i := range res {
		res[i].Revision = s.rev
	}
	return res
}

// checkLease checks that key may be written with lease id (0: none).
func (s *Store) checkLease(id uint64, key []byte) (Code, string) {
	if id == 0 {
		return OK, ""
	}
	l, ok := s.lt.leases.Get(lease{id: id})
	switch {
	case !ok:
		return LeaseNotFound, msgLeaseNotFound
	case !bytes.HasPrefix(key, l.prefix):
		return InvalidArgument, msgLeasePrefix
	}
	return OK, ""
}

// reattach moves e's key from old's lease (if any) to e's: a put
// replaced old (nil: the key is new) with e.
func (s *Store) reattach(old, e *entry) {
	if old != nil && old.lease != 0 && old.lease != e.lease {
		s.lt.attached.Delete(attachment{lease: old.lease, key: old.key})
	}
	if e.lease != 0 && (old == nil || old.lease != e.lease) {
		s.lt.attached.ReplaceOrInsert(attachment{lease: e.lease, key: e.key})
	}
}

// detach forgets the lease of a deleted entry.
func (s *Store) detach(old *entry) {
	if old != nil && old.lease != 0 {
		s.lt.attached.Delete(attachment{lease: old.lease, key: old.key})
	}
}

// Lease returns the lease id's state, with its number of keys.
func (s *Store) Lease(id uint64) (LeaseInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.lt.leases.Get(lease{id: id})
	if !ok {
		return LeaseInfo{}, false
	}
	info := s.leaseInfo(l)
	info.Keys = 0
	s.lt.attached.AscendGreaterOrEqual(attachment{lease: id}, func(a attachment) bool {
		if a.lease != id {
			return false
		}
		info.Keys++
		return true
	})
	return info, true
}

// LeaseKeys returns up to limit keys attached to lease id, in order,
// after after. The keys are shared with the store: read-only.
func (s *Store) LeaseKeys(id uint64, after []byte, limit int) [][]byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var keys [][]byte
	s.lt.attached.AscendGreaterOrEqual(attachment{lease: id, key: after}, func(a attachment) bool {
		if a.lease != id || len(keys) >= limit {
			return false
		}
		if len(after) > 0 && bytes.Equal(a.key, after) {
			return true
		}
		keys = append(keys, a.key)
		return true
	})
	return keys
}

// Leases returns up to limit leases with ids above after whose prefix
// starts with prefix, in id order (Keys -1: not counted), and whether
// more follow.
func (s *Store) Leases(prefix []byte, after uint64, limit int) ([]LeaseInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []LeaseInfo
	more := false
	s.lt.leases.AscendGreaterOrEqual(lease{id: after + 1}, func(l lease) bool {
		if after == math.MaxUint64 {
			return false
		}
		if !bytes.HasPrefix(l.prefix, prefix) {
			return true
		}
		if len(out) >= limit {
			more = true
			return false
		}
		out = append(out, s.leaseInfo(l))
		return true
	})
	return out, more
}

// DueLeases returns up to limit of the leases whose deadline is before
// now (unix nanoseconds), earliest first (Keys -1: not counted); next is
// the earliest deadline at or after now (ok false: none).
func (s *Store) DueLeases(now int64, limit int) (due []LeaseInfo, next int64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.lt.leaseExp.Ascend(func(e leaseExp) bool {
		if e.deadline >= now {
			next, ok = e.deadline, true
			return false
		}
		if len(due) >= limit {
			return false
		}
		l, _ := s.lt.leases.Get(lease{id: e.id})
		due = append(due, s.leaseInfo(l))
		return true
	})
	return due, next, ok
}

// LeaseCount returns the number of leases.
func (s *Store) LeaseCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.lt.leases.Len()
}

// appendLeaseCommand appends the lease command's body (see AppendBinary).
func appendLeaseCommand(dst []byte, k CommandKind, c *LeaseCommand) []byte {
	if k == CmdLeaseGrant {
		dst = binary.AppendUvarint(dst, uint64(c.TTL))
		return appendBytes(dst, c.Prefix)
	}
	dst = binary.AppendUvarint(dst, uint64(len(c.IDs)))
	for _, id := range c.IDs {
		dst = binary.AppendUvarint(dst, id)
	}
	return appendBytes(dst, c.Prefix)
}

// leaseCommand decodes a lease command's body.
func (d *decoder) leaseCommand(k CommandKind, c *LeaseCommand) {
	*c = LeaseCommand{}
	if k == CmdLeaseGrant {
		ttl := d.uvarint()
		if ttl > math.MaxInt64 {
			d.fail("lease ttl %d", ttl)
		}
		c.TTL = time.Duration(ttl)
		c.Prefix = d.bytes()
		return
	}
	n := d.count(1)
	if n > MaxLeaseIDs {
		d.fail("%d lease ids, over %d", n, MaxLeaseIDs)
		return
	}
	if n > 0 {
		c.IDs = make([]uint64, n)
		for i := range c.IDs {
			c.IDs[i] = d.uvarint()
		}
	}
	c.Prefix = d.bytes()
}

// isLeaseKind reports whether k is a lease command.
func isLeaseKind(k CommandKind) bool {
	return k >= CmdLeaseGrant && k <= CmdLeaseExpire
}

// applyLease applies a lease command at index into a.
func (s *Store) applyLease(index uint64, cmd *Command, a *Applied) {
	c := &cmd.Lease
	switch cmd.Kind {
	case CmdLeaseGrant:
		r, info := s.grantLease(index, c)
		a.Results = []Result{r}
		if r.Code == OK {
			a.Leases = []LeaseInfo{info}
		}
	case CmdLeaseKeepAlive:
		a.Results, a.Leases = s.keepAliveLeases(c.IDs, c.Prefix)
	case CmdLeaseRevoke, CmdLeaseExpire:
		a.Results = s.endLeases(c.IDs, c.Prefix, cmd.Kind == CmdLeaseExpire)
	}
}

// writeLeases writes the snapshot's leases section (see the format).
func (sn *Snapshot) writeLeases(sw *snapWriter) {
	sw.uvarint(uint64(sn.lt.leases.Len()))
	sn.lt.leases.Ascend(func(l lease) bool {
		sw.uvarint(l.id)
		sw.uvarint(uint64(l.ttl))
		sw.fixed64(uint64(l.deadline))
		sw.bytes(l.prefix)
		sw.maybeFlush()
		return sw.err == nil
	})
}

// maxSnapLeases caps a snapshot's lease count, which Verify holds in
// memory (ids and prefixes) to check the keys against.
const maxSnapLeases = 1 << 22

// readLeases reads a version-3 snapshot's leases section into r.leases
// and, with build, into st.
func (r *snapReader) readLeases(st *snapState, build bool) {
	n := r.count("leases", maxSnapLeases)
	for i := uint64(0); i < n && r.err == nil; i++ {
		var l lease
		l.id = r.uvarint()
		ttl := r.uvarint()
		l.deadline = int64(r.fixed64())
		l.prefix = r.appendBytes(nil, maxSnapBytes)
		switch {
		case r.err != nil:
			return
		case (i > 0 && l.id <= r.leases[i-1].id) || l.id == 0 || l.id > st.applied:
			r.fail("lease id %d out of order or beyond the applied index %d", l.id, st.applied)
		case ttl == 0 || ttl > math.MaxInt64:
			r.fail("lease %d: ttl %d", l.id, ttl)
		}
		if r.err != nil {
			return
		}
		l.ttl = int64(ttl)
		r.leases = append(r.leases, l)
		if build {
			st.lt.leases.ReplaceOrInsert(l)
			st.lt.leaseExp.ReplaceOrInsert(leaseExp{deadline: l.deadline, id: l.id})
		}
	}
}

// leaseHolds reports whether key may be attached to lease id: the
// snapshot has the lease, and the key its prefix. It fails r otherwise.
func (r *snapReader) leaseHolds(id uint64, key []byte) bool {
	i, ok := slices.BinarySearchFunc(r.leases, id, func(l lease, id uint64) int { return cmp.Compare(l.id, id) })
	switch {
	case !ok:
		r.fail("key %q: unknown lease %d", key, id)
	case !bytes.HasPrefix(key, r.leases[i].prefix):
		r.fail("key %q outside the prefix of its lease %d", key, id)
	default:
		return true
	}
	return false
}
