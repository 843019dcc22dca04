package history

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// The transaction model. A history of transactions (compares, then a
// branch of puts, deletes, gets and ranges) over a few small groups of
// keys; plain puts, gets and deletes are recorded as one-operation
// transactions. Transactions stay within one group, so the history is
// partitioned by group and each group is checked on its own; a group's
// state is every one of its keys (value, version, create and mod
// revision) and a lower bound of the store's revision.
//
// Revisions. The store numbers writes; the model cannot predict the
// numbers, so it takes them from the answers: a write whose answer came
// back states its revision; a write whose outcome is unknown gets the
// revision under which any read saw one of its values (values are unique
// per write: see AnnotateTxnRevisions), or stays unknown. A key whose mod
// or create revision is unknown learns it from the first read that shows
// it. Within a group, answered writes must take increasing revisions in
// the linearization and a read that states the revision it was served at
// may not go back before the writes linearized before it: a stale or
// reordered answer is illegal even when the values happen to match.
//
// Compares on a revision that is unknown to the model: Equal and
// NotEqual treat it as different from any given number (a client only
// compares with revisions it read, and a read of this key's current
// state would have taught the model its revision); Less and Greater on
// revisions are not modelled (Step rejects them: workloads use them on
// versions and values only).

// TxnKeys is the number of keys in a group.
const TxnKeys = 4

// TxnTarget is what a TxnCompare compares.
type TxnTarget int

// Compare targets.
const (
	CmpValue TxnTarget = iota + 1
	CmpVersion
	CmpCreateRevision
	CmpModRevision
	CmpAbsent // Equal: the key is absent; NotEqual: present
)

// TxnOperator is a TxnCompare's operator.
type TxnOperator int

// Compare operators.
const (
	OpEqual TxnOperator = iota
	OpNotEqual
	OpLess
	OpGreater
)

// TxnCompare is one compare: key Target Operator Value or Number.
type TxnCompare struct {
	Key      int // index in the group
	Target   TxnTarget
	Operator TxnOperator
	Value    string
	Number   uint64
}

// TxnOpKind is a branch operation's kind.
type TxnOpKind int

// Branch operation kinds.
const (
	TxnPut TxnOpKind = iota + 1
	TxnDelete
	TxnGet
	TxnRange // every key of the group, in key order
)

// TxnOp is one operation of a branch.
type TxnOp struct {
	Kind  TxnOpKind
	Key   int    // index in the group (not Range)
	Value string // Put: unique in the history
}

// TxnInput is a transaction as called.
type TxnInput struct {
	Group    int
	Compares []TxnCompare
	Then     []TxnOp
	Else     []TxnOp
	// Rev is the revision the transaction's writes took, when an answer
	// told it (its own, or a read of a value it wrote): filled by
	// AnnotateTxnRevisions; 0 when unknown.
	Rev uint64
}

// TxnKV is a key's state as a read returned it.
type TxnKV struct {
	Key                                  int
	Value                                string
	Version, CreateRevision, ModRevision uint64
}

// TxnOpResult answers one branch operation.
type TxnOpResult struct {
	// Found: get: the key exists, KV is its state; put, delete: the key
	// existed before, KV was its state.
	Found bool
	// KV is nil when the answer did not say (a plain delete says only
	// whether the key existed).
	KV *TxnKV
	// KVs is a range's answer.
	KVs []TxnKV
}

// TxnOutput is a transaction's answer.
type TxnOutput struct {
	Unknown   bool // the outcome is unknown (error or timeout): pending forever
	Succeeded bool // the compares held: Then ran
	// Revision is the store's revision after the transaction (the one
	// its writes took, if its branch wrote), or at which it was read; 0
	// when the answer did not say (a plain get).
	Revision uint64
	// Results answer the branch's operations, one each; nil when the
	// answer had none (a replayed transaction, a plain put).
	Results []TxnOpResult
}

// txnKey is one key's state in the model. A zero create or mod
// revision of a present key is unknown.
type txnKey struct {
	exists        bool
	value         string
	version       uint64
	create, mod   uint64
	createUnknown bool
	modUnknown    bool
}

// TxnState is a group's state in the model.
type TxnState struct {
	keys [TxnKeys]txnKey
	rev  uint64 // a lower bound of the store's revision here
}

// TxnModel is the porcupine model of transactions, one partition per
// group. Its operations' inputs are TxnInput and outputs TxnOutput.
var TxnModel = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		byGroup := map[int][]porcupine.Operation{}
		var groups []int
		for _, op := range ops {
			g := op.Input.(TxnInput).Group
			if _, ok := byGroup[g]; !ok {
				groups = append(groups, g)
			}
			byGroup[g] = append(byGroup[g], op)
		}
		sort.Ints(groups)
		out := make([][]porcupine.Operation, 0, len(groups))
		for _, g := range groups {
			out = append(out, byGroup[g])
		}
		return out
	},
	Init: func() interface{} { return TxnState{} },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		s := state.(TxnState)
		ok := stepTxn(&s, input.(TxnInput), output.(TxnOutput))
		return ok, s
	},
	Equal: func(a, b interface{}) bool { return a.(TxnState) == b.(TxnState) },
	DescribeOperation: func(input, output interface{}) string {
		return DescribeTxn(input.(TxnInput), output.(TxnOutput))
	},
	DescribeState: func(state interface{}) string { return describeTxnState(state.(TxnState)) },
}

// holdsTxn evaluates c on s; known is false when the answer depends on a
// revision the model does not know and the operator orders.
func holdsTxn(s *TxnState, c TxnCompare) (holds, known bool) {
	if c.Key < 0 || c.Key >= TxnKeys {
		return false, false
	}
	k := &s.keys[c.Key]
	var cmp int
	switch c.Target {
	case CmpValue:
		if !k.exists {
			return false, true
		}
		cmp = strings.Compare(k.value, c.Value)
	case CmpAbsent:
		if k.exists {
			cmp = 1
		}
		if c.Operator != OpEqual && c.Operator != OpNotEqual {
			return false, false
		}
	case CmpVersion, CmpCreateRevision, CmpModRevision:
		var have uint64
		unknown := false
		if k.exists {
			switch c.Target {
			case CmpVersion:
				have = k.version
			case CmpCreateRevision:
				have, unknown = k.create, k.createUnknown
			default:
				have, unknown = k.mod, k.modUnknown
			}
		}
		if unknown {
			switch c.Operator {
			case OpEqual:
				return false, true
			case OpNotEqual:
				return true, true
			}
			return false, false
		}
		switch {
		case have < c.Number:
			cmp = -1
		case have > c.Number:
			cmp = 1
		}
	default:
		return false, false
	}
	switch c.Operator {
	case OpEqual:
		return cmp == 0, true
	case OpNotEqual:
		return cmp != 0, true
	case OpLess:
		return cmp < 0, true
	case OpGreater:
		return cmp > 0, true
	}
	return false, false
}

// matchKV checks a read's report of key against the model, learning the
// key's unknown revisions from it.
func matchKV(s *TxnState, kv TxnKV) bool {
	if kv.Key < 0 || kv.Key >= TxnKeys {
		return false
	}
	k := &s.keys[kv.Key]
	if !k.exists || kv.Value != k.value || kv.Version != k.version {
		return false
	}
	if k.modUnknown {
		k.mod, k.modUnknown = kv.ModRevision, false
		if k.version == 1 && k.createUnknown {
			k.create, k.createUnknown = kv.ModRevision, false
		}
	}
	if k.createUnknown {
		k.create, k.createUnknown = kv.CreateRevision, false
	}
	return kv.ModRevision == k.mod && kv.CreateRevision == k.create
}

// stepTxn applies in to s if out is a possible answer to it there.
func stepTxn(s *TxnState, in TxnInput, out TxnOutput) bool {
	ok := true
	for _, c := range in.Compares {
		h, known := holdsTxn(s, c)
		if !known {
			return false
		}
		ok = ok && h
	}
	if !out.Unknown && out.Succeeded != ok {
		return false
	}
	ops := in.Else
	if ok {
		ops = in.Then
	}
	if !out.Unknown && out.Results != nil && len(out.Results) != len(ops) {
		return false
	}
	wrote := false
	for i, op := range ops {
		var r *TxnOpResult
		if !out.Unknown && out.Results != nil {
			r = &out.Results[i]
		}
		if op.Kind != TxnRange && (op.Key < 0 || op.Key >= TxnKeys) {
			return false
		}
		switch op.Kind {
		case TxnPut, TxnDelete:
			k := &s.keys[op.Key]
			if r != nil {
				if r.Found != k.exists || (r.Found && r.KV != nil && !matchKV(s, *r.KV)) {
					return false
				}
			}
			if op.Kind == TxnDelete {
				wrote = wrote || k.exists
				*k = txnKey{}
				continue
			}
			wrote = true
			if !k.exists {
				*k = txnKey{exists: true, create: in.Rev, createUnknown: in.Rev == 0}
			}
			k.value = op.Value
			k.version++
			k.mod, k.modUnknown = in.Rev, in.Rev == 0
		case TxnGet:
			if r == nil {
				continue
			}
			if r.Found != s.keys[op.Key].exists || (r.Found && (r.KV == nil || r.KV.Key != op.Key || !matchKV(s, *r.KV))) {
				return false
			}
		case TxnRange:
			if r == nil {
				continue
			}
			n := 0
			for key := range s.keys {
				if !s.keys[key].exists {
					continue
				}
				if n >= len(r.KVs) || r.KVs[n].Key != key || !matchKV(s, r.KVs[n]) {
					return false
				}
				n++
			}
			if n != len(r.KVs) {
				return false
			}
		default:
			return false
		}
	}
	// Revisions: writes after everything linearized before them, reads
	// not before it.
	rev := in.Rev
	if !out.Unknown && out.Revision != 0 {
		if rev != 0 && wrote && rev != out.Revision {
			return false
		}
		rev = out.Revision
	}
	switch {
	case rev == 0:
	case wrote && rev <= s.rev:
		return false
	case !wrote && !out.Unknown && rev < s.rev:
		return false
	case wrote || !out.Unknown:
		s.rev = rev
	}
	return true
}

// AnnotateTxnRevisions fills each operation's TxnInput.Rev with the
// revision its writes took when an answer says it: its own (a write
// answered with a revision), or any read's report of a key holding a
// value it wrote (put values must be unique in the history). It returns
// a copy.
func AnnotateTxnRevisions(ops []porcupine.Operation) []porcupine.Operation {
	type key struct {
		group, key int
		value      string
	}
	seen := map[key]uint64{} // a put value -> the mod revision a read saw with it
	note := func(g int, kv *TxnKV) {
		if kv == nil {
			return
		}
		k := key{g, kv.Key, kv.Value}
		if _, ok := seen[k]; !ok {
			seen[k] = kv.ModRevision
		}
	}
	for _, op := range ops {
		in, out := op.Input.(TxnInput), op.Output.(TxnOutput)
		if out.Unknown {
			continue
		}
		for i := range out.Results {
			r := &out.Results[i]
			if r.Found {
				note(in.Group, r.KV)
			}
			for j := range r.KVs {
				note(in.Group, &r.KVs[j])
			}
		}
	}
	res := make([]porcupine.Operation, len(ops))
	for i, op := range ops {
		in, out := op.Input.(TxnInput), op.Output.(TxnOutput)
		in.Rev = 0
		if !out.Unknown && out.Revision != 0 && writesTxn(in, out.Succeeded) {
			in.Rev = out.Revision
		}
		for _, branch := range [2][]TxnOp{in.Then, in.Else} {
			for _, o := range branch {
				if rev, ok := seen[key{in.Group, o.Key, o.Value}]; ok && o.Kind == TxnPut && in.Rev == 0 {
					in.Rev = rev
				}
			}
		}
		op.Input = in
		res[i] = op
	}
	return res
}

// writesTxn reports whether the branch that ran (Then if succeeded) has a
// put: its answered revision is then the one its writes took (a branch
// of deletes only may have written nothing).
func writesTxn(in TxnInput, succeeded bool) bool {
	ops := in.Else
	if succeeded {
		ops = in.Then
	}
	for _, o := range ops {
		if o.Kind == TxnPut {
			return true
		}
	}
	return false
}

// DescribeTxn renders an operation for the visualization and messages.
func DescribeTxn(in TxnInput, out TxnOutput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "g%d txn(", in.Group)
	for i, c := range in.Compares {
		if i > 0 {
			b.WriteString(" && ")
		}
		op := [...]string{"==", "!=", "<", ">"}[c.Operator&3]
		switch c.Target {
		case CmpValue:
			fmt.Fprintf(&b, "k%d %s %q", c.Key, op, c.Value)
		case CmpVersion:
			fmt.Fprintf(&b, "ver(k%d) %s %d", c.Key, op, c.Number)
		case CmpCreateRevision:
			fmt.Fprintf(&b, "create(k%d) %s %d", c.Key, op, c.Number)
		case CmpModRevision:
			fmt.Fprintf(&b, "mod(k%d) %s %d", c.Key, op, c.Number)
		case CmpAbsent:
			if c.Operator == OpEqual {
				fmt.Fprintf(&b, "absent(k%d)", c.Key)
			} else {
				fmt.Fprintf(&b, "present(k%d)", c.Key)
			}
		}
	}
	b.WriteString(") then ")
	describeOps(&b, in.Then)
	if len(in.Else) > 0 {
		b.WriteString(" else ")
		describeOps(&b, in.Else)
	}
	if in.Rev != 0 {
		fmt.Fprintf(&b, " @%d", in.Rev)
	}
	switch {
	case out.Unknown:
		b.WriteString(" -> ?")
		return b.String()
	case out.Succeeded:
		b.WriteString(" -> then")
	default:
		b.WriteString(" -> else")
	}
	if out.Revision != 0 {
		fmt.Fprintf(&b, " rev %d", out.Revision)
	}
	if out.Results != nil {
		b.WriteString(" [")
		for i, r := range out.Results {
			if i > 0 {
				b.WriteString("; ")
			}
			switch {
			case r.KVs != nil:
				for j, kv := range r.KVs {
					if j > 0 {
						b.WriteString(",")
					}
					describeKV(&b, kv)
				}
			case !r.Found:
				b.WriteString("-")
			case r.KV != nil:
				describeKV(&b, *r.KV)
			default:
				b.WriteString("found")
			}
		}
		b.WriteString("]")
	}
	return b.String()
}

func describeOps(b *strings.Builder, ops []TxnOp) {
	b.WriteString("{")
	for i, o := range ops {
		if i > 0 {
			b.WriteString("; ")
		}
		switch o.Kind {
		case TxnPut:
			fmt.Fprintf(b, "put k%d=%q", o.Key, o.Value)
		case TxnDelete:
			fmt.Fprintf(b, "del k%d", o.Key)
		case TxnGet:
			fmt.Fprintf(b, "get k%d", o.Key)
		case TxnRange:
			b.WriteString("range")
		}
	}
	b.WriteString("}")
}

func describeKV(b *strings.Builder, kv TxnKV) {
	fmt.Fprintf(b, "k%d=%q v%d c%d m%d", kv.Key, kv.Value, kv.Version, kv.CreateRevision, kv.ModRevision)
}

func describeTxnState(s TxnState) string {
	var b strings.Builder
	for i, k := range s.keys {
		if i > 0 {
			b.WriteString(" ")
		}
		if !k.exists {
			fmt.Fprintf(&b, "k%d:-", i)
			continue
		}
		create, mod := fmt.Sprint(k.create), fmt.Sprint(k.mod)
		if k.createUnknown {
			create = "?"
		}
		if k.modUnknown {
			mod = "?"
		}
		fmt.Fprintf(&b, "k%d:%q v%d c%s m%s", i, k.value, k.version, create, mod)
	}
	fmt.Fprintf(&b, " rev>=%d", s.rev)
	return b.String()
}

// TxnRecorder collects a history of transactions from many goroutines.
type TxnRecorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	stats Stats
}

// NewTxnRecorder starts a history whose clock starts now.
func NewTxnRecorder() *TxnRecorder { return &TxnRecorder{start: time.Now()} }

// TxnCall is a transaction in flight; finish it with Return or Fail.
type TxnCall struct {
	r      *TxnRecorder
	client int
	in     TxnInput
	at     int64
}

// Begin records that client called in now.
func (r *TxnRecorder) Begin(client int, in TxnInput) *TxnCall {
	return &TxnCall{r: r, client: client, in: in, at: int64(time.Since(r.start))}
}

// Return records the transaction's answer, received now.
func (c *TxnCall) Return(out TxnOutput) {
	c.r.add(porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Output: out, Return: int64(time.Since(c.r.start))})
}

// Fail records that the outcome is unknown: a transaction that may write
// is pending forever, one that only reads tells nothing and is dropped.
func (c *TxnCall) Fail() {
	if !mayWrite(c.in) {
		c.r.mu.Lock()
		c.r.stats.Dropped++
		c.r.mu.Unlock()
		return
	}
	c.r.add(porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.at, Output: TxnOutput{Unknown: true}, Return: math.MaxInt64})
}

func mayWrite(in TxnInput) bool {
	for _, branch := range [2][]TxnOp{in.Then, in.Else} {
		for _, o := range branch {
			if o.Kind == TxnPut || o.Kind == TxnDelete {
				return true
			}
		}
	}
	return false
}

func (r *TxnRecorder) add(op porcupine.Operation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	r.stats.Ops++
	if op.Output.(TxnOutput).Unknown {
		r.stats.Unknown++
	}
}

// Stats returns the counters so far.
func (r *TxnRecorder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Operations returns a copy of the history, annotated with revisions
// (AnnotateTxnRevisions); operations pending forever return just after
// the last answer, which porcupine treats as never.
func (r *TxnRecorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	ops := append([]porcupine.Operation(nil), r.ops...)
	r.mu.Unlock()
	var end int64
	for _, op := range ops {
		if op.Return != math.MaxInt64 && op.Return > end {
			end = op.Return
		}
		if op.Call > end {
			end = op.Call
		}
	}
	for i := range ops {
		if ops[i].Return == math.MaxInt64 {
			ops[i].Return = end + 1
		}
	}
	return AnnotateTxnRevisions(ops)
}

// CheckTxns checks ops (annotated) with the transaction model within
// timeout.
func CheckTxns(ops []porcupine.Operation, timeout time.Duration) Result {
	res, info := porcupine.CheckOperationsVerbose(TxnModel, ops, timeout)
	return Result{Verdict: res, Info: info, Ops: len(ops)}
}

// VisualizeTxns writes porcupine's HTML view of a transaction history
// checked by CheckTxns to path.
func VisualizeTxns(res Result, path string) error {
	if err := porcupine.VisualizePath(TxnModel, res.Info, path); err != nil {
		return fmt.Errorf("history: write visualization %s: %w", path, err)
	}
	return nil
}

// WithFlippedTxn returns ops with one answered transaction's branch
// flipped: one whose Then put a value that a later answered read saw, now
// answered as if its compares failed and its Else (which must be empty)
// ran. A checker that accepts the result cannot tell which branch of a
// transaction took effect. The transaction whose value was read earliest
// is used, and only its group's operations are returned, so that the
// checker proves the violation quickly. ok is false when no transaction
// qualifies.
func WithFlippedTxn(ops []porcupine.Operation) (out []porcupine.Operation, ok bool) {
	type key struct {
		group, key int
		value      string
	}
	writer := map[key]int{} // a value put by a qualifying txn -> its index
	for i, op := range ops {
		in, o := op.Input.(TxnInput), op.Output.(TxnOutput)
		if o.Unknown || !o.Succeeded || len(in.Else) > 0 || len(in.Compares) == 0 {
			continue
		}
		for _, t := range in.Then {
			if t.Kind == TxnPut {
				writer[key{in.Group, t.Key, t.Value}] = i
			}
		}
	}
	best, bestRead := -1, int64(math.MaxInt64)
	for _, op := range ops {
		in, o := op.Input.(TxnInput), op.Output.(TxnOutput)
		if o.Unknown || op.Call >= bestRead {
			continue
		}
		for _, r := range o.Results {
			kvs := r.KVs
			if r.KV != nil && r.Found {
				kvs = append(kvs[:len(kvs):len(kvs)], *r.KV)
			}
			for _, kv := range kvs {
				w, isWritten := writer[key{in.Group, kv.Key, kv.Value}]
				if isWritten && ops[w].Return < op.Call {
					best, bestRead = w, op.Call
				}
			}
		}
	}
	if best < 0 {
		return ops, false
	}
	g := ops[best].Input.(TxnInput).Group
	for i, op := range ops {
		if op.Input.(TxnInput).Group != g {
			continue
		}
		if i == best {
			o := op.Output.(TxnOutput)
			o.Succeeded, o.Results = false, []TxnOpResult{}
			op.Output = o
		}
		out = append(out, op)
	}
	return out, true
}
