package client_test

// A fake cluster for the client's tests: Node, KV and Admin capabilities
// served with rpc.Server on loopback, backed by one in-memory map shared by
// every fake node, with session deduplication like the real store and
// faults a test can inject per batch call.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"
	"capnproto.org/go/capnp/v3/exc"
	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// faultKind is what the fake does to one batch call.
type faultKind int

const (
	faultNone       faultKind = iota
	faultDropBefore           // close the connection without applying anything
	faultDropAfter            // apply the batch, then close the connection without answering
	faultCode                 // answer every operation with code, applying nothing
	faultDelay                // wait delay before serving the batch
	faultExpire               // expire every session, then serve the batch
	faultWrongKind            // answer every operation with an empty get result
	faultShort                // answer with no results at all
)

type fault struct {
	kind  faultKind
	code  schema.ErrorCode
	delay time.Duration
}

// fakeKV is one key's state in the fake store.
type fakeKV struct {
	value                      []byte
	create, mod, version, seen uint64
}

// fakeResult is a stored answer, kept for deduplication.
type fakeResult struct {
	kind      schema.Op_Which
	rev       uint64
	failed    bool
	code      schema.ErrorCode
	msg       string
	found     bool
	succeeded bool
	key       string
	kv        fakeKV
	kvs       []string // range: keys
	more      bool
}

type fakeSession struct {
	results map[uint64]fakeResult
	acked   uint64
}

// fakeStore is the state all fake nodes share.
type fakeStore struct {
	mu        sync.Mutex
	rev       uint64
	data      map[string]*fakeKV
	sessions  map[uint64]*fakeSession
	nextSess  uint64
	ttlMillis uint64
	applied   int // writes applied (a retried write answered from the session does not count)
	maxPage   int
	faults    func(call int64) fault
	members   []memberInfo
	leader    uint64 // the leader node Status reports (default 1)
	noLeader  bool   // Status reports no leader (so the client does not move to one)

	batches    atomic.Int64
	ops        atomic.Int64
	maxBatch   atomic.Int64
	opens      atomic.Int64
	keepAlives atomic.Int64
	closes     atomic.Int64

	adminUnavailable atomic.Int64 // answer this many admin calls with unavailable
	adminDrop        atomic.Int64 // drop the connection on this many addMember calls, after applying
	transfers        atomic.Int64 // transferLeadership calls answered

	auth fakeAuth // tokens and logins (fake_auth_test.go)

	// writeGate, if set, holds every batch holding a write until it is
	// closed (the call steps aside with Go, so later calls are served);
	// heldWrites counts the batches it holds.
	writeGate  chan struct{}
	heldWrites atomic.Int64
}

type memberInfo struct {
	id      uint64
	addr    string
	learner bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{
		data: make(map[string]*fakeKV), sessions: make(map[uint64]*fakeSession),
		ttlMillis: 60_000, maxPage: 1000,
	}
}

// setFaults installs f, called with each batch call's number (from 1).
func (s *fakeStore) setFaults(f func(call int64) fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

func (s *fakeStore) faultFor(n int64) fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		return fault{}
	}
	return s.faults(n)
}

func (s *fakeStore) appliedWrites() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

func (s *fakeStore) value(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kv, ok := s.data[key]
	if !ok {
		return "", false
	}
	return string(kv.value), true
}

// fakeNode is one node of the fake cluster: a server and its connections.
type fakeNode struct {
	id    uint64
	store *fakeStore
	srv   *rpc.Server
	addr  string

	mu    sync.Mutex
	conns map[string]net.Conn // by remote address
	sniffer

	// Batch calls this node served: holding a write, and reads only.
	writeBatches, readBatches atomic.Int64
}

// recordingListener remembers the connections it accepts, so the fake can
// cut one in the middle of a call.
type recordingListener struct {
	net.Listener
	node *fakeNode
}

func (l recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.node.mu.Lock()
		l.node.conns[c.RemoteAddr().String()] = c
		l.node.mu.Unlock()
		c = l.node.sniff(c, l.node.store.auth.holdMarker)
	}
	return c, err
}

// startFake serves a fake node with id on a free loopback port.
func startFake(tb testing.TB, store *fakeStore, id uint64) *fakeNode {
	tb.Helper()
	n, err := serveFake(store, id, hclogFor(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.stop)
	return n
}

func hclogFor(tb testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: tb.Name(), Level: hclog.Error, Output: testWriter{tb}})
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func serveFake(store *fakeStore, id uint64, log hclog.Logger) (*fakeNode, error) {
	return serveFakeTLS(store, id, log, nil)
}

// serveFakeTLS is serveFake speaking TLS with cfg (nil: plain TCP).
func serveFakeTLS(store *fakeStore, id uint64, log hclog.Logger, cfg *tls.Config) (*fakeNode, error) {
	return serveFakeAt(store, id, log, cfg, "127.0.0.1:0")
}

// serveFakeAt is serveFakeTLS listening on addr (a stopped node's, to
// bring it back).
func serveFakeAt(store *fakeStore, id uint64, log hclog.Logger, cfg *tls.Config, addr string) (*fakeNode, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	n := &fakeNode{id: id, store: store, addr: ln.Addr().String(), conns: make(map[string]net.Conn)}
	n.srv = rpc.NewServer(rpc.Config{Logger: log, TLSConfig: cfg, Bootstrap: func(ci *rpc.ConnInfo) capnp.Client {
		// Anonymous: everything, unless the store requires a login.
		impl := &fakeNodeCap{node: n, remote: ci.RemoteAddr.String()}
		return capnp.Client(schema.Node_ServerToClient(impl))
	}})
	store.mu.Lock()
	store.members = append(store.members, memberInfo{id: id, addr: n.addr})
	store.mu.Unlock()
	go func() { _ = n.srv.Serve(recordingListener{ln, n}) }()
	return n, nil
}

func (n *fakeNode) stop() { _ = n.srv.Close() }

// drop closes the connection from remote.
func (n *fakeNode) drop(remote string) {
	n.mu.Lock()
	c := n.conns[remote]
	n.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// fakeNodeCap is the bootstrap capability of one connection, or what a
// login on it returned.
type fakeNodeCap struct {
	node   *fakeNode
	remote string
	grant  *fakeGrant // what a login granted; nil: anonymous
}

var errFakeUnimplemented = exc.New(exc.Unimplemented, "", "not served by the fake")

func (f *fakeNodeCap) Echo(context.Context, schema.Node_echo) error {
	if err := f.deny("echo", false); err != nil {
		return err
	}
	return errFakeUnimplemented
}
func (f *fakeNodeCap) Raft(context.Context, schema.Node_raft) error { return errFakeUnimplemented }

func (f *fakeNodeCap) Info(_ context.Context, call schema.Node_info) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	info, err := res.NewInfo()
	if err != nil {
		return err
	}
	info.SetId(f.node.id)
	return info.SetListen(f.node.addr)
}

func (f *fakeNodeCap) Kv(_ context.Context, call schema.Node_kv) error {
	if err := f.deny("kv", false); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetKv(schema.KV_ServerToClient(&fakeKVCap{f}))
}

func (f *fakeNodeCap) Admin(_ context.Context, call schema.Node_admin) error {
	if err := f.deny("admin", true); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	return res.SetAdmin(schema.Admin_ServerToClient(&fakeAdminCap{f}))
}

func (f *fakeNodeCap) Status(_ context.Context, call schema.Node_status) error {
	if err := f.deny("status", false); err != nil {
		return err
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	st, err := res.NewStatus()
	if err != nil {
		return err
	}
	s := f.node.store
	s.mu.Lock()
	defer s.mu.Unlock()
	st.SetId(f.node.id)
	lead := s.leader
	if lead == 0 {
		lead = 1
	}
	if s.noLeader {
		lead = 0
	}
	st.SetRole(schema.Role_follower)
	if f.node.id == lead {
		st.SetRole(schema.Role_leader)
	}
	st.SetTerm(2)
	st.SetLeader(lead)
	st.SetCommit(s.rev + 10)
	st.SetApplied(s.rev + 10)
	st.SetLastIndex(s.rev + 10)
	st.SetRevision(s.rev)
	st.SetClusterId(0xc0ffee)
	if err := st.SetVersion("fake"); err != nil {
		return err
	}
	return st.SetAddress(f.node.addr)
}

type fakeKVCap struct{ n *fakeNodeCap }

func (k *fakeKVCap) Put(context.Context, schema.KV_put) error       { return errFakeUnimplemented }
func (k *fakeKVCap) Get(context.Context, schema.KV_get) error       { return errFakeUnimplemented }
func (k *fakeKVCap) Delete(context.Context, schema.KV_delete) error { return errFakeUnimplemented }
func (k *fakeKVCap) Cas(context.Context, schema.KV_cas) error       { return errFakeUnimplemented }
func (k *fakeKVCap) Range(context.Context, schema.KV_range) error   { return errFakeUnimplemented }
func (k *fakeKVCap) Txn(context.Context, schema.KV_txn) error       { return errFakeUnimplemented }
func (k *fakeKVCap) LeaseGrant(context.Context, schema.KV_leaseGrant) error {
	return errFakeUnimplemented
}
func (k *fakeKVCap) LeaseKeepAlive(context.Context, schema.KV_leaseKeepAlive) error {
	return errFakeUnimplemented
}
func (k *fakeKVCap) LeaseRevoke(context.Context, schema.KV_leaseRevoke) error {
	return errFakeUnimplemented
}
func (k *fakeKVCap) LeaseTimeToLive(context.Context, schema.KV_leaseTimeToLive) error {
	return errFakeUnimplemented
}
func (k *fakeKVCap) LeaseList(context.Context, schema.KV_leaseList) error {
	return errFakeUnimplemented
}
func (k *fakeKVCap) Watch(context.Context, schema.KV_watch) error { return errFakeUnimplemented }

func (k *fakeKVCap) OpenSession(_ context.Context, call schema.KV_openSession) error {
	s := k.n.node.store
	s.opens.Add(1)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextSess++
	s.sessions[s.nextSess] = &fakeSession{results: make(map[uint64]fakeResult)}
	res.SetSession(s.nextSess)
	res.SetTtlMillis(s.ttlMillis)
	return nil
}

func (k *fakeKVCap) KeepAlive(_ context.Context, call schema.KV_keepAlive) error {
	s := k.n.node.store
	s.keepAlives.Add(1)
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, ok := s.sessions[call.Args().Session()]
	s.mu.Unlock()
	if !ok {
		e, err := res.NewError()
		if err != nil {
			return err
		}
		e.SetCode(schema.ErrorCode_sessionExpired)
		return e.SetMessage_("no such session")
	}
	return nil
}

func (k *fakeKVCap) CloseSession(_ context.Context, call schema.KV_closeSession) error {
	s := k.n.node.store
	s.closes.Add(1)
	s.mu.Lock()
	delete(s.sessions, call.Args().Session())
	s.mu.Unlock()
	_, err := call.AllocResults()
	return err
}

func (k *fakeKVCap) Batch(ctx context.Context, call schema.KV_batch) error {
	s := k.n.node.store
	n := s.batches.Add(1)
	req, err := call.Args().Req()
	if err != nil {
		return err
	}
	ops, err := req.Ops()
	if err != nil {
		return err
	}
	s.ops.Add(int64(ops.Len()))
	if batchHasWrite(ops) {
		k.n.node.writeBatches.Add(1)
	} else {
		k.n.node.readBatches.Add(1)
	}
	for {
		m := s.maxBatch.Load()
		if int64(ops.Len()) <= m || s.maxBatch.CompareAndSwap(m, int64(ops.Len())) {
			break
		}
	}
	if s.writeGate != nil && batchHasWrite(ops) {
		call.Go()
		s.heldWrites.Add(1)
		select {
		case <-s.writeGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := s.faultFor(n)
	switch f.kind {
	case faultDelay:
		t := time.NewTimer(f.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	case faultDropBefore:
		k.n.node.drop(k.n.remote)
		return errors.New("fake: dropped the connection")
	case faultExpire:
		s.mu.Lock()
		s.sessions = make(map[uint64]*fakeSession)
		s.mu.Unlock()
	}
	var results []fakeResult
	switch f.kind {
	case faultWrongKind:
		results = make([]fakeResult, ops.Len())
		for i := range results {
			results[i] = fakeResult{kind: schema.Op_Which_get}
		}
	case faultShort:
		results = []fakeResult{}
	case faultCode:
		results = make([]fakeResult, ops.Len())
		for i := range results {
			results[i] = fakeResult{failed: true, code: f.code, msg: "fake fault " + f.code.String()}
		}
	default:
		results = s.apply(req, ops)
	}
	if f.kind == faultDropAfter {
		k.n.node.drop(k.n.remote)
		return errors.New("fake: dropped the connection after applying")
	}
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	list, err := res.NewResults(int32(len(results)))
	if err != nil {
		return err
	}
	for i, r := range results {
		if err := encodeFakeResult(list.At(i), r, s); err != nil {
			return err
		}
	}
	return nil
}

func batchHasWrite(ops schema.Op_List) bool {
	for i := 0; i < ops.Len(); i++ {
		switch ops.At(i).Which() {
		case schema.Op_Which_get, schema.Op_Which_range:
		default:
			return true
		}
	}
	return false
}

// apply runs a batch against the store with session deduplication.
func (s *fakeStore) apply(req schema.BatchRequest, ops schema.Op_List) []fakeResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]fakeResult, ops.Len())
	sess := s.sessions[req.Session()]
	if sess != nil && req.AckedBelow() > sess.acked {
		sess.acked = req.AckedBelow()
		for seq := range sess.results {
			if seq < sess.acked {
				delete(sess.results, seq)
			}
		}
	}
	for i := range out {
		op := ops.At(i)
		w := op.Which()
		if w == schema.Op_Which_get || w == schema.Op_Which_range {
			out[i] = s.read(op)
			continue
		}
		seq := op.Seq()
		switch {
		case sess == nil:
			out[i] = fakeResult{failed: true, code: schema.ErrorCode_sessionExpired, msg: "session unknown or expired"}
			continue
		case seq == 0:
			out[i] = fakeResult{failed: true, code: schema.ErrorCode_invalidArgument, msg: "write without seq"}
			continue
		}
		if r, ok := sess.results[seq]; ok {
			out[i] = r
			continue
		}
		if seq < sess.acked {
			out[i] = fakeResult{failed: true, code: schema.ErrorCode_staleSequence, msg: "stale seq"}
			continue
		}
		r := s.write(op)
		sess.results[seq] = r
		out[i] = r
	}
	return out
}

func (s *fakeStore) read(op schema.Op) fakeResult {
	if op.Which() == schema.Op_Which_get {
		g, _ := op.Get()
		key, _ := g.Key()
		if len(key) == 0 {
			return fakeResult{failed: true, code: schema.ErrorCode_invalidArgument, msg: "empty key"}
		}
		r := fakeResult{kind: schema.Op_Which_get, rev: s.rev, key: string(key)}
		if kv, ok := s.data[string(key)]; ok {
			r.found, r.kv = true, *kv
		}
		return r
	}
	rg, _ := op.Range()
	prefix, _ := rg.Prefix()
	after, _ := rg.After()
	limit := int(rg.Limit())
	if limit == 0 || limit > s.maxPage {
		limit = s.maxPage
	}
	var keys []string
	for k := range s.data {
		if strings.HasPrefix(k, string(prefix)) && k > string(after) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	r := fakeResult{kind: schema.Op_Which_range, rev: s.rev}
	if len(keys) > limit {
		keys, r.more = keys[:limit], true
	}
	r.kvs = keys
	return r
}

const fakeMaxValue = 1 << 20

func (s *fakeStore) write(op schema.Op) fakeResult {
	var key, value []byte
	del := false
	var cas *schema.CasOp
	switch op.Which() {
	case schema.Op_Which_put:
		p, _ := op.Put()
		key, _ = p.Key()
		value, _ = p.Value()
	case schema.Op_Which_delete:
		d, _ := op.Delete()
		key, _ = d.Key()
		del = true
	case schema.Op_Which_cas:
		c, _ := op.Cas()
		cas = &c
		key, _ = c.Key()
		value, _ = c.NewValue()
		del = c.Delete()
	}
	if len(key) == 0 {
		return fakeResult{failed: true, code: schema.ErrorCode_invalidArgument, msg: "empty key"}
	}
	if len(value) > fakeMaxValue {
		return fakeResult{failed: true, code: schema.ErrorCode_tooLarge, msg: fmt.Sprintf("value of %d bytes over the limit of %d", len(value), fakeMaxValue)}
	}
	cur, exists := s.data[string(key)]
	r := fakeResult{kind: op.Which(), key: string(key)}
	if cas != nil {
		ok := false
		switch cas.Expected().Which() {
		case schema.CasOp_expected_Which_value:
			want, _ := cas.Expected().Value()
			ok = exists && string(cur.value) == string(want)
		case schema.CasOp_expected_Which_modRevision:
			ok = exists && cur.mod == cas.Expected().ModRevision()
		case schema.CasOp_expected_Which_absent:
			ok = !exists
		}
		if !ok {
			r.rev = s.rev
			r.found = exists
			if exists {
				r.kv = *cur
			}
			return r
		}
		r.succeeded = true
	}
	s.applied++
	s.rev++
	r.rev = s.rev
	if exists {
		r.found, r.kv = true, *cur
	}
	if del {
		delete(s.data, string(key))
		return r
	}
	nk := &fakeKV{value: append([]byte{}, value...), create: s.rev, mod: s.rev, version: 1}
	if exists {
		nk.create, nk.version = cur.create, cur.version+1
	}
	s.data[string(key)] = nk
	return r
}

func setFakeKV(kv schema.KeyValue, key string, v fakeKV) error {
	if err := kv.SetKey([]byte(key)); err != nil {
		return err
	}
	kv.SetCreateRevision(v.create)
	kv.SetModRevision(v.mod)
	kv.SetVersion(v.version)
	return kv.SetValue(v.value)
}

func encodeFakeResult(out schema.Result, r fakeResult, s *fakeStore) error {
	out.SetRevision(r.rev)
	if r.failed {
		e, err := out.NewError()
		if err != nil {
			return err
		}
		e.SetCode(r.code)
		return e.SetMessage_(r.msg)
	}
	switch r.kind {
	case schema.Op_Which_put:
		p, err := out.NewPut()
		if err != nil {
			return err
		}
		p.SetHadPrev(r.found)
		if r.found {
			prev, err := p.NewPrev()
			if err != nil {
				return err
			}
			return setFakeKV(prev, r.key, r.kv)
		}
	case schema.Op_Which_get:
		g, err := out.NewGet()
		if err != nil {
			return err
		}
		g.SetFound(r.found)
		if r.found {
			kv, err := g.NewKv()
			if err != nil {
				return err
			}
			return setFakeKV(kv, r.key, r.kv)
		}
	case schema.Op_Which_delete:
		d, err := out.NewDelete()
		if err != nil {
			return err
		}
		d.SetDeleted(r.found)
		if r.found {
			prev, err := d.NewPrev()
			if err != nil {
				return err
			}
			return setFakeKV(prev, r.key, r.kv)
		}
	case schema.Op_Which_cas:
		c, err := out.NewCas()
		if err != nil {
			return err
		}
		c.SetSucceeded(r.succeeded)
		c.SetFound(r.found)
		if !r.succeeded && r.found {
			cur, err := c.NewCurrent()
			if err != nil {
				return err
			}
			return setFakeKV(cur, r.key, r.kv)
		}
	case schema.Op_Which_range:
		rg, err := out.NewRange()
		if err != nil {
			return err
		}
		rg.SetMore(r.more)
		list, err := rg.NewKvs(int32(len(r.kvs)))
		if err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, k := range r.kvs {
			v := fakeKV{}
			if cur, ok := s.data[k]; ok {
				v = *cur
			}
			if err := setFakeKV(list.At(i), k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

type fakeAdminCap struct{ n *fakeNodeCap }

// unavailable answers the call with an unavailable error if the test asked
// for it; it reports whether it did.
func (a *fakeAdminCap) unavailable(newError func() (schema.Error, error)) (bool, error) {
	s := a.n.node.store
	for {
		n := s.adminUnavailable.Load()
		if n <= 0 {
			return false, nil
		}
		if s.adminUnavailable.CompareAndSwap(n, n-1) {
			break
		}
	}
	e, err := newError()
	if err != nil {
		return true, err
	}
	e.SetCode(schema.ErrorCode_unavailable)
	return true, e.SetMessage_("no leader (fake)")
}

func (a *fakeAdminCap) Members(_ context.Context, call schema.Admin_members) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if done, err := a.unavailable(res.NewError); done {
		return err
	}
	s := a.n.node.store
	s.mu.Lock()
	defer s.mu.Unlock()
	list, err := res.NewMembers(int32(len(s.members)))
	if err != nil {
		return err
	}
	for i, m := range s.members {
		list.At(i).SetId(m.id)
		list.At(i).SetLearner(m.learner)
		if err := list.At(i).SetAddress(m.addr); err != nil {
			return err
		}
	}
	res.SetLeader(1)
	return nil
}

func (a *fakeAdminCap) AddMember(_ context.Context, call schema.Admin_addMember) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	if done, err := a.unavailable(res.NewError); done {
		return err
	}
	s := a.n.node.store
	if s.adminDrop.Add(-1) >= 0 {
		defer a.n.node.drop(a.n.remote)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := call.Args().Id()
	for _, m := range s.members {
		if m.id == id {
			e, err := res.NewError()
			if err != nil {
				return err
			}
			e.SetCode(schema.ErrorCode_invalidArgument)
			return e.SetMessage_(fmt.Sprintf("node %d is already a member", id))
		}
	}
	addr, _ := call.Args().Address()
	s.members = append(s.members, memberInfo{id: id, addr: addr, learner: call.Args().Learner()})
	return nil
}

func (a *fakeAdminCap) PromoteMember(_ context.Context, call schema.Admin_promoteMember) error {
	_, err := call.AllocResults()
	s := a.n.node.store
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.members {
		if s.members[i].id == call.Args().Id() {
			s.members[i].learner = false
		}
	}
	return err
}

func (a *fakeAdminCap) RemoveMember(_ context.Context, call schema.Admin_removeMember) error {
	_, err := call.AllocResults()
	s := a.n.node.store
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.members[:0]
	for _, m := range s.members {
		if m.id != call.Args().Id() {
			kept = append(kept, m)
		}
	}
	s.members = kept
	return err
}

func (a *fakeAdminCap) TransferLeadership(_ context.Context, call schema.Admin_transferLeadership) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	a.n.node.store.transfers.Add(1)
	switch call.Args().To() {
	case 99:
		e, err := res.NewError()
		if err != nil {
			return err
		}
		e.SetCode(schema.ErrorCode_invalidArgument)
		return e.SetMessage_("node 99 is not a voter")
	case 98:
		e, err := res.NewError()
		if err != nil {
			return err
		}
		e.SetCode(schema.ErrorCode_outcomeUnknown)
		return e.SetMessage_("leadership did not move in time (fake)")
	}
	return nil
}

func (a *fakeAdminCap) Snapshot(_ context.Context, call schema.Admin_snapshot) error {
	res, err := call.AllocResults()
	if err != nil {
		return err
	}
	s := a.n.node.store
	s.mu.Lock()
	defer s.mu.Unlock()
	res.SetIndex(s.rev + 10)
	return nil
}
