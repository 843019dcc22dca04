package kv

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
)

// Transactions. An OpTxn write carries a Txn: its compares are evaluated
// against the store as the entry is applied, then the operations of one
// branch run in order, reads seeing the writes before them, and every
// write of the branch takes the same revision (the store's revision
// moves by one for the whole txn, if it wrote anything). A txn without
// writes is also served as a read (ReadTxn), under the read lock, by the
// same code.

// Txn is an OpTxn's body.
type Txn struct {
	// Compares must all hold for Then to run; otherwise Else runs.
	Compares []TxnCompare
	Then     []TxnOp
	Else     []TxnOp
}

// TxnTarget is what a TxnCompare compares. The zero value is invalid.
type TxnTarget uint8

// Compare targets. An absent key has version, create and mod revision 0,
// and fails every value compare.
const (
	TargetValue TxnTarget = 1 + iota
	TargetVersion
	TargetCreateRevision
	TargetModRevision
	// TargetAbsent with Equal holds when the key does not exist; with
	// NotEqual when it does. It takes no other operator.
	TargetAbsent
)

// TxnOperator is a TxnCompare's operator; the zero value is Equal.
type TxnOperator uint8

// Compare operators. Values order byte-wise.
const (
	Equal TxnOperator = iota
	NotEqual
	Less
	Greater
)

// TxnCompare is one condition of a Txn: Key's Target Operator Value (for
// TargetValue) or Number (the version and revisions).
type TxnCompare struct {
	Key      []byte
	Target   TxnTarget
	Operator TxnOperator
	Value    []byte
	Number   uint64
}

// TxnOpType is a transaction operation's type. The zero value is invalid.
type TxnOpType uint8

// Transaction operation types.
const (
	TxnPut TxnOpType = 1 + iota
	TxnDelete
	TxnGet
	// TxnRange reads the keys with prefix Key after After, at most Limit
	// (0 or above MaxRangeLimit: MaxRangeLimit), as Store.Range does.
	TxnRange
)

// String returns the type's name.
func (t TxnOpType) String() string {
	switch t {
	case TxnPut:
		return "Put"
	case TxnDelete:
		return "Delete"
	case TxnGet:
		return "Get"
	case TxnRange:
		return "Range"
	}
	return "TxnOpType(" + strconv.Itoa(int(t)) + ")"
}

// TxnOp is one operation of a Txn branch.
type TxnOp struct {
	Type  TxnOpType
	Key   []byte // a range's prefix
	Value []byte // TxnPut
	After []byte // TxnRange
	Limit uint32 // TxnRange
	Lease uint64 // TxnPut: the lease to attach the key to (0: none)
	// Prefix (TxnDelete) deletes every key that starts with Key
	// (non-empty). No other operation of the branch may write a key
	// under it (see checkBranch).
	Prefix bool
}

// TxnResult is what a transaction's branch returned: one TxnOpResult per
// operation, in order. Result.Succeeded says which branch ran (true:
// Then). It is not saved with the session: a retried seq gets the saved
// Result without it.
type TxnResult struct {
	Results []TxnOpResult
}

// TxnOpResult is one branch operation's outcome.
type TxnOpResult struct {
	// Found: put, delete: the key had a previous state, KV; get: the key
	// exists, KV is its state.
	Found bool
	KV    KeyValue
	// KVs and More: a range's page and whether more keys follow it.
	KVs  []KeyValue
	More bool
	// Deleted: a prefix delete's number of keys deleted (Found and KV
	// are unset: the previous values are not kept).
	Deleted uint64
}

// Transaction result messages.
const (
	msgBadTarget    = "unknown txn compare target"
	msgBadOperator  = "unknown txn compare operator"
	msgAbsentOrder  = "a txn absence compare takes equal or notEqual only"
	msgBadTxnOp     = "unknown txn operation type"
	msgTxnDupKey    = "a key is written twice in one txn branch"
	msgTxnReadWrite = "a txn served as a read has writes"
	msgTxnMissing   = "txn op without a transaction"
	msgTxnPrefixDup = "a txn branch writes a key under a prefix it deletes (or deletes overlapping prefixes)"
	msgTxnPrefixOp  = "only a txn delete takes a prefix"
)

// writes reports whether ops hold a put or delete.
func writes(ops []TxnOp) bool {
	for i := range ops {
		if ops[i].Type == TxnPut || ops[i].Type == TxnDelete {
			return true
		}
	}
	return false
}

// Writes reports whether either branch of t writes.
func (t *Txn) Writes() bool { return writes(t.Then) || writes(t.Else) }

// checkTxn validates t, whatever the store holds: the code and message of
// the first problem, or OK. write says t is applied from the log (a read
// may not write).
func (s *Store) checkTxn(t *Txn, write bool) (Code, string) {
	if t == nil {
		return InvalidArgument, msgTxnMissing
	}
	for i := range t.Compares {
		c := &t.Compares[i]
		switch {
		case c.Target < TargetValue || c.Target > TargetAbsent:
			return InvalidArgument, msgBadTarget
		case c.Operator > Greater:
			return InvalidArgument, msgBadOperator
		case c.Target == TargetAbsent && c.Operator > NotEqual:
			return InvalidArgument, msgAbsentOrder
		case len(c.Key) == 0:
			return InvalidArgument, msgEmptyKey
		case len(c.Key) > s.cfg.MaxKeySize:
			return TooLarge, msgKeyTooLarge
		case len(c.Value) > s.cfg.MaxValueSize:
			return TooLarge, msgValueTooLarge
		}
	}
	for _, ops := range [2][]TxnOp{t.Then, t.Else} {
		if code, msg := s.checkBranch(ops, write); code != OK {
			return code, msg
		}
	}
	return OK, ""
}

// checkBranch validates one branch's operations. A key is written once
// per branch, etcd's rule extended to prefix deletes: a prefix delete
// writes every key under its prefix, so a put or delete of such a key,
// or a prefix delete over or under it, is refused whatever the order.
// The prefix checks cost the product of the prefix deletes and the
// writes: both are bounded by the batch's operation limit.
func (s *Store) checkBranch(ops []TxnOp, write bool) (Code, string) {
	var written map[string]struct{}
	var prefixes [][]byte
	for i := range ops {
		op := &ops[i]
		switch {
		case op.Type < TxnPut || op.Type > TxnRange:
			return InvalidArgument, msgBadTxnOp
		case op.Prefix && op.Type != TxnDelete:
			return InvalidArgument, msgTxnPrefixOp
		case len(op.Key) == 0 && op.Prefix:
			return InvalidArgument, msgEmptyPrefix
		case len(op.Key) == 0 && op.Type != TxnRange:
			return InvalidArgument, msgEmptyKey
		case len(op.Key) > s.cfg.MaxKeySize || len(op.After) > s.cfg.MaxKeySize:
			return TooLarge, msgKeyTooLarge
		case len(op.Value) > s.cfg.MaxValueSize:
			return TooLarge, msgValueTooLarge
		}
		if op.Type != TxnPut && op.Type != TxnDelete {
			continue
		}
		if !write {
			return InvalidArgument, msgTxnReadWrite
		}
		for _, p := range prefixes {
			if bytes.HasPrefix(op.Key, p) || (op.Prefix && bytes.HasPrefix(p, op.Key)) {
				return InvalidArgument, msgTxnPrefixDup
			}
		}
		if op.Prefix {
			for k := range written {
				if strings.HasPrefix(k, string(op.Key)) {
					return InvalidArgument, msgTxnPrefixDup
				}
			}
			prefixes = append(prefixes, op.Key)
			continue
		}
		if written == nil {
			written = make(map[string]struct{}, len(ops))
		}
		if _, dup := written[string(op.Key)]; dup {
			return InvalidArgument, msgTxnDupKey
		}
		written[string(op.Key)] = struct{}{}
	}
	return OK, ""
}

// holds reports whether c holds for the key's current state.
func holds(c *TxnCompare, cur *entry, found bool) bool {
	var cmp int
	switch c.Target {
	case TargetValue:
		if !found {
			return false
		}
		cmp = bytes.Compare(cur.value, c.Value)
	case TargetAbsent:
		if found {
			cmp = 1 // "absent" is the zero state: a present key differs
		}
	default:
		var have uint64
		if found {
			switch c.Target {
			case TargetVersion:
				have = cur.version
			case TargetCreateRevision:
				have = cur.create
			case TargetModRevision:
				have = cur.mod
			}
		}
		switch {
		case have < c.Number:
			cmp = -1
		case have > c.Number:
			cmp = 1
		}
	}
	switch c.Operator {
	case Equal:
		return cmp == 0
	case NotEqual:
		return cmp != 0
	case Less:
		return cmp < 0
	}
	return cmp > 0
}

// txn runs t: with write (under the write lock, from Apply) its branch
// may write; without (under the read lock, from ReadTxn) it may not.
func (s *Store) txn(t *Txn, write bool) Result {
	if code, msg := s.checkTxn(t, write); code != OK {
		return Result{Code: code, Message: msg, Revision: s.rev}
	}
	// A pivot of its own: readers run concurrently, and s.pivot is
	// Apply's.
	var pivot entry
	lookup := func(key []byte) (*entry, bool) {
		pivot.key = key
		e, ok := s.kv.Get(&pivot)
		pivot.key = nil
		return e, ok
	}
	ok := true
	for i := range t.Compares {
		c := &t.Compares[i]
		cur, found := lookup(c.Key)
		if !holds(c, cur, found) {
			ok = false
			break
		}
	}
	ops := t.Else
	if ok {
		ops = t.Then
	}
	// Checked before anything runs: the branch is atomic. The keys
	// under a prefix the branch deletes are collected now: no operation
	// before the delete may write under its prefix (checkBranch), so
	// they are the keys the delete will find.
	var doomed map[int][]*entry
	budget := int64(s.cfg.MaxDeleteBytes) // for all the branch's prefix deletes
	for i := range ops {
		op := &ops[i]
		if op.Type == TxnPut && op.Lease != 0 {
			if code, msg := s.checkLease(op.Lease, op.Key); code != OK {
				return Result{Code: code, Message: msg, Revision: s.rev}
			}
		}
		if op.Type == TxnDelete && op.Prefix {
			es, ok := s.underPrefix(op.Key, budget)
			if !ok {
				return Result{Code: TooLarge, Message: msgDeleteTooLarge, Revision: s.rev}
			}
			for _, e := range es {
				budget -= int64(eventOverhead + len(e.key) + len(e.value))
			}
			if doomed == nil {
				doomed = make(map[int][]*entry)
			}
			doomed[i] = es
		}
	}
	rev := s.rev + 1 // every write of the txn takes this revision
	wrote := false
	res := make([]TxnOpResult, len(ops))
	for i := range ops {
		op, r := &ops[i], &res[i]
		switch op.Type {
		case TxnPut:
			old, found := s.putAt(op.Key, op.Value, rev, op.Lease)
			r.Found, r.KV = found, old.kv()
			wrote = true
		case TxnDelete:
			if op.Prefix {
				r.Deleted = s.deleteEntries(doomed[i], rev)
				wrote = wrote || r.Deleted > 0
				continue
			}
			pivot.key = op.Key
			old, found := s.kv.Delete(&pivot)
			pivot.key = nil
			r.Found, r.KV = found, old.kv()
			if found {
				s.record(rev, nil, old)
			}
			wrote = wrote || found
			s.detach(old)
		case TxnGet:
			cur, found := lookup(op.Key)
			r.Found, r.KV = found, cur.kv()
		case TxnRange:
			r.KVs, r.More = s.rangeLocked(op.Key, op.After, int(op.Limit))
		}
	}
	if wrote {
		s.rev = rev
	}
	return Result{Revision: s.rev, Succeeded: ok, Txn: &TxnResult{Results: res}}
}

// ReadTxn runs a transaction without writes against the store's current
// state, atomically, as a read: the Result says which branch ran
// (Succeeded) and holds the reads in Txn; a transaction with a put or
// delete is refused (InvalidArgument), as is a malformed one. The
// returned slices are shared with the store: read-only.
func (s *Store) ReadTxn(t *Txn) Result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.txn(t, false)
}

// Minimum encoded sizes of a compare (target, operator, key length, value
// length, number) and of a transaction operation (type, key, value and
// after lengths, limit).
const (
	minCompareSize = 5
	minTxnOpSize   = 5
)

// Flags of a transaction operation's type byte: txnOpFlagLease says a
// uvarint lease follows its limit; txnOpFlagPrefix marks a delete of a
// prefix (TxnOp.Prefix, refused on any other type).
const (
	txnOpFlagLease  = 0x80
	txnOpFlagPrefix = 0x40
)

// appendTxn appends t's encoding (see AppendBinary).
func appendTxn(dst []byte, t *Txn) []byte {
	if t == nil {
		t = &Txn{}
	}
	dst = binary.AppendUvarint(dst, uint64(len(t.Compares)))
	for i := range t.Compares {
		c := &t.Compares[i]
		dst = append(dst, byte(c.Target), byte(c.Operator))
		dst = appendBytes(dst, c.Key)
		dst = appendBytes(dst, c.Value)
		dst = binary.AppendUvarint(dst, c.Number)
	}
	for _, ops := range [2][]TxnOp{t.Then, t.Else} {
		dst = binary.AppendUvarint(dst, uint64(len(ops)))
		for i := range ops {
			op := &ops[i]
			typ := byte(op.Type)
			if op.Lease != 0 {
				typ |= txnOpFlagLease
			}
			if op.Prefix {
				typ |= txnOpFlagPrefix
			}
			dst = append(dst, typ)
			dst = appendBytes(dst, op.Key)
			dst = appendBytes(dst, op.Value)
			dst = appendBytes(dst, op.After)
			dst = binary.AppendUvarint(dst, uint64(op.Limit))
			if op.Lease != 0 {
				dst = binary.AppendUvarint(dst, op.Lease)
			}
		}
	}
	return dst
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// txn decodes a transaction's body (see appendTxn).
func (d *decoder) txn() *Txn {
	t := &Txn{}
	if n := d.count(minCompareSize); n > 0 {
		t.Compares = make([]TxnCompare, n)
		for i := range t.Compares {
			c := &t.Compares[i]
			c.Target = TxnTarget(d.byte())
			c.Operator = TxnOperator(d.byte())
			c.Key = d.bytes()
			c.Value = d.bytes()
			c.Number = d.uvarint()
		}
	}
	t.Then = d.txnOps()
	t.Else = d.txnOps()
	return t
}

func (d *decoder) txnOps() []TxnOp {
	n := d.count(minTxnOpSize)
	if n == 0 {
		return nil
	}
	ops := make([]TxnOp, n)
	for i := range ops {
		op := &ops[i]
		typ := d.byte()
		op.Type = TxnOpType(typ &^ (txnOpFlagLease | txnOpFlagPrefix))
		if op.Prefix = typ&txnOpFlagPrefix != 0; op.Prefix && op.Type != TxnDelete {
			d.fail("prefix flag on a txn %v", op.Type)
		}
		op.Key = d.bytes()
		op.Value = d.bytes()
		op.After = d.bytes()
		if l := d.uvarint(); l > 1<<32-1 {
			d.fail("txn range limit %d", l)
		} else {
			op.Limit = uint32(l)
		}
		if typ&txnOpFlagLease != 0 {
			if op.Lease = d.uvarint(); d.err == nil && op.Lease == 0 {
				d.fail("zero txn op lease flagged present")
			}
		}
		if d.err != nil {
			return nil
		}
	}
	return ops
}

// count reads the length of a list whose elements take at least min
// bytes each: a length the bytes left cannot hold fails (0).
func (d *decoder) count(min int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64((len(d.b)-d.off)/min) {
		d.fail("%d items cannot fit in %d bytes", n, len(d.b)-d.off)
		return 0
	}
	return int(n)
}
