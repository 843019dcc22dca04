package e2e

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/cluster"
)

var seedFlag = flag.Int64("seed", 0, "seed for the tests' random choices (0: from the clock; every test prints its seed)")

// raftnodeBin is the raftnode built by TestMain.
var raftnodeBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "capraft-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	err = cluster.Build(ctx, dir, os.Getenv("E2E_RACE") == "1", "github.com/capraft/capraft/cmd/raftnode")
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	raftnodeBin = filepath.Join(dir, "raftnode")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// keyValue is a key's state as the client returns it.
type keyValue struct {
	Key                                  string
	Value                                []byte
	CreateRevision, ModRevision, Version uint64
}

// nodeStatus is the part of a node's status the tests look at.
type nodeStatus struct {
	ID            uint64
	Role          string
	Term          uint64
	Leader        uint64
	Commit        uint64
	Applied       uint64
	LastIndex     uint64
	SnapshotIndex uint64
	Revision      uint64
	ClusterID     uint64
}

func (s nodeStatus) isLeader() bool { return strings.EqualFold(s.Role, "leader") }

// kvClient is what the tests need from client.Client (see adapter_test.go).
type kvClient interface {
	Put(ctx context.Context, key string, value []byte) (rev uint64, err error)
	// Get is linearizable unless serializable is set; a missing key is an
	// error for which isNotFound holds.
	Get(ctx context.Context, key string, serializable bool) (keyValue, error)
	// CAS writes value if the key holds expect, or is absent when expect is
	// nil; a failed compare is an error for which isCompareFailed holds.
	CAS(ctx context.Context, key string, expect, value []byte) (rev uint64, err error)
	// TxnSet writes value in a transaction if the key's mod revision is
	// modRev; succeeded says whether the compare held.
	TxnSet(ctx context.Context, key string, modRev uint64, value []byte) (succeeded bool, err error)
	Status(ctx context.Context, endpoint string) (nodeStatus, error)
	AddMember(ctx context.Context, id uint64, addr string, learner bool) error
	PromoteMember(ctx context.Context, id uint64) error
	RemoveMember(ctx context.Context, id uint64) error
	// Members returns the leader and every member's id, mapped to whether
	// it is a learner.
	Members(ctx context.Context) (leader uint64, learner map[uint64]bool, err error)
	// CreateToken mints a client token, restricted to prefix and to
	// reads if readOnly; it returns the token and its id.
	CreateToken(ctx context.Context, prefix string, readOnly bool) (token, id string, err error)
	// RevokeToken revokes token id and every token derived from it.
	RevokeToken(ctx context.Context, id string) error
	// Grant grants a lease of ttl; KeepAlive keeps it alive until ctx
	// ends; PutLeased puts a key attached to it; LeaseRemaining returns
	// its time to live as the connected node applied it (an error for
	// which isLeaseNotFound holds when it is gone).
	Grant(ctx context.Context, ttl time.Duration) (id uint64, err error)
	KeepAlive(ctx context.Context, id uint64) error
	PutLeased(ctx context.Context, key string, value []byte, lease uint64) (rev uint64, err error)
	LeaseRemaining(ctx context.Context, id uint64) (time.Duration, error)
	// Watch watches the keys with prefix from revision from (0: now),
	// resuming across node failures, until ctx ends.
	Watch(ctx context.Context, prefix string, from uint64) <-chan watchBatch
	Close() error
}

// watchBatch is one response of a watch: its events, the revision it
// brings the watch up to, and the error that ended the watch (last).
type watchBatch struct {
	events []watchEvent
	upTo   uint64
	err    error
}

type watchEvent struct {
	del        bool
	key, value string
	rev        uint64
}

const (
	heartbeat       = 20 * time.Millisecond
	electionTimeout = 200 * time.Millisecond
	requestTimeout  = time.Second     // --request-timeout: a node answers an error after this
	opTimeout       = 2 * time.Second // a client operation's context
	pollEvery       = 20 * time.Millisecond
)

// seeded returns the test's random source and seed, and makes sure the
// seed is printed with a rerun command, again if the test fails.
func seeded(t testing.TB) (*rand.Rand, int64) {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	rerun := fmt.Sprintf("go test ./e2e -run '^%s$' -seed %d -v", t.Name(), seed)
	t.Logf("seed %d (rerun: %s)", seed, rerun)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d; rerun: %s", seed, rerun)
		}
	})
	return rand.New(rand.NewSource(seed)), seed
}

// env is one test's cluster and clients.
type env struct {
	t     testing.TB
	rng   *rand.Rand
	seed  int64
	c     *cluster.Cluster
	admin kvClient // for Status

	mu       sync.Mutex
	nodeArgs map[uint64][]string // flags added to a node's next starts

	// token is the operator token every client logs in with (the
	// cluster runs secure: members prove the cluster secret, nothing is
	// granted without a credential).
	token string

	sec        securityMode
	secretFile string      // the cluster secret (secretMode, insecureSecretMode)
	pki        *testPKI    // the cluster CA and certificates (mtlsMode)
	tls        *tls.Config // how clients speak TLS (mtlsMode), or nil
	// secArgs replaces a node's security flags (see setNodeSecurity).
	secArgs map[uint64][]string
}

// securityMode is how a test cluster authenticates its members and
// clients.
type securityMode int

const (
	// secretMode: members prove a cluster secret; nothing is granted
	// without a credential; clients log in with the operator token.
	secretMode securityMode = iota
	// insecureSecretMode: secretMode with --insecure as well, which must
	// not weaken it.
	insecureSecretMode
	// mtlsMode: mutual TLS with certificates from a test CA (nodes role
	// peer), no cluster secret; clients present an operator certificate.
	mtlsMode
)

func (m securityMode) String() string {
	switch m {
	case secretMode:
		return "cluster-secret"
	case insecureSecretMode:
		return "insecure-with-secret"
	case mtlsMode:
		return "mutual-tls"
	}
	return fmt.Sprintf("securityMode(%d)", int(m))
}

// setNodeArgs adds flags to node id's command line from its next start
// on (later flags override earlier ones).
func (e *env) setNodeArgs(id uint64, args ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nodeArgs[id] = args
}

type envConfig struct {
	size     int          // default 3
	proxies  bool         // peer traffic through the fault mesh
	args     []string     // more raftnode flags
	security securityMode // default secretMode
	// electionTimeout overrides the default (electionTimeout): tests
	// that check the leader never changes make spurious elections
	// unlikely with a longer one.
	electionTimeout time.Duration
	// nodeArgs are more flags for each node, from its first start on
	// (as setNodeArgs).
	nodeArgs map[uint64][]string
}

func newEnv(t testing.TB, cfg envConfig) *env {
	t.Helper()
	rng, seed := seeded(t)
	if cfg.size == 0 {
		cfg.size = 3
	}
	if cfg.electionTimeout == 0 {
		cfg.electionTimeout = electionTimeout
	}
	e := &env{t: t, rng: rng, seed: seed, nodeArgs: map[uint64][]string{}, sec: cfg.security, secArgs: map[uint64][]string{}}
	for id, args := range cfg.nodeArgs {
		e.nodeArgs[id] = args
	}
	// Secure mode: every member proves the cluster secret (or presents a
	// peer certificate); clients and operators need a credential (the
	// operator token the nodes write, or an operator certificate).
	switch cfg.security {
	case secretMode, insecureSecretMode:
		e.secretFile = writeClusterSecret(t)
	case mtlsMode:
		e.pki = newTestPKI(t)
		e.tls = e.pki.clientTLS(t, e.pki.operator)
	}
	e.c = cluster.Launch(t, cluster.Config{
		Binary:            raftnodeBin,
		Size:              cfg.size,
		HeartbeatInterval: heartbeat,
		ElectionTimeout:   cfg.electionTimeout,
		RequestTimeout:    requestTimeout,
		Args:              cfg.args,
		NodeArgs: func(id uint64) []string {
			e.mu.Lock()
			defer e.mu.Unlock()
			return append(e.securityArgs(id), e.nodeArgs[id]...)
		},
		Proxies: cfg.proxies,
		Seed:    seed,
	})
	e.token = e.operatorToken()
	e.admin = e.client(e.c.Addrs()...)
	return e
}

// securityArgs returns node id's security flags: those setNodeSecurity
// gave it, or the cluster's. The caller holds e.mu.
func (e *env) securityArgs(id uint64) []string {
	if args, ok := e.secArgs[id]; ok {
		return args
	}
	switch e.sec {
	case insecureSecretMode:
		return []string{"--cluster-secret-file", e.secretFile, "--anonymous", "none", "--insecure"}
	case mtlsMode:
		certFile, keyFile := e.pki.nodeFiles(e.t, id)
		return []string{"--tls-cert", certFile, "--tls-key", keyFile, "--tls-ca", e.pki.caFile, "--anonymous", "none"}
	}
	return []string{"--cluster-secret-file", e.secretFile, "--anonymous", "none"}
}

// setNodeSecurity replaces node id's security flags (the cluster secret,
// certificates, --anonymous) with args from its next start on.
func (e *env) setNodeSecurity(id uint64, args ...string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secArgs[id] = args
}

// writeClusterSecret writes a fresh cluster secret to a 0600 file.
func writeClusterSecret(t testing.TB) string {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := crand.Read(secret); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(secret)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// operatorToken waits for the operator token a node writes into its data
// directory once the cluster's first token key is applied there.
func (e *env) operatorToken() string {
	e.t.Helper()
	var tok string
	e.waitFor(30*time.Second, "an operator token in a node's data directory", func() (bool, string) {
		for _, id := range e.c.IDs() {
			b, err := os.ReadFile(filepath.Join(e.c.Node(id).DataDir, "operator.token"))
			if err == nil && len(bytes.TrimSpace(b)) > 0 {
				tok = string(bytes.TrimSpace(b))
				return true, ""
			}
		}
		return false, "no node wrote operator.token yet"
	})
	return tok
}

// client returns a client for endpoints, closed when the test ends.
func (e *env) client(endpoints ...string) kvClient {
	e.t.Helper()
	var cl kvClient
	var err error
	if e.tls != nil {
		// Mutual TLS: the client's operator certificate is its credential.
		cl, err = newKVClient(endpoints, "", e.tls)
	} else {
		cl, err = newKVClient(endpoints, e.token, nil)
	}
	if err != nil {
		e.t.Fatalf("client for %v: %v", endpoints, err)
	}
	e.t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// clientFor returns a client that talks to node id only.
func (e *env) clientFor(id uint64) kvClient { return e.client(e.c.Addr(id)) }

// opCtx is the context of one client operation.
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), opTimeout)
}

// waitFor polls cond every pollEvery until it holds or timeout passes; then
// it fails the test with what cond last said.
func (e *env) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not reached within %v; last: %s", what, timeout, last)
		}
		time.Sleep(pollEvery) // polling interval of a condition with a deadline
	}
}

// statuses asks each of ids for its status; unreachable nodes are left out.
func (e *env) statuses(ids []uint64) map[uint64]nodeStatus {
	out := make(map[uint64]nodeStatus, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids {
		if !e.c.Running(id) {
			continue
		}
		wg.Add(1)
		go func(id uint64) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			s, err := e.admin.Status(ctx, e.c.Addr(id))
			if err == nil {
				mu.Lock()
				out[id] = s
				mu.Unlock()
			}
		}(id)
	}
	wg.Wait()
	return out
}

func describe(st map[uint64]nodeStatus) string {
	ids := make([]uint64, 0, len(st))
	for id := range st {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var b strings.Builder
	for _, id := range ids {
		s := st[id]
		fmt.Fprintf(&b, "[%d %s term=%d leader=%d commit=%d applied=%d last=%d snap=%d rev=%d] ",
			id, s.Role, s.Term, s.Leader, s.Commit, s.Applied, s.LastIndex, s.SnapshotIndex, s.Revision)
	}
	return b.String()
}

// leaderAmong returns the node of ids that leads at the highest term
// reported, if a majority of ids reports it as leader at that term.
func (e *env) leaderAmong(ids []uint64) (uint64, map[uint64]nodeStatus) {
	st := e.statuses(ids)
	var leader nodeStatus
	for _, s := range st {
		if s.isLeader() && s.Term > leader.Term {
			leader = s
		}
	}
	if leader.ID == 0 {
		return 0, st
	}
	votes := 0
	for _, s := range st {
		if s.Term == leader.Term && (s.Leader == leader.ID || s.ID == leader.ID) {
			votes++
		}
	}
	if votes < len(ids)/2+1 {
		return 0, st
	}
	return leader.ID, st
}

// waitLeader waits until a majority of ids agree on a leader among them.
func (e *env) waitLeader(ids []uint64, timeout time.Duration) uint64 {
	e.t.Helper()
	var id uint64
	e.waitFor(timeout, fmt.Sprintf("a leader among %v", ids), func() (bool, string) {
		var st map[uint64]nodeStatus
		id, st = e.leaderAmong(ids)
		return id != 0, describe(st)
	})
	return id
}

// others returns the cluster's ids except those given.
func (e *env) others(except ...uint64) []uint64 {
	var out []uint64
	for _, id := range e.c.IDs() {
		skip := false
		for _, x := range except {
			skip = skip || x == id
		}
		if !skip {
			out = append(out, id)
		}
	}
	return out
}

// waitConverged waits until every node of ids is reachable, agrees on the
// leader, and has applied the same index (at least the highest commit
// index seen) and reached the same store revision.
func (e *env) waitConverged(ids []uint64, timeout time.Duration) {
	e.t.Helper()
	e.waitFor(timeout, fmt.Sprintf("nodes %v converged", ids), func() (bool, string) {
		st := e.statuses(ids)
		if len(st) != len(ids) {
			return false, "unreachable nodes: " + describe(st)
		}
		first := st[ids[0]]
		var maxCommit uint64
		for _, s := range st {
			if s.Commit > maxCommit {
				maxCommit = s.Commit
			}
		}
		for _, s := range st {
			if s.Leader == 0 || s.Leader != first.Leader || s.Applied != first.Applied || s.Revision != first.Revision || s.Applied < maxCommit {
				return false, describe(st)
			}
		}
		return true, ""
	})
}

// writeLoad is a set of goroutines each writing its own fresh keys, once
// each, and remembering which writes were acknowledged.
type writeLoad struct {
	mu      sync.Mutex
	acked   map[string]string // key -> value written, acknowledged
	unknown map[string]string // key -> value written, outcome unknown
	nAcked  atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// startWrites starts goroutines writers, each doing at most maxEach puts of
// keys prefix/g/i through the clients (round robin) until stopped.
func (e *env) startWrites(clients []kvClient, prefix string, goroutines, maxEach int) *writeLoad {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeLoad{acked: map[string]string{}, unknown: map[string]string{}, cancel: cancel}
	for g := 0; g < goroutines; g++ {
		w.wg.Add(1)
		go func(g int) {
			defer w.wg.Done()
			cl := clients[g%len(clients)]
			for i := 0; i < maxEach && ctx.Err() == nil; i++ {
				key := fmt.Sprintf("%s/%d/%05d", prefix, g, i)
				val := fmt.Sprintf("v-%d-%d-%d", e.seed, g, i)
				octx, ocancel := opCtx()
				_, err := cl.Put(octx, key, []byte(val))
				ocancel()
				w.mu.Lock()
				if err == nil {
					w.acked[key] = val
					w.nAcked.Add(1)
				} else {
					w.unknown[key] = val
				}
				w.mu.Unlock()
				if err != nil {
					backoff(ctx)
				}
			}
		}(g)
	}
	e.t.Cleanup(w.stop)
	return w
}

// backoff pauses a load goroutine after an error so that a cluster
// without a leader is not hammered; it is not synchronisation.
func backoff(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(20 * time.Millisecond):
	}
}

// stop ends the load and waits for its goroutines (idempotent).
func (w *writeLoad) stop() {
	w.cancel()
	w.wg.Wait()
}

func (w *writeLoad) counts() (acked, unknown int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked), len(w.unknown)
}

// waitAcked waits until the load has n more acknowledged writes than now.
func (e *env) waitAcked(w *writeLoad, n int64, timeout time.Duration, what string) {
	e.t.Helper()
	target := w.nAcked.Load() + n
	e.waitFor(timeout, what, func() (bool, string) {
		got := w.nAcked.Load()
		return got >= target, fmt.Sprintf("%d acknowledged writes, want %d", got, target)
	})
}

// verifyWrites checks that every acknowledged write is readable with its
// value, was applied exactly once (version 1, created and last modified at
// the same revision), and that a write with an unknown outcome, if
// present, is intact too. Reads are linearizable and retried until
// deadline while the cluster settles.
func (e *env) verifyWrites(cl kvClient, w *writeLoad, timeout time.Duration) {
	e.t.Helper()
	w.mu.Lock()
	type item struct {
		key, val string
		acked    bool
	}
	items := make([]item, 0, len(w.acked)+len(w.unknown))
	for k, v := range w.acked {
		items = append(items, item{k, v, true})
	}
	for k, v := range w.unknown {
		items = append(items, item{k, v, false})
	}
	w.mu.Unlock()
	deadline := time.Now().Add(timeout)
	var mu sync.Mutex
	var problems []string
	var found, unknownFound int
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(items) {
					return
				}
				it := items[i]
				var kv keyValue
				var err error
				for {
					octx, cancel := opCtx()
					kv, err = cl.Get(octx, it.key, false)
					cancel()
					if err == nil || isNotFound(err) || time.Now().After(deadline) {
						break
					}
					backoff(context.Background())
				}
				mu.Lock()
				switch {
				case err != nil && isNotFound(err):
					if it.acked {
						problems = append(problems, fmt.Sprintf("acknowledged write %s=%s lost", it.key, it.val))
					}
				case err != nil:
					problems = append(problems, fmt.Sprintf("read %s: %v", it.key, err))
				case string(kv.Value) != it.val:
					problems = append(problems, fmt.Sprintf("%s = %q, want %q", it.key, kv.Value, it.val))
				case kv.Version != 1 || kv.CreateRevision != kv.ModRevision:
					problems = append(problems, fmt.Sprintf("%s written once but version %d, created at %d, modified at %d (applied twice?)",
						it.key, kv.Version, kv.CreateRevision, kv.ModRevision))
				default:
					if it.acked {
						found++
					} else {
						unknownFound++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	acked, unknown := w.counts()
	e.t.Logf("verified %d acknowledged writes (%d intact); %d with unknown outcome, %d of them applied", acked, found, unknown, unknownFound)
	if len(problems) > 0 {
		if len(problems) > 20 {
			problems = append(problems[:20], fmt.Sprintf("... and %d more", len(problems)-20))
		}
		e.t.Fatalf("%d problems:\n%s", len(problems), strings.Join(problems, "\n"))
	}
	if acked == 0 {
		e.t.Fatal("no write was acknowledged: the test checked nothing")
	}
}
