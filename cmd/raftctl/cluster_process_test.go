package main_test

// These tests run real raftnode clusters on loopback and drive them with
// the raftctl binary, checking each command's output contract.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Raft timing for test clusters: fast elections, still well above a
// loaded machine's scheduling hiccups.
var fastRaft = []string{"--heartbeat-interval", "20ms", "--election-timeout", "200ms"}

// freeAddrs returns n loopback addresses that were free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	lns := make([]net.Listener, n)
	for i := range lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i], addrs[i] = ln, ln.Addr().String()
	}
	for _, ln := range lns {
		ln.Close()
	}
	return addrs
}

// testCluster is a set of raftnode processes, node i+1 at addrs[i].
type testCluster struct {
	addrs []string
	peers string // the --peers list of the initial members
	nodes map[uint64]*nodeProc
	// security is every node's flags: members prove a cluster secret,
	// and raftctl needs no credential (as scripts/local-cluster.sh runs).
	security []string
}

// devSecurity writes a cluster secret and returns the flags of a
// development cluster on loopback: members prove the secret, clients and
// operators need no credential.
func devSecurity(t *testing.T) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.secret")
	if err := os.WriteFile(path, []byte(strings.Repeat("test-cluster-secret-", 3)), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--cluster-secret-file", path, "--anonymous", "operator"}
}

// startCluster starts an n-node cluster bootstrapped with --peers, each
// node in its own temporary directory, and waits for it to elect a leader.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{addrs: freeAddrs(t, n), nodes: map[uint64]*nodeProc{}, security: devSecurity(t)}
	parts := make([]string, n)
	for i, a := range c.addrs {
		parts[i] = fmt.Sprintf("%d=%s", i+1, a)
	}
	c.peers = strings.Join(parts, ",")
	for i, a := range c.addrs {
		id := uint64(i + 1)
		args := append([]string{"--log-json", "--id", strconv.FormatUint(id, 10), "--listen", a, "--peers", c.peers}, fastRaft...)
		args = append(args, c.security...)
		c.nodes[id] = startNodeIn(t, t.TempDir(), args...)
	}
	waitLeader(t, c.addrs)
	return c
}

// endpoints is the --endpoints value naming every node of the cluster.
func (c *testCluster) endpoints() string { return strings.Join(c.addrs, ",") }

// ctl runs raftctl against endpoints.
func ctl(t *testing.T, endpoints string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return raftctl(t, append([]string{"--endpoints", endpoints}, args...)...)
}

// mustCtl runs raftctl against endpoints, requires exit 0 and an empty
// stderr, and returns stdout.
func mustCtl(t *testing.T, endpoints string, args ...string) string {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, args...)
	if code != 0 || errOut != "" {
		t.Fatalf("raftctl %q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
	}
	return out
}

// nodeRow is one row of raftctl status -o json.
type nodeRow struct {
	Endpoint  string `json:"endpoint"`
	ID        uint64 `json:"id"`
	Address   string `json:"address"`
	Role      string `json:"role"`
	Term      uint64 `json:"term"`
	Leader    uint64 `json:"leader"`
	Commit    uint64 `json:"commit"`
	Applied   uint64 `json:"applied"`
	LastIndex uint64 `json:"last_index"`
	Revision  uint64 `json:"revision"`
	Error     string `json:"error"`
}

// statusRows runs raftctl status -o json against addrs.
func statusRows(t *testing.T, addrs []string) ([]nodeRow, string) {
	t.Helper()
	out, errOut, _ := ctl(t, strings.Join(addrs, ","), "--timeout", "3s", "-o", "json", "status")
	var obj struct {
		Nodes []nodeRow `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil || len(obj.Nodes) != len(addrs) {
		t.Fatalf("status -o json: %v; stdout %q, stderr %q", err, out, errOut)
	}
	return obj.Nodes, out
}

// agreedLeader returns the leader every row names, if exactly one row is
// the leader and every row answered and names it; else 0.
func agreedLeader(rows []nodeRow) uint64 {
	var leader uint64
	for _, r := range rows {
		if r.Error != "" || r.Leader == 0 {
			return 0
		}
		if r.Role == "leader" {
			if leader != 0 {
				return 0
			}
			leader = r.ID
		}
	}
	for _, r := range rows {
		if r.Leader != leader {
			return 0
		}
	}
	return leader
}

// waitFor polls cond every 50ms until it holds or d passes; then it fails
// the test with what and cond's last description.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s; last seen:\n%s", d, what, last)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
	}
}

// waitLeader waits until every node at addrs answers and names the same
// leader, which says it leads, and returns its id.
func waitLeader(t *testing.T, addrs []string) uint64 {
	t.Helper()
	var leader uint64
	waitFor(t, 20*time.Second, "no agreed leader", func() (bool, string) {
		rows, out := statusRows(t, addrs)
		leader = agreedLeader(rows)
		return leader != 0, out
	})
	return leader
}

// jsonShape maps a JSON object's fields to their kinds: int, string, bool,
// number, object, array, kv (a key's state), kv|null.
type jsonShape map[string]string

var kvShape = jsonShape{"key": "string", "value": "string", "create_revision": "int", "mod_revision": "int", "version": "int"}

// decodeOne parses out as exactly one JSON object (and a newline).
func decodeOne(t *testing.T, what, out string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("%s: stdout %q is not a JSON object: %v", what, out, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) || !strings.HasSuffix(out, "}\n") {
		t.Fatalf("%s: stdout %q is not exactly one JSON object and a newline", what, out)
	}
	return obj
}

// checkShape fails the test unless obj has exactly the fields of want,
// each of its kind.
func checkShape(t *testing.T, what string, obj map[string]any, want jsonShape) {
	t.Helper()
	var got, exp []string
	for k := range obj {
		got = append(got, k)
	}
	for k := range want {
		exp = append(exp, k)
	}
	sort.Strings(got)
	sort.Strings(exp)
	if strings.Join(got, ",") != strings.Join(exp, ",") {
		t.Fatalf("%s: JSON fields %v, want %v (object %v)", what, got, exp, obj)
	}
	for k, kind := range want {
		v := obj[k]
		ok := false
		switch kind {
		case "int":
			f, isNum := v.(float64)
			ok = isNum && f >= 0 && f == float64(int64(f))
		case "number":
			_, ok = v.(float64)
		case "string":
			_, ok = v.(string)
		case "bool":
			_, ok = v.(bool)
		case "object":
			_, ok = v.(map[string]any)
		case "array":
			_, ok = v.([]any)
		case "kv", "kv|null":
			if v == nil {
				ok = kind == "kv|null"
				break
			}
			m, isObj := v.(map[string]any)
			if ok = isObj; ok {
				checkShape(t, what+"."+k, m, kvShape)
			}
		default:
			t.Fatalf("checkShape: unknown kind %q", kind)
		}
		if !ok {
			t.Fatalf("%s: field %q = %#v, want %s", what, k, v, kind)
		}
	}
}

// jsonCtl runs raftctl -o json against endpoints, requires exit 0, and
// checks the output's shape.
func jsonCtl(t *testing.T, endpoints string, want jsonShape, args ...string) map[string]any {
	t.Helper()
	out := mustCtl(t, endpoints, append([]string{"-o", "json"}, args...)...)
	obj := decodeOne(t, strings.Join(args, " "), out)
	checkShape(t, strings.Join(args, " "), obj, want)
	return obj
}

// jsonFailure runs raftctl -o json against endpoints, requires exit 1
// with one line on stderr, and returns the error object.
func jsonFailure(t *testing.T, endpoints, kind string, want jsonShape, args ...string) map[string]any {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, append([]string{"-o", "json"}, args...)...)
	if code != 1 || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("raftctl -o json %q: exit %d, stderr %q; want 1 and one line", args, code, errOut)
	}
	obj := decodeOne(t, strings.Join(args, " "), out)
	checkShape(t, strings.Join(args, " "), obj, want)
	if obj["kind"] != kind {
		t.Fatalf("raftctl -o json %q: kind %v, want %s (%v)", args, obj["kind"], kind, obj)
	}
	return obj
}

var okRevision = regexp.MustCompile(`^OK revision=([0-9]+)\n$`)

// put runs raftctl put and returns the revision it printed.
func put(t *testing.T, endpoints, key, value string) uint64 {
	t.Helper()
	out := mustCtl(t, endpoints, "put", key, value)
	m := okRevision.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("put %s %s: stdout %q, want OK revision=N", key, value, out)
	}
	rev, _ := strconv.ParseUint(m[1], 10, 64)
	return rev
}

// expectMissing checks raftctl get's contract for a missing key.
func expectMissing(t *testing.T, endpoints, key string) {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, "get", key)
	want := fmt.Sprintf("raftctl: get %q: key not found\n", key)
	if code != 1 || out != "" || errOut != want {
		t.Fatalf("get %s (missing): exit %d, stdout %q, stderr %q; want 1, nothing, %q", key, code, out, errOut, want)
	}
}

// expectCompareFailed checks that raftctl cas with args fails its compare.
func expectCompareFailed(t *testing.T, endpoints string, args ...string) string {
	t.Helper()
	out, errOut, code := ctl(t, endpoints, append([]string{"cas"}, args...)...)
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "raftctl: compare failed on key ") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("cas %q: exit %d, stdout %q, stderr %q; want exit 1, nothing, one line saying compare failed", args, code, out, errOut)
	}
	return errOut
}

// startDefaultNode starts raftnode with no flags in dir; it skips the test
// if another process took 127.0.0.1:7000 meanwhile.
func startDefaultNode(t *testing.T, dir string) *nodeProc {
	t.Helper()
	node, err := tryStartNodeIn(t, dir)
	if errors.Is(err, errExitedEarly) && strings.Contains(err.Error(), "address already in use") {
		t.Skipf("127.0.0.1:7000 was taken by another process; this test needs it free:\n%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// With no flags at all, raftnode is a single-node cluster on 127.0.0.1:7000
// with its data in ./raftnode-data: raftctl (with no flags either) writes
// at once, and a restart in the same directory keeps the data.
func TestNoFlagsNodeServesWritesAndResumes(t *testing.T) {
	if ln, err := net.Listen("tcp", "127.0.0.1:7000"); err != nil {
		t.Skipf("127.0.0.1:7000 is in use on this machine (%v); this test needs it free", err)
	} else {
		ln.Close()
	}
	t.Setenv("RAFTCTL_ENDPOINTS", "") // raftctl's default endpoint, not the environment's
	dir := t.TempDir()
	node := startDefaultNode(t, dir) // no flags at all
	if node.addr != "127.0.0.1:7000" {
		t.Fatalf("serving on %s, want 127.0.0.1:7000", node.addr)
	}
	// A lone node elects itself at once, before it serves: it does not
	// wait out an election timeout, so the first put succeeds at once.
	logs := node.logs.String()
	elected, serving := strings.Index(logs, "role=leader"), strings.Index(logs, " serving: ")
	if elected < 0 || elected > serving {
		t.Fatalf("the lone node did not lead before serving:\n%s", logs)
	}
	start := time.Now()
	out, errOut, code := raftctl(t, "put", "a", "1")
	t.Logf("the first put took %v", time.Since(start))
	if code != 0 || !okRevision.MatchString(out) {
		t.Fatalf("put a 1: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, errOut, code := raftctl(t, "get", "a"); code != 0 || out != "1\n" {
		t.Fatalf("get a: exit %d, stdout %q, stderr %q; want \"1\\n\"", code, out, errOut)
	}
	if err := node.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "raftnode-data")); err != nil || !fi.IsDir() {
		t.Fatalf("no ./raftnode-data directory in the node's working directory: %v", err)
	}

	node = startDefaultNode(t, dir)
	if node.addr != "127.0.0.1:7000" {
		t.Fatalf("restarted, serving on %s, want 127.0.0.1:7000", node.addr)
	}
	if out, errOut, code := raftctl(t, "get", "a"); code != 0 || out != "1\n" {
		t.Fatalf("get a after the restart: exit %d, stdout %q, stderr %q; want \"1\\n\"", code, out, errOut)
	}
	if out, errOut, code := raftctl(t, "put", "a", "2"); code != 0 || !okRevision.MatchString(out) {
		t.Fatalf("put a 2 after the restart: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if err := node.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// Every key-value command's output contract, through every node of a
// three-node cluster.
func TestKVCommandsOnACluster(t *testing.T) {
	c := startCluster(t, 3)
	all := c.endpoints()

	t.Run("put and get through each endpoint", func(t *testing.T) {
		var last uint64
		for i, ep := range c.addrs {
			key, value := fmt.Sprintf("via/%d", i+1), fmt.Sprintf("value %d", i+1)
			rev := put(t, ep, key, value)
			if rev <= last {
				t.Fatalf("put through %s: revision %d after %d", ep, rev, last)
			}
			last = rev
			for _, other := range c.addrs { // linearizable: every node sees it at once
				if out := mustCtl(t, other, "get", key); out != value+"\n" {
					t.Fatalf("get %s through %s: %q, want %q", key, other, out, value+"\n")
				}
			}
		}
	})

	t.Run("get of a missing key", func(t *testing.T) {
		for _, ep := range c.addrs {
			expectMissing(t, ep, "no/such/key")
		}
		obj := jsonFailure(t, all, "not_found", jsonShape{"error": "string", "kind": "string"}, "get", "no/such/key")
		if !strings.Contains(obj["error"].(string), "key not found") {
			t.Fatalf("JSON error %v", obj)
		}
	})

	t.Run("cas with an old value", func(t *testing.T) {
		r1 := put(t, all, "cas/v", "one")
		out := mustCtl(t, all, "cas", "cas/v", "one", "two")
		m := okRevision.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("cas: stdout %q", out)
		}
		r2, _ := strconv.ParseUint(m[1], 10, 64)
		if r2 <= r1 {
			t.Fatalf("cas revision %d after put revision %d", r2, r1)
		}
		errOut := expectCompareFailed(t, all, "cas/v", "one", "three")
		if want := fmt.Sprintf(`its mod revision is %d, value "two"`, r2); !strings.Contains(errOut, want) {
			t.Fatalf("compare failure %q does not say %q", errOut, want)
		}
		if out := mustCtl(t, all, "get", "cas/v"); out != "two\n" {
			t.Fatalf("after a failed cas, get: %q, want two", out)
		}
		obj := jsonFailure(t, all, "compare_failed", jsonShape{"error": "string", "kind": "string", "current": "kv"},
			"cas", "cas/v", "one", "three")
		cur := obj["current"].(map[string]any)
		if cur["value"] != "two" || cur["mod_revision"] != float64(r2) || cur["key"] != "cas/v" || cur["version"] != float64(2) {
			t.Fatalf("JSON current %v, want value two at revision %d, version 2", cur, r2)
		}
		// A failed compare on a missing key has current null.
		jsonFailure(t, all, "compare_failed", jsonShape{"error": "string", "kind": "string", "current": "kv|null"},
			"cas", "cas/missing", "x", "y")
		expectMissing(t, all, "cas/missing")
		jsonCtl(t, all, jsonShape{"revision": "int"}, "cas", "cas/v", "two", "three")
	})

	t.Run("cas --absent", func(t *testing.T) {
		if out := mustCtl(t, all, "cas", "cas/new", "first", "--absent"); !okRevision.MatchString(out) {
			t.Fatalf("cas --absent on a missing key: %q", out)
		}
		errOut := expectCompareFailed(t, all, "cas/new", "second", "--absent")
		if !strings.Contains(errOut, `value "first"`) {
			t.Fatalf("compare failure %q does not show the current value", errOut)
		}
		if out := mustCtl(t, all, "get", "cas/new"); out != "first\n" {
			t.Fatalf("get after cas --absent: %q", out)
		}
	})

	t.Run("cas --rev and --delete", func(t *testing.T) {
		put(t, all, "cas/r", "a")
		kv := jsonCtl(t, all, kvShape, "get", "cas/r")
		rev := uint64(kv["mod_revision"].(float64))
		if kv["value"] != "a" || kv["key"] != "cas/r" || kv["version"] != float64(1) || kv["create_revision"] != kv["mod_revision"] {
			t.Fatalf("get -o json: %v", kv)
		}
		revStr := strconv.FormatUint(rev, 10)
		out := mustCtl(t, all, "cas", "cas/r", "b", "--rev", revStr)
		m := okRevision.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("cas --rev %d: %q", rev, out)
		}
		expectCompareFailed(t, all, "cas/r", "c", "--rev", revStr) // stale revision
		expectCompareFailed(t, all, "cas/r", "--rev", revStr, "--delete")
		if out := mustCtl(t, all, "get", "cas/r"); out != "b\n" {
			t.Fatalf("get after failed compares: %q", out)
		}
		if out := mustCtl(t, all, "cas", "cas/r", "--rev", m[1], "--delete"); !okRevision.MatchString(out) {
			t.Fatalf("cas --rev %s --delete: %q", m[1], out)
		}
		expectMissing(t, all, "cas/r")

		put(t, all, "cas/d", "x")
		expectCompareFailed(t, all, "cas/d", "y", "--delete")
		if out := mustCtl(t, all, "get", "cas/d"); out != "x\n" {
			t.Fatalf("get after a failed cas --delete: %q", out)
		}
		if out := mustCtl(t, all, "cas", "cas/d", "x", "--delete"); !okRevision.MatchString(out) {
			t.Fatalf("cas x --delete: %q", out)
		}
		expectMissing(t, all, "cas/d")
	})

	t.Run("del", func(t *testing.T) {
		r := put(t, all, "del/k", "v")
		out := mustCtl(t, all, "del", "del/k")
		if want := fmt.Sprintf("OK deleted=true revision=%d\n", r+1); out != want {
			t.Fatalf("del of an existing key: %q, want %q", out, want)
		}
		expectMissing(t, all, "del/k")
		if out := mustCtl(t, all, "del", "del/k"); !regexp.MustCompile(`^OK deleted=false revision=[0-9]+\n$`).MatchString(out) {
			t.Fatalf("del of a missing key: %q", out)
		}
		put(t, all, "del/k", "v")
		obj := jsonCtl(t, all, jsonShape{"deleted": "bool", "revision": "int"}, "delete", "del/k")
		if obj["deleted"] != true {
			t.Fatalf("del -o json: %v", obj)
		}
	})

	t.Run("range pages", func(t *testing.T) {
		const n = 7
		var want []string
		for i := range n {
			k, v := fmt.Sprintf("r/%02d", i), fmt.Sprintf("v%d", i)
			put(t, all, k, v)
			want = append(want, k+"\t"+v+"\n")
		}
		put(t, all, "rz", "not in the prefix")
		if out := mustCtl(t, all, "range", "r/"); out != strings.Join(want, "") {
			t.Fatalf("range r/: %q, want %q", out, strings.Join(want, ""))
		}
		var got []string
		after := ""
		for page := 0; ; page++ {
			if page > n {
				t.Fatalf("range never ended: %q", got)
			}
			args := []string{"range", "r/", "--limit", "3"}
			if after != "" {
				args = append(args, "--after", after)
			}
			out, errOut, code := ctl(t, all, args...)
			if code != 0 {
				t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
			}
			lines := strings.SplitAfter(out, "\n")
			lines = lines[:len(lines)-1]
			if len(lines) == 0 || len(lines) > 3 {
				t.Fatalf("%q: %d lines: %q", args, len(lines), out)
			}
			got = append(got, lines...)
			last, _, _ := strings.Cut(lines[len(lines)-1], "\t")
			if len(got) == n {
				if errOut != "" {
					t.Fatalf("%q (last page): stderr %q, want nothing", args, errOut)
				}
				break
			}
			if wantErr := fmt.Sprintf("(more keys follow: add --after %s)\n", last); errOut != wantErr {
				t.Fatalf("%q: stderr %q, want %q", args, errOut, wantErr)
			}
			after = last
		}
		if strings.Join(got, "") != strings.Join(want, "") {
			t.Fatalf("pages %q, want %q", got, want)
		}
		obj := jsonCtl(t, all, jsonShape{"kvs": "array", "more": "bool", "revision": "int"}, "range", "r/", "--limit", "3")
		kvs := obj["kvs"].([]any)
		if len(kvs) != 3 || obj["more"] != true {
			t.Fatalf("range -o json --limit 3: %v", obj)
		}
		for i, kv := range kvs {
			m, _ := kv.(map[string]any)
			checkShape(t, "range kvs", m, kvShape)
			if m["key"] != fmt.Sprintf("r/%02d", i) || m["value"] != fmt.Sprintf("v%d", i) {
				t.Fatalf("range -o json kvs[%d] = %v", i, m)
			}
		}
		obj = jsonCtl(t, all, jsonShape{"kvs": "array", "more": "bool", "revision": "int"}, "range", "r/", "--after", "r/05")
		if len(obj["kvs"].([]any)) != 1 || obj["more"] != false {
			t.Fatalf("range -o json --after r/05: %v", obj)
		}
	})

	t.Run("put and get in JSON", func(t *testing.T) {
		obj := jsonCtl(t, all, jsonShape{"revision": "int"}, "put", "json/k", "v")
		kv := jsonCtl(t, all, kvShape, "get", "json/k")
		if kv["value"] != "v" || kv["mod_revision"] != obj["revision"] {
			t.Fatalf("get -o json %v after put -o json %v", kv, obj)
		}
	})

	t.Run("status", func(t *testing.T) {
		statusLine := regexp.MustCompile(`^(\S+)\s+([0-9]+)\s+(\S+)\s+(\S+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s+([0-9]+)\s*$`)
		waitFor(t, 10*time.Second, "status table without exactly one leader named by all", func() (bool, string) {
			out := mustCtl(t, all, "status")
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "ENDPOINT ID ADDRESS ROLE TERM LEADER COMMIT APPLIED ERROR" {
				t.Fatalf("status table: want a header and 3 rows:\n%s", out)
			}
			leaders, named := 0, map[string]bool{}
			var leaderID string
			for i, l := range lines[1:] {
				m := statusLine.FindStringSubmatch(l)
				if m == nil || m[1] != c.addrs[i] || m[2] != strconv.Itoa(i+1) || m[3] != c.addrs[i] {
					t.Fatalf("status row %d %q: want endpoint, id %d, address %s and numbers:\n%s", i, l, i+1, c.addrs[i], out)
				}
				if m[4] == "leader" {
					leaders++
					leaderID = m[2]
				}
				named[m[6]] = true
			}
			return leaders == 1 && len(named) == 1 && named[leaderID], out
		})
		obj := jsonCtl(t, all, jsonShape{"nodes": "array"}, "status")
		for i, n := range obj["nodes"].([]any) {
			m, _ := n.(map[string]any)
			checkShape(t, "status nodes", m, jsonShape{
				"endpoint": "string", "id": "int", "address": "string", "role": "string", "term": "int",
				"leader": "int", "commit": "int", "applied": "int", "last_index": "int", "snapshot_index": "int",
				"cluster_id": "int", "revision": "int", "version": "string", "stop_reason": "string",
			})
			if m["endpoint"] != c.addrs[i] || m["id"] != float64(i+1) {
				t.Fatalf("status -o json row %d: %v", i, m)
			}
		}
	})

	t.Run("members", func(t *testing.T) {
		leader := waitLeader(t, c.addrs)
		out := mustCtl(t, all, "members")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "ID ADDRESS ROLE" {
			t.Fatalf("members: want a header and 3 rows:\n%s", out)
		}
		marked := 0
		for i, l := range lines[1:] {
			f := strings.Fields(l)
			id := strconv.Itoa(i + 1)
			if len(f) != 3 || strings.TrimSuffix(f[0], "*") != id || f[1] != c.addrs[i] || f[2] != "voter" {
				t.Fatalf("members row %q: want %s %s voter:\n%s", l, id, c.addrs[i], out)
			}
			if strings.HasSuffix(f[0], "*") {
				marked++
				if id != strconv.FormatUint(leader, 10) {
					t.Errorf("members marks %s as leader; status said %d:\n%s", id, leader, out)
				}
			}
		}
		if marked != 1 {
			t.Fatalf("members marks %d leaders, want 1:\n%s", marked, out)
		}
		obj := jsonCtl(t, all, jsonShape{"leader": "int", "members": "array"}, "members")
		if ms := obj["members"].([]any); len(ms) != 3 {
			t.Fatalf("members -o json: %v", obj)
		}
		for _, m := range obj["members"].([]any) {
			mm, _ := m.(map[string]any)
			checkShape(t, "members", mm, jsonShape{"id": "int", "address": "string", "learner": "bool", "promoting": "bool", "match": "int"})
		}
	})

	t.Run("snapshot and ping", func(t *testing.T) {
		if out := mustCtl(t, c.addrs[0], "snapshot"); !regexp.MustCompile(`^OK index=[1-9][0-9]*\n$`).MatchString(out) {
			t.Fatalf("snapshot: %q", out)
		}
		jsonCtl(t, c.addrs[1], jsonShape{"index": "int"}, "snapshot")
		obj := jsonCtl(t, c.addrs[2], jsonShape{"reply": "string", "rtt_us": "int", "node": "int", "address": "string"}, "ping", "hi")
		if obj["reply"] != "echo:hi" || obj["node"] != float64(3) || obj["address"] != c.addrs[2] {
			t.Fatalf("ping -o json: %v", obj)
		}
	})
}

// A learner added with raftctl catches up, is promoted, takes the lead,
// and stops by itself once removed.
func TestMembershipChangesThroughRaftctl(t *testing.T) {
	c := startCluster(t, 3)
	all := c.endpoints()
	for i := range 5 {
		put(t, all, fmt.Sprintf("m/%d", i), "before node 4")
	}
	addr4 := freeAddrs(t, 1)[0]
	if obj := jsonCtl(t, all, jsonShape{"ok": "bool"}, "member", "add", "4", addr4, "--learner"); obj["ok"] != true {
		t.Fatalf("member add -o json: %v", obj)
	}
	out := mustCtl(t, all, "members")
	if !regexp.MustCompile(`(?m)^4\s+` + regexp.QuoteMeta(addr4) + `\s+learner$`).MatchString(out) {
		t.Fatalf("members after member add --learner:\n%s", out)
	}

	args := append([]string{"--log-json", "--id", "4", "--listen", addr4, "--join", "--peers", c.peers + ",4=" + addr4}, fastRaft...)
	args = append(args, c.security...)
	node4 := startNodeIn(t, t.TempDir(), args...)
	four := append(append([]string(nil), c.addrs...), addr4)
	rows, _ := statusRows(t, c.addrs)
	target := rows[0].Commit
	waitFor(t, 20*time.Second, "node 4 did not catch up as a learner", func() (bool, string) {
		rows, out := statusRows(t, []string{addr4})
		return rows[0].Error == "" && rows[0].Role == "learner" && rows[0].Applied >= target, out
	})
	if out := mustCtl(t, addr4, "get", "m/4"); out != "before node 4\n" {
		t.Fatalf("get m/4 through node 4: %q", out)
	}

	if out := mustCtl(t, all, "member", "promote", "4"); out != "OK\n" {
		t.Fatalf("member promote 4: %q", out)
	}
	obj := jsonCtl(t, all, jsonShape{"leader": "int", "members": "array"}, "members")
	voters := 0
	for _, m := range obj["members"].([]any) {
		if mm, _ := m.(map[string]any); mm["learner"] == false {
			voters++
		}
	}
	if voters != 4 {
		t.Fatalf("after member promote 4: %d voters, want 4: %v", voters, obj)
	}

	if out := mustCtl(t, all, "transfer", "4"); out != "OK\n" {
		t.Fatalf("transfer 4: %q", out)
	}
	if leader := waitLeader(t, four); leader != 4 {
		t.Fatalf("after transfer 4, node %d leads", leader)
	}
	if out := mustCtl(t, strings.Join(four, ","), "members"); !regexp.MustCompile(`(?m)^4\*\s+` + regexp.QuoteMeta(addr4) + `\s+voter$`).MatchString(out) {
		t.Fatalf("members does not mark node 4 as leader:\n%s", out)
	}

	if out := mustCtl(t, all, "member", "remove", "4"); out != "OK\n" {
		t.Fatalf("member remove 4: %q", out)
	}
	err := node4.wait(t, 20*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("removed node 4 exited with %v, want exit status 1", err)
	}
	lines := strings.Split(strings.TrimSpace(node4.logs.String()), "\n")
	if lastLine := lines[len(lines)-1]; !strings.Contains(lastLine, "removed from the cluster") {
		t.Fatalf("node 4's last stderr line %q does not say it was removed", lastLine)
	}
	leader := waitLeader(t, c.addrs)
	out = mustCtl(t, all, "members")
	if strings.Contains(out, addr4) || strings.Count(out, "voter") != 3 || !strings.Contains(out, strconv.FormatUint(leader, 10)+"*") {
		t.Fatalf("members after member remove 4 (leader %d):\n%s", leader, out)
	}
	put(t, all, "m/after", "node 4 gone")
}

// raftctl bench against a real cluster finishes its total and reports.
func TestBenchAgainstACluster(t *testing.T) {
	c := startCluster(t, 3)
	all := c.endpoints()
	const seed = "12345" // key choice; fixed so a failure can be replayed
	report := regexp.MustCompile(`(?s)^(put|get): 200 ops in [0-9.]+s = [0-9]+ ops/s .*\nlatency: p50 \S+  p90 \S+  p99 \S+  p99\.9 \S+  max \S+\nerrors: 0\nseed: ` + seed + ` `)
	for _, args := range [][]string{
		{"bench", "put", "--clients", "4", "--total", "200", "--duration", "40s", "--seed", seed},
		{"bench", "get", "--clients", "4", "--total", "200", "--keys", "50", "--duration", "40s", "--seed", seed},
	} {
		out, errOut, code := ctl(t, all, args...)
		if code != 0 || !report.MatchString(out) {
			t.Fatalf("raftctl %q (seed %s): exit %d\nstdout:\n%s\nstderr:\n%s", args, seed, code, out, errOut)
		}
		if args[1] == "get" && !strings.Contains(errOut, "preload: wrote 50 keys in ") {
			t.Fatalf("bench get did not report its preload; stderr %q", errOut)
		}
	}
	obj := jsonCtl(t, all, jsonShape{
		"op": "string", "ops": "int", "errors": "int", "errors_by_kind": "object", "seconds": "number",
		"ops_per_sec": "number", "clients": "int", "conns": "int", "value_size": "int", "keys": "int",
		"seed": "int", "inflight": "int", "read_spreading": "bool", "latency_us": "object",
	}, "bench", "put", "--clients", "2", "--total", "20", "--duration", "40s", "--seed", seed)
	if obj["ops"] != float64(20) || obj["errors"] != float64(0) || obj["seed"] != float64(12345) {
		t.Fatalf("bench put -o json (seed %s): %v", seed, obj)
	}
	checkShape(t, "latency_us", obj["latency_us"].(map[string]any),
		jsonShape{"p50": "int", "p90": "int", "p99": "int", "p999": "int", "max": "int", "mean": "number"})
	if out := mustCtl(t, all, "get", "bench/0"); len(out) != 257 {
		t.Fatalf("get bench/0 after bench: %d bytes, want 256 and a newline", len(out))
	}
}

// raftctl bench mixed on several connections reports reads and writes
// apart, and with --pids the nodes' CPU and memory.
func TestBenchMixedOnConnectionsReportsReadsWritesAndServerCost(t *testing.T) {
	c := startCluster(t, 3)
	all := c.endpoints()
	const seed = "4242" // key and operation choice; fixed so a failure can be replayed
	pids := make([]string, 0, 3)
	for id := uint64(1); id <= 3; id++ {
		pids = append(pids, strconv.Itoa(c.nodes[id].cmd.Process.Pid))
	}
	args := []string{"-o", "json", "bench", "mixed", "--read-frac", "0.5", "--clients", "4", "--conns", "2", "--total", "200",
		"--keys", "50", "--duration", "40s", "--seed", seed, "--pids", strings.Join(pids, ",")}
	out, errOut, code := ctl(t, all, args...)
	if code != 0 || !strings.Contains(errOut, "preload: wrote 50 keys in ") {
		t.Fatalf("raftctl %q: exit %d, stderr %q; want 0 and the preload's line", args, code, errOut)
	}
	obj := decodeOne(t, strings.Join(args, " "), out)
	checkShape(t, "bench mixed", obj, jsonShape{
		"op": "string", "ops": "int", "errors": "int", "errors_by_kind": "object", "seconds": "number",
		"ops_per_sec": "number", "clients": "int", "conns": "int", "value_size": "int", "keys": "int",
		"seed": "int", "inflight": "int", "read_spreading": "bool", "latency_us": "object", "read_frac": "number",
		"read_latency_us": "object", "write_latency_us": "object", "server": "object",
	})
	if obj["op"] != "mixed" || obj["ops"] != float64(200) || obj["errors"] != float64(0) || obj["conns"] != float64(2) || obj["read_frac"] != 0.5 {
		t.Fatalf("bench mixed -o json (seed %s): %v", seed, obj)
	}
	latency := jsonShape{"p50": "int", "p90": "int", "p99": "int", "p999": "int", "max": "int", "mean": "number"}
	for _, k := range []string{"latency_us", "read_latency_us", "write_latency_us"} {
		checkShape(t, k, obj[k].(map[string]any), latency)
	}
	server := obj["server"].(map[string]any)
	checkShape(t, "server", server, jsonShape{"cpu_seconds": "number", "cpu_us_per_op": "number", "rss_bytes": "int", "by_pid": "array"})
	byPid := server["by_pid"].([]any)
	if len(byPid) != 3 || server["cpu_seconds"].(float64) <= 0 {
		t.Fatalf("server cost for pids %v: %v; want 3 processes that used CPU for 200 operations", pids, server)
	}
	for i, p := range byPid {
		row := p.(map[string]any)
		checkShape(t, "by_pid", row, jsonShape{"pid": "int", "cpu_seconds": "number", "rss_bytes": "int"})
		if strconv.Itoa(int(row["pid"].(float64))) != pids[i] || row["rss_bytes"].(float64) <= 0 {
			t.Fatalf("by_pid[%d] = %v; want pid %s with its memory", i, row, pids[i])
		}
	}

	out, errOut, code = ctl(t, all, "bench", "mixed", "--read-frac", "0.5", "--clients", "4", "--conns", "4",
		"--total", "200", "--keys", "50", "--duration", "40s", "--seed", seed, "--pids", strings.Join(pids, ","))
	m := regexp.MustCompile(`(?s)^mixed: 200 ops in [0-9.]+s = [0-9]+ ops/s \(0\.5 reads, 4 clients on 4 connections, 256-byte values, 50 keys\)\n` +
		`latency: p50 .*\nreads: ([0-9]+), p50 \S+  p90 .*\nwrites: ([0-9]+), p50 \S+  p90 .*\nerrors: 0\n` +
		`server: CPU [0-9.]+s \([0-9]+ µs/op\), RSS [0-9]+ MiB \(pid ` + pids[0] + ` [0-9.]+s [0-9]+ MiB, pid ` + pids[1] + ` .*\)\nseed: ` + seed + ` `).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("bench mixed (seed %s): exit %d\nstdout:\n%s\nstderr:\n%s", seed, code, out, errOut)
	}
	if r, w := atoi(t, m[1]), atoi(t, m[2]); r+w != 200 || r == 0 || w == 0 {
		t.Fatalf("bench mixed --read-frac 0.5 (seed %s): %d reads and %d writes of 200", seed, r, w)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// raftctl fails within its --timeout, saying why, against a cluster that
// lost its quorum and against one that is stopped.
func TestStoppedClusterFailsFast(t *testing.T) {
	c := startCluster(t, 3)
	all := c.endpoints()
	put(t, all, "a", "1")
	for id := uint64(2); id <= 3; id++ {
		t0 := time.Now()
		if err := c.nodes[id].stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("node %d exit after SIGTERM: %v", id, err)
		}
		t.Logf("node %d stopped in %v", id, time.Since(t0))
	}
	start := time.Now()
	out, errOut, code := ctl(t, all, "get", "a", "--timeout", "1s")
	took := time.Since(start)
	t.Logf("without a quorum, get a --timeout 1s failed in %v: %s", took, errOut)
	if took > 4*time.Second {
		t.Errorf("get a --timeout 1s without a quorum took %v", took)
	}
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("get a without a quorum: exit %d, stdout %q, stderr %q; want 1, nothing, one line", code, out, errOut)
	}
	if !strings.Contains(errOut, "(check the nodes with raftctl status)") && !strings.Contains(errOut, "raise --timeout") {
		t.Errorf("get a without a quorum: stderr %q gives no hint", errOut)
	}

	t0 := time.Now()
	if err := c.nodes[1].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("node 1 exit after SIGTERM: %v", err)
	}
	t.Logf("node 1 stopped in %v", time.Since(t0))
	start = time.Now()
	out, errOut, code = ctl(t, all, "get", "a", "--timeout", "1s")
	took = time.Since(start)
	t.Logf("against a stopped cluster, get a --timeout 1s failed in %v: %s", took, errOut)
	if took > 4*time.Second {
		t.Errorf("get a --timeout 1s against a stopped cluster took %v", took)
	}
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 ||
		!strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, "(is raftnode running at that address? set --endpoints)") {
		t.Fatalf("get a against a stopped cluster: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, a := range c.addrs {
		if !strings.Contains(errOut, a) {
			t.Errorf("stderr %q does not name endpoint %s", errOut, a)
		}
	}
}
