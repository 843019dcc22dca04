package kvwire

import (
	"bytes"
	"fmt"
	"math"

	"github.com/capraft/capraft/schema"
)

// Target is what a transaction's comparison compares. The zero value is
// invalid.
type Target uint8

// Comparison targets, as the schema's Compare.target union.
const (
	// TargetValue compares the key's value (byte-wise for Less and
	// Greater); it fails whatever the operator when the key is absent.
	TargetValue Target = 1 + iota
	// TargetVersion compares the key's version (0: absent).
	TargetVersion
	// TargetCreateRevision compares the key's create revision (0: absent).
	TargetCreateRevision
	// TargetModRevision compares the key's mod revision (0: absent).
	TargetModRevision
	// TargetAbsent holds, with Equal, when the key does not exist, and with
	// NotEqual when it does.
	TargetAbsent
)

var targetNames = [...]string{TargetValue: "value", TargetVersion: "version",
	TargetCreateRevision: "createRevision", TargetModRevision: "modRevision", TargetAbsent: "absent"}

// String returns the target's name as the schema spells it.
func (t Target) String() string {
	if int(t) < len(targetNames) && targetNames[t] != "" {
		return targetNames[t]
	}
	return fmt.Sprintf("target %d", t)
}

// Operator is a comparison's operator; the zero value is Equal.
type Operator uint8

// Comparison operators, as the schema's CompareOperator.
const (
	Equal Operator = iota
	NotEqual
	Less
	Greater
)

var operatorNames = [...]string{Equal: "=", NotEqual: "!=", Less: "<", Greater: ">"}

// String returns the operator as etcdctl writes it ("=", "!=", "<", ">").
func (o Operator) String() string {
	if int(o) < len(operatorNames) {
		return operatorNames[o]
	}
	return fmt.Sprintf("operator %d", o)
}

// Comparison is one condition of a transaction: the key's Target compared
// with Value (TargetValue) or Number (the versions and revisions) by
// Operator.
type Comparison struct {
	Key      []byte
	Target   Target
	Operator Operator
	Value    []byte
	Number   uint64
}

// Transaction is a transaction's body: when every comparison holds, the
// Then operations run, otherwise the Else ones. Branch operations are puts, deletes, gets
// and ranges; their Seq and Serializable are not used.
type Transaction struct {
	Compares []Comparison
	Then     []Op
	Else     []Op
}

// Writes reports whether either branch of t writes.
func (t *Transaction) Writes() bool { return hasWrite(t.Then) || hasWrite(t.Else) }

func hasWrite(ops []Op) bool {
	for i := range ops {
		if ops[i].IsWrite() {
			return true
		}
	}
	return false
}

// items is how many compares and operations t holds.
func (t *Transaction) items() int { return len(t.Compares) + len(t.Then) + len(t.Else) }

// bytes is what t's keys and values count towards a batch's size limit.
func (t *Transaction) bytes() int {
	n := 0
	for i := range t.Compares {
		n += len(t.Compares[i].Key) + len(t.Compares[i].Value)
	}
	for _, ops := range [2][]Op{t.Then, t.Else} {
		for i := range ops {
			n += ops[i].Bytes()
		}
	}
	return n
}

// Check refuses a transaction the node would refuse whatever the store
// holds: a comparison of an empty key, of an unknown target or operator,
// or ordering absence; a branch operation that is not a put, delete, get
// or range, or has an empty key (a range's prefix may be empty); a key
// written twice in one branch, counting a prefix delete as a write of
// every key under its prefix (etcd's rule: a put or delete of a key under
// a prefix the branch deletes, or two overlapping prefix deletes, are
// refused whatever their order). The error is an *Error with the code
// invalidArgument.
func (t *Transaction) Check() error {
	for i := range t.Compares {
		c := &t.Compares[i]
		switch {
		case len(c.Key) == 0:
			return invalid("txn compare %d: empty key", i)
		case c.Target == 0 || int(c.Target) >= len(targetNames):
			return invalid("txn compare %d: unknown target %d", i, c.Target)
		case c.Operator > Greater:
			return invalid("txn compare %d: unknown operator %d", i, c.Operator)
		case c.Target == TargetAbsent && c.Operator > NotEqual:
			return invalid("txn compare %d: absence takes = or != only, not %v", i, c.Operator)
		}
	}
	if err := checkBranch("then", t.Then); err != nil {
		return err
	}
	return checkBranch("else", t.Else)
}

func checkBranch(name string, ops []Op) error {
	var written map[string]struct{}
	var prefixes []int // the prefix deletes' positions
	for i := range ops {
		o := &ops[i]
		switch o.Kind {
		case Put, Delete, Get, Range:
		case Txn, CAS:
			return invalid("txn %s operation %d: a %v cannot run inside a txn (use its compares)", name, i, o.Kind)
		default:
			return invalid("txn %s operation %d: unknown operation %d", name, i, o.Kind)
		}
		if o.Prefix && o.Kind != Delete {
			return invalid("txn %s operation %d: a %v takes no prefix flag (only a delete does)", name, i, o.Kind)
		}
		if len(o.Key) == 0 && o.Prefix {
			return invalid("txn %s operation %d: %s", name, i, errEmptyPrefix.Message)
		}
		if len(o.Key) == 0 && o.Kind != Range {
			return invalid("txn %s operation %d: %v of an empty key", name, i, o.Kind)
		}
		if !o.IsWrite() {
			continue
		}
		for _, j := range prefixes {
			p := ops[j].Key
			if bytes.HasPrefix(o.Key, p) || (o.Prefix && bytes.HasPrefix(p, o.Key)) {
				return invalid("txn %s operation %d: it writes keys under prefix %q, which operation %d deletes; a branch writes each key once", name, i, shortKey(p), j)
			}
		}
		if o.Prefix {
			for j := 0; j < i; j++ {
				if w := &ops[j]; w.IsWrite() && !w.Prefix && bytes.HasPrefix(w.Key, o.Key) {
					return invalid("txn %s operation %d: it deletes prefix %q, under which operation %d writes key %q; a branch writes each key once", name, i, shortKey(o.Key), j, shortKey(w.Key))
				}
			}
			prefixes = append(prefixes, i)
			continue
		}
		if written == nil {
			written = make(map[string]struct{}, len(ops))
		}
		if _, dup := written[string(o.Key)]; dup {
			return invalid("txn %s operation %d: key %q is written twice in one txn branch; write each key once", name, i, shortKey(o.Key))
		}
		written[string(o.Key)] = struct{}{}
	}
	return nil
}

// shortKey cuts a key short for a message.
func shortKey(k []byte) []byte {
	if len(k) > 64 {
		return k[:64]
	}
	return k
}

// overLimit returns the first part of t over lim's key and value limits,
// or nil if none is.
func (t *Transaction) overLimit(lim Limits) *SizeError {
	for i := range t.Compares {
		c := &t.Compares[i]
		if len(c.Key) > lim.MaxKeySize {
			return &SizeError{Kind: Txn, Part: "compare key", Size: len(c.Key), Limit: lim.MaxKeySize}
		}
		if len(c.Value) > lim.MaxValueSize {
			return &SizeError{Kind: Txn, Part: "compared value", Size: len(c.Value), Limit: lim.MaxValueSize}
		}
	}
	for _, ops := range [2][]Op{t.Then, t.Else} {
		for i := range ops {
			if e := ops[i].OverLimit(lim); e != nil {
				return e
			}
		}
	}
	return nil
}

// encodeTxn writes o's transaction into dst.
func encodeTxn(dst schema.TxnOp, o *Op) error {
	t := o.Txn
	if t == nil {
		t = &Transaction{}
	}
	dst.SetConsistency(consistency(o.Serializable))
	cl, err := dst.NewCompares(int32(len(t.Compares)))
	if err != nil {
		return err
	}
	for i := range t.Compares {
		if err := encodeComparison(cl.At(i), &t.Compares[i]); err != nil {
			return err
		}
	}
	for _, b := range [2]struct {
		ops   []Op
		alloc func(int32) (schema.Op_List, error)
	}{{t.Then, dst.NewThen}, {t.Else, dst.NewElse}} {
		l, err := b.alloc(int32(len(b.ops)))
		if err != nil {
			return err
		}
		for i := range b.ops {
			if b.ops[i].Kind == Txn {
				return fmt.Errorf("encode: a txn inside a txn")
			}
			if err := EncodeOp(l.At(i), &b.ops[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func encodeComparison(dst schema.Compare, c *Comparison) error {
	if err := dst.SetKey(c.Key); err != nil {
		return err
	}
	if c.Operator > Greater {
		return fmt.Errorf("encode compare: unknown operator %d", c.Operator)
	}
	dst.SetOperator(schema.CompareOperator(c.Operator))
	tg := dst.Target()
	switch c.Target {
	case TargetValue:
		return tg.SetValue(c.Value)
	case TargetVersion:
		tg.SetVersion(c.Number)
	case TargetCreateRevision:
		tg.SetCreateRevision(c.Number)
	case TargetModRevision:
		tg.SetModRevision(c.Number)
	case TargetAbsent:
		tg.SetAbsent()
	default:
		return fmt.Errorf("encode compare: unknown target %d", c.Target)
	}
	return nil
}

// noBudget is the budget of a decoder without limits: a transaction's
// lists are then bounded by the message only (see checkListLen).
const noBudget = math.MaxInt

// decodeTxn reads a transaction. budget is how many more compares and
// branch operations the request may hold; a transaction over it is
// refused (tooLarge) before its lists are read, and budget is charged
// with what it holds.
func decodeTxn(src schema.TxnOp, budget *int) (Op, error) {
	o := Op{Kind: Txn, Serializable: src.Consistency() == schema.Consistency_serializable, Txn: &Transaction{}}
	cl, err := src.Compares()
	if err != nil {
		return Op{}, invalid("txn compares: %v", err)
	}
	then, err := src.Then()
	if err != nil {
		return Op{}, invalid("txn then: %v", err)
	}
	els, err := src.Else()
	if err != nil {
		return Op{}, invalid("txn else: %v", err)
	}
	n := cl.Len() + then.Len() + els.Len()
	if n > *budget {
		return Op{}, tooLarge("txn of %d compares and operations is over the limit of %d operations per batch (a txn counts its compares and operations)", n, *budget)
	}
	for _, l := range []int{cl.Len(), then.Len(), els.Len()} {
		if err := checkListLen(src.Message(), l); err != nil {
			return Op{}, invalid("txn: %v", err)
		}
	}
	*budget -= n
	t := o.Txn
	if cl.Len() > 0 {
		t.Compares = make([]Comparison, cl.Len())
	}
	for i := range t.Compares {
		if t.Compares[i], err = decodeComparison(cl.At(i)); err != nil {
			return Op{}, invalid("txn compare %d: %v", i, err)
		}
	}
	if t.Then, err = decodeBranch("then", then); err != nil {
		return Op{}, err
	}
	if t.Else, err = decodeBranch("else", els); err != nil {
		return Op{}, err
	}
	return o, nil
}

func decodeComparison(src schema.Compare) (Comparison, error) {
	k, err := src.Key()
	if err != nil {
		return Comparison{}, err
	}
	c := Comparison{Key: k, Operator: Operator(src.Operator())}
	tg := src.Target()
	switch tg.Which() {
	case schema.Compare_target_Which_value:
		c.Target = TargetValue
		if c.Value, err = tg.Value(); err != nil {
			return Comparison{}, err
		}
	case schema.Compare_target_Which_version:
		c.Target, c.Number = TargetVersion, tg.Version()
	case schema.Compare_target_Which_createRevision:
		c.Target, c.Number = TargetCreateRevision, tg.CreateRevision()
	case schema.Compare_target_Which_modRevision:
		c.Target, c.Number = TargetModRevision, tg.ModRevision()
	case schema.Compare_target_Which_absent:
		c.Target = TargetAbsent
	default:
		return Comparison{}, fmt.Errorf("unknown target %d (is the client newer than this node?)", tg.Which())
	}
	if c.Operator > Greater {
		return Comparison{}, fmt.Errorf("unknown operator %d", c.Operator)
	}
	return c, nil
}

// decodeBranch reads a branch's operations; transactions and
// compare-and-swaps are refused without being read.
func decodeBranch(name string, l schema.Op_List) ([]Op, error) {
	if l.Len() == 0 {
		return nil, nil
	}
	ops := make([]Op, l.Len())
	for i := range ops {
		src := l.At(i)
		switch src.Which() {
		case schema.Op_Which_txn, schema.Op_Which_cas:
			return nil, invalid("txn %s operation %d: a %v cannot run inside a txn (use its compares)", name, i, src.Which())
		}
		o, err := decodeOp(src, nil)
		if err != nil {
			return nil, invalid("txn %s operation %d: %v", name, i, err)
		}
		ops[i] = o
	}
	return ops, nil
}

// DecodeTxnCall reads KV.txn's arguments under lim. Arguments without an
// operation cannot be read: the error comes with an Op of Kind 0. A
// transaction that is malformed (see Transaction.Check: invalidArgument)
// or over the batch limits (its compares and operations count towards
// MaxBatchOps, its keys and values towards MaxBatchBytes and the key and
// value limits: tooLarge) is refused: the error comes with an Op of Kind
// Txn (and no Transaction), to be answered as the operation's result.
func DecodeTxnCall(p schema.KV_txn_Params, lim Limits) (session uint64, o Op, err error) {
	src, err := p.Op()
	if err != nil {
		return 0, Op{}, invalid("txn: %v", err)
	}
	budget := lim.MaxBatchOps - 1
	o, err = decodeTxn(src, &budget)
	if err == nil {
		err = o.Txn.Check()
	}
	if err == nil {
		err = o.CheckSize(lim)
	}
	if err == nil {
		err = lim.checkBatchBytes(o.Bytes())
	}
	if err != nil {
		o = Op{}
	}
	o.Kind, o.Seq = Txn, p.Seq()
	return p.Session(), o, err
}

// encodeTxnResult writes a transaction's result into dst.
func encodeTxnResult(dst schema.Result, r *Result) error {
	tr, err := dst.NewTxn()
	if err != nil {
		return err
	}
	tr.SetSucceeded(r.Succeeded)
	var t TxnResult
	if r.Txn != nil {
		t = *r.Txn
	}
	tr.SetReplayed(t.Replayed)
	l, err := tr.NewResults(int32(len(t.Results)))
	if err != nil {
		return err
	}
	for i := range t.Results {
		nr := &t.Results[i]
		if nr.Err == nil && (nr.Kind == Txn || nr.Kind == CAS) {
			return fmt.Errorf("encode txn result %d: a %v result inside a txn", i, nr.Kind)
		}
		if err := EncodeResult(l.At(i), nr.Kind, nr); err != nil {
			return fmt.Errorf("txn result %d: %w", i, err)
		}
	}
	return nil
}

// nestedKinds is the operation kind each result kind inside a
// transaction's result answers.
var nestedKinds = map[schema.Result_Which]Kind{
	schema.Result_Which_put: Put, schema.Result_Which_get: Get,
	schema.Result_Which_delete: Delete, schema.Result_Which_range: Range,
}

// decodeTxnResult reads a transaction's result into r.
func decodeTxnResult(src schema.Result, r *Result) error {
	tr, err := src.Txn()
	if err != nil {
		return err
	}
	r.Succeeded = tr.Succeeded()
	r.Txn = &TxnResult{Replayed: tr.Replayed()}
	l, err := tr.Results()
	if err != nil {
		return err
	}
	if err := checkListLen(src.Message(), l.Len()); err != nil {
		return err
	}
	r.Txn.Results = make([]Result, l.Len())
	for i := range r.Txn.Results {
		nsrc := l.At(i)
		which := nsrc.Which()
		kind, ok := nestedKinds[which]
		if !ok && which != schema.Result_Which_error {
			return fmt.Errorf("txn result %d: a %v result inside a txn", i, which)
		}
		nr, err := DecodeResult(nsrc, kind)
		if err != nil {
			return fmt.Errorf("txn result %d: %w", i, err)
		}
		nr.Kind = kind
		r.Txn.Results[i] = nr
	}
	return nil
}

// EncodeTxnCall writes KV.txn's arguments: the session and o, a
// transaction with its Seq.
func EncodeTxnCall(dst schema.KV_txn_Params, session uint64, o *Op) error {
	dst.SetSession(session)
	dst.SetSeq(o.Seq)
	t, err := dst.NewOp()
	if err != nil {
		return err
	}
	return encodeTxn(t, o)
}
