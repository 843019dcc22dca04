package main_test

// These tests build raftnode and raftctl and run them as processes on
// loopback, the way a user does.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bin struct {
	once     sync.Once
	dir      string
	raftnode string
	raftctl  string
	err      error
}

// binaries builds both commands once per test binary run.
func binaries(t *testing.T) (raftnode, raftctl string) {
	t.Helper()
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "capraft-bin-")
		if bin.err != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", bin.dir+string(filepath.Separator),
			"github.com/capraft/capraft/cmd/raftnode", "github.com/capraft/capraft/cmd/raftctl")
		out, err := cmd.CombinedOutput()
		if err != nil {
			bin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
		bin.raftnode = filepath.Join(bin.dir, "raftnode")
		bin.raftctl = filepath.Join(bin.dir, "raftctl")
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.raftnode, bin.raftctl
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	os.Exit(code)
}

// nodeProc is a running raftnode.
type nodeProc struct {
	cmd    *exec.Cmd
	addr   string
	logs   *lockedBuffer
	exited chan struct{} // closed once the process exited and was reaped
	err    error         // cmd.Wait's result, set before exited is closed
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startNode runs raftnode with args plus JSON logs, in a fresh temporary
// directory, and waits until it reports the address it serves on.
func startNode(t *testing.T, args ...string) *nodeProc {
	t.Helper()
	return startNodeIn(t, t.TempDir(), append([]string{"--log-json"}, args...)...)
}

// startNodeIn runs raftnode with exactly args, with dir as its working
// directory, and waits until it logs "serving" (in JSON or text) with the
// address. The process is killed when the test ends, and its logs are
// printed if the test failed.
func startNodeIn(t *testing.T, dir string, args ...string) *nodeProc {
	t.Helper()
	p, err := tryStartNodeIn(t, dir, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// errExitedEarly is returned by tryStartNodeIn when raftnode exits before
// serving; the error's text holds the node's stderr.
var errExitedEarly = errors.New("raftnode exited before serving")

// tryStartNodeIn is startNodeIn returning an error (wrapping
// errExitedEarly if the node exited) instead of failing the test.
func tryStartNodeIn(t *testing.T, dir string, args ...string) (*nodeProc, error) {
	t.Helper()
	raftnode, _ := binaries(t)
	cmd := exec.Command(raftnode, args...)
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("raftnode stderr: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start raftnode: %w", err)
	}
	p := &nodeProc{cmd: cmd, logs: &lockedBuffer{}, exited: make(chan struct{})}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(bytes.Clone(line), '\n'))
			if a := servingAddr(line); a != "" {
				select {
				case addrCh <- a:
				default:
				}
			}
		}
		_, _ = io.Copy(p.logs, stderr) // a line too long for the scanner
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			select {
			case <-p.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("raftnode %v: not reaped 10s after SIGKILL", args)
			}
		}
		if t.Failed() {
			t.Logf("raftnode %v (pid %d) logs:\n%s", args, cmd.Process.Pid, p.logs)
		}
	})
	select {
	case p.addr = <-addrCh:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%w: raftnode %v: %v\n%s", errExitedEarly, args, p.err, p.logs)
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("raftnode %v did not report its address\n%s", args, p.logs)
	}
}

// servingAddr returns the address of a "serving" log line, JSON or text,
// or "" for other lines.
func servingAddr(line []byte) string {
	var entry map[string]any
	if json.Unmarshal(line, &entry) == nil {
		if a, ok := entry["addr"].(string); ok && entry["@message"] == "serving" {
			return a
		}
		return ""
	}
	// Text: "... [INFO]  raftnode.rpc: serving: node=1 addr=127.0.0.1:7000 tls=false"
	s := string(line)
	if !strings.Contains(s, " serving: ") {
		return ""
	}
	_, rest, ok := strings.Cut(s, " addr=")
	if !ok {
		return ""
	}
	a, _, _ := strings.Cut(rest, " ")
	return a
}

// wait waits up to d for the process to exit by itself and returns
// cmd.Wait's result.
func (p *nodeProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		t.Fatalf("raftnode %v still running after %v\n%s", p.cmd.Args[1:], d, p.logs)
		return nil
	}
}

// stop sends sig and waits for the process to exit.
func (p *nodeProc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return p.wait(t, 30*time.Second)
}

// raftctl runs raftctl with args and returns stdout, stderr and exit code.
func raftctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return raftctlWith(t, nil, nil, args...)
}

// raftctlWith runs raftctl with args, stdin (if not nil) and env added to
// its environment, and returns stdout, stderr and exit code.
func raftctlWith(t *testing.T, stdin io.Reader, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	_, ctl := binaries(t)
	cmd := exec.Command(ctl, args...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("raftctl %v did not finish", args)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

func TestPingPrintsReplyAndRoundTrip(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0", "--id", "3")
	out, errOut, code := raftctl(t, "--endpoints", node.addr, "ping", "hello")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !strings.HasPrefix(out, "echo:hello\t(round trip ") || !strings.Contains(out, "node 3 at "+node.addr) {
		t.Fatalf("stdout %q", out)
	}
}

func TestUnreachableEndpointSaysWhatToDo(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	out, errOut, code := raftctl(t, "--endpoints", addr, "ping", "hello")
	if code == 0 {
		t.Fatalf("exit 0 against a dead endpoint; stdout %q", out)
	}
	want := "raftctl: cannot reach " + addr + ": connection refused (is raftnode running at that address? set --endpoints)\n"
	if errOut != want {
		t.Fatalf("stderr %q\nwant   %q", errOut, want)
	}
	if out != "" {
		t.Fatalf("stdout %q, want nothing", out)
	}
}

func TestListenPrintsMessagesInOrderUntilInterrupted(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	_, ctl := binaries(t)
	listen := exec.Command(ctl, "--endpoints", node.addr, "listen")
	stdout, err := listen.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	listen.Stderr = &errOut
	if err := listen.Start(); err != nil {
		t.Fatal(err)
	}
	defer listen.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()

	// Ping probes until the listener shows one: it is then subscribed.
	deadline := time.Now().Add(30 * time.Second)
	subscribed := false
	for i := 0; !subscribed; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("listen never printed a probe; stderr %q", errOut.String())
		}
		if _, e, code := raftctl(t, "--endpoints", node.addr, "ping", fmt.Sprintf("probe-%d", i)); code != 0 {
			t.Fatalf("ping: %s", e)
		}
		select {
		case l := <-lines:
			subscribed = strings.Contains(l, "probe-")
		case <-time.After(200 * time.Millisecond):
		}
	}
	for _, m := range []string{"first", "second", "third"} {
		if _, e, code := raftctl(t, "--endpoints", node.addr, "ping", m); code != 0 {
			t.Fatalf("ping %s: %s", m, e)
		}
	}
	var got []string

	for len(got) < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("listen exited early; stderr %q", errOut.String())
			}
			_, msg, _ := strings.Cut(l, "\t")
			if strings.HasPrefix(msg, "probe-") {
				continue
			}
			got = append(got, msg)

		case <-time.After(30 * time.Second):
			t.Fatalf("listen printed %v so far", got)
		}
	}
	if strings.Join(got, ",") != "first,second,third" {
		t.Fatalf("listen printed %v, want first, second, third in order", got)
	}
	if err := listen.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := listen.Wait(); err != nil {
		t.Fatalf("listen after SIGINT: %v; stderr %q", err, errOut.String())
	}
}

func TestNodeShutsDownCleanlyOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			node := startNode(t, "--listen", "127.0.0.1:0")
			if _, e, code := raftctl(t, "--endpoints", node.addr, "ping", "x"); code != 0 {
				t.Fatalf("ping: %s", e)
			}
			if err := node.stop(t, sig); err != nil {
				t.Fatalf("exit after %v: %v\n%s", sig, err, node.logs)
			}
			if !strings.Contains(node.logs.String(), `"@message":"stopped"`) {
				t.Fatalf("no 'stopped' log line:\n%s", node.logs)
			}
		})
	}
}

// raftnode refuses bad flags with exit status 1 and one line per
// problem on stderr, and leaves nothing behind: no data directory, no log
// line. (cmd/raftnode's tests cover every flag; these are the cases
// met in the field, run as a user runs them.)
func TestNodeRejectsBadFlagsClearly(t *testing.T) {
	raftnode, _ := binaries(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		args []string
		want []string // one line each
	}{
		{[]string{"--log-level", "loud"}, []string{`unknown log level "loud"`}},
		{[]string{"--id", "0"}, []string{"--id 0: node ids start at 1"}},
		{[]string{"--listen", busy.Addr().String()}, []string{"address already in use (is another raftnode running?"}},
		{[]string{"--tls-cert", "x.pem"}, []string{"--tls-cert and --tls-key go together"}},
		{[]string{"--no-such-flag"}, []string{"unknown flag: --no-such-flag (see raftnode --help)"}},
		{[]string{"--peers", "1=127.0.0.1:70000"}, []string{`--peers: member 1: "127.0.0.1:70000": the port must be a number from 1 to 65535`}},
		{[]string{"--peers", "1=127.0.0.1:7001,2=127.0.0.1:7001,3=127.0.0.1:7003"}, []string{"--peers: members 1 and 2 both have address 127.0.0.1:7001"}},
		{[]string{"--max-conns", "-1", "--max-message-size", "1"}, []string{"--max-conns -1: give", "--max-message-size 1: give 4194304 (4 MiB)"}},
	}
	for _, tc := range cases {
		dir := t.TempDir()
		// A node that accepted its flags would serve until killed.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, raftnode, tc.args...)
		cmd.Dir = dir
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		cmd.Stdout = io.Discard
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("raftnode %v: %v, want exit status 1", tc.args, err)
		}
		lines := strings.SplitAfter(errOut.String(), "\n")
		if len(lines) != len(tc.want)+1 || lines[len(lines)-1] != "" {
			t.Errorf("raftnode %v: stderr %q, want %d line(s)", tc.args, errOut.String(), len(tc.want))
			continue
		}
		for i, want := range tc.want {
			if !strings.HasPrefix(lines[i], "raftnode: ") || !strings.Contains(lines[i], want) {
				t.Errorf("raftnode %v: stderr line %q, want it to say %q", tc.args, lines[i], want)
			}
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
			t.Errorf("raftnode %v left %d entries in its directory (%v)", tc.args, len(ents), err)
		}
	}
}

// With no flags at all raftnode serves on 127.0.0.1:7000 and raftctl finds
// it with no flags either.
func TestNoFlagsServesOnTheDefaultAddress(t *testing.T) {
	if ln, err := net.Listen("tcp", "127.0.0.1:7000"); err != nil {
		t.Skipf("127.0.0.1:7000 is in use on this machine (%v); this test needs it free", err)
	} else {
		ln.Close()
	}
	node := startNode(t)
	if node.addr != "127.0.0.1:7000" {
		t.Fatalf("serving on %s, want 127.0.0.1:7000", node.addr)
	}
	out, errOut, code := raftctl(t, "ping", "hello")
	if code != 0 || !strings.HasPrefix(out, "echo:hello") {
		t.Fatalf("raftctl ping hello: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if err := node.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// deadEndpoint returns a loopback address nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestBadArgumentsAreRejectedClearly(t *testing.T) {
	dead := deadEndpoint(t) // never contacted: the arguments are checked first
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"put", "k"}, "raftctl put takes 2 argument(s), KEY and VALUE; got 1"},
		{[]string{"put", "", "v"}, "empty key"},
		{[]string{"get"}, "raftctl get takes 1 argument(s), KEY; got 0"},
		{[]string{"del", "a", "b"}, "raftctl del takes 1 argument(s), KEY; got 2"},
		{[]string{"cas", "k", "old"}, "raftctl cas takes KEY, OLD and NEW; got 2 argument(s)"},
		{[]string{"cas", "k", "old", "new", "--absent"}, "raftctl cas takes KEY and NEW (with --absent); got 3 argument(s)"},
		{[]string{"cas", "k", "old", "--rev", "3", "--delete"}, "raftctl cas takes KEY (with --rev --delete); got 2 argument(s)"},
		{[]string{"cas", "k", "old", "new", "--file", "f"}, "raftctl cas takes KEY and OLD (with --file); got 3 argument(s)"},
		{[]string{"cas", "k", "new", "--old-file", "f", "--absent"}, "--old-file gives OLD, which --absent and --rev replace"},
		{[]string{"cas", "k", "old", "--file", "f", "--delete"}, "--file gives NEW, which --delete does not take"},
		{[]string{"cas", "k", "-", "-"}, "OLD and NEW cannot both be - (stdin holds one value); give one of them with --old-file F or --file F"},
		{[]string{"cas", "k", "old", "--file", "no/such/file"}, "--file: open no/such/file: no such file or directory"},
		{[]string{"put", "k", "v", "--file", "f"}, "raftctl put takes 1 argument(s), KEY (with --file); got 2"},
		{[]string{"put", "k", "--file", "no/such/file"}, "--file: open no/such/file: no such file or directory"},
		{[]string{"get", ""}, "empty key"},
		{[]string{"del", ""}, "empty key"},
		{[]string{"cas", "", "a", "b"}, "empty key"},
		{[]string{"member", "add", "4", ""}, `member add: ADDR empty address; give host:port, e.g. 127.0.0.1:7000`},
		{[]string{"member", "add", "4", "127.0.0.1:99999"}, `member add: ADDR "127.0.0.1:99999": the port must be a number from 1 to 65535`},
		{[]string{"member", "add", "4", "node4"}, `member add: ADDR "node4" has no port`},
		{[]string{"bench", "put", "--value-size", "1048577"}, "--value-size must be between 0 and 1048576 (the node's 1 MiB value limit)"},
		{[]string{"cas", "k", "new", "--absent", "--rev", "3"}, "--absent and --rev exclude each other"},
		{[]string{"cas", "k", "--absent", "--delete"}, "--absent with --delete never deletes anything"},
		{[]string{"cas", "k", "--rev", "x", "new"}, `invalid argument "x" for "--rev"`},
		{[]string{"range"}, "raftctl range takes 1 argument(s), PREFIX; got 0"},
		{[]string{"range", "p", "--limit", "-1"}, "--limit must be 0"},
		{[]string{"-o", "yaml", "get", "k"}, `unknown output format "yaml": use -o table or -o json`},
		{[]string{"member"}, "raftctl member needs a subcommand: add, promote or remove"},
		{[]string{"member", "add", "0", "127.0.0.1:1"}, `node id "0": want a positive integer`},
		{[]string{"member", "add", "x", "127.0.0.1:1"}, `node id "x": want a positive integer`},
		{[]string{"member", "promote"}, "raftctl member promote takes 1 argument(s), ID; got 0"},
		{[]string{"member", "remove", "-3"}, "unknown shorthand flag"},
		{[]string{"transfer", "1", "2"}, "raftctl transfer takes at most one argument"},
		{[]string{"status", "extra"}, "raftctl status takes 0 argument(s)"},
		{[]string{"bench"}, "raftctl bench needs a subcommand: put, get or mixed"},
		{[]string{"bench", "mixed", "--read-frac", "1.5"}, "--read-frac must be between 0 and 1"},
		{[]string{"bench", "mixed", "--read-frac", "-0.1"}, "--read-frac must be between 0 and 1"},
		{[]string{"bench", "put", "--read-frac", "0.5"}, "unknown flag: --read-frac"},
		{[]string{"bench", "put", "--pids", "1,x"}, `--pids: "x" is not a process id`},
		{[]string{"bench", "get", "--pids", "2147483647"}, "--pids: cpu time of pid 2147483647"},
		{[]string{"bench", "put", "--clients", "0"}, "--clients must be between 1 and 100000"},
		{[]string{"bench", "put", "--clients", "2", "--conns", "3"}, "--conns must be between 1 and --clients (2)"},
		{[]string{"bench", "get", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"bench", "put", "--keys", "0"}, "--keys must be positive"},
		{[]string{"bench", "put", "--serializable"}, "unknown flag: --serializable"},
		{[]string{"--timeout", "0s", "get", "k"}, "--timeout and --dial-timeout must be positive"},
		{[]string{"--endpoints", "", "get", "k"}, "no endpoints: set --endpoints host:port[,host:port...], e.g. 127.0.0.1:7000"},
		{[]string{"--endpoints", dead + ",,", "get", "k"}, "empty endpoint in --endpoints"},
		{[]string{"--endpoints", "foo", "get", "k"}, `--endpoints: endpoint "foo" has no port; give host:port, e.g. 127.0.0.1:7000`},
		{[]string{"--endpoints", dead + ",127.0.0.1:70000", "get", "k"}, `--endpoints: endpoint "127.0.0.1:70000": the port must be a number from 1 to 65535, e.g. 127.0.0.1:7000`},
		{[]string{"--endpoints", "127.0.0.1:0", "get", "k"}, `--endpoints: endpoint "127.0.0.1:0": the port must be a number from 1 to 65535`},
		{[]string{"--endpoints", "127.0.0.1:http", "get", "k"}, `--endpoints: endpoint "127.0.0.1:http": the port must be a number from 1 to 65535`},
		{[]string{"--endpoints", ":7000", "get", "k"}, `--endpoints: endpoint ":7000" has no host; give one, e.g. 127.0.0.1:7000`},
		{[]string{"--endpoints", "::1:7000", "get", "k"}, `--endpoints: endpoint "::1:7000" is not host:port; write an IPv6 address in brackets, e.g. [::1]:7000`},
		{[]string{"--endpoints", "http://127.0.0.1:7000", "status"}, `--endpoints: endpoint "http://127.0.0.1:7000" is a URL; give host:port without "http://"`},
		{[]string{"--endpoints", "a b:7000", "ping", "x"}, `--endpoints: endpoint "a b:7000": "a b" is neither an IP address nor a host name`},
	}
	for _, tc := range cases {
		args := append([]string{"--endpoints", dead}, tc.args...)
		if tc.args[0] == "--endpoints" {
			args = tc.args
		}
		out, errOut, code := raftctl(t, args...)
		if code != 1 {
			t.Errorf("raftctl %q: exit %d, want 1", tc.args, code)
		}
		if out != "" {
			t.Errorf("raftctl %q: stdout %q, want nothing", tc.args, out)
		}
		if !strings.HasPrefix(errOut, "raftctl: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("raftctl %q: stderr %q, want one line saying %q", tc.args, errOut, tc.want)
		}
	}
}

func TestKVCommandsAgainstAnUnreachableEndpoint(t *testing.T) {
	dead := deadEndpoint(t)
	for _, args := range [][]string{
		{"put", "k", "v"}, {"get", "k"}, {"del", "k"}, {"cas", "k", "a", "b"}, {"range", "p"},
		{"members"}, {"member", "add", "4", "127.0.0.1:1"}, {"snapshot"}, {"transfer"},
	} {
		start := time.Now()
		out, errOut, code := raftctl(t, append([]string{"--endpoints", dead, "--timeout", "300ms"}, args...)...)
		if code != 1 || out != "" {
			t.Errorf("raftctl %q: exit %d, stdout %q; want 1 and nothing", args, code, out)
		}
		want := "cannot reach " + dead + ": connection refused"
		if !strings.HasPrefix(errOut, "raftctl: ") || !strings.Contains(errOut, want) ||
			!strings.Contains(errOut, "(is raftnode running at that address? set --endpoints)") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("raftctl %q: stderr %q", args, errOut)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("raftctl %q took %v with --timeout 300ms", args, d)
		}
	}
}

func TestJSONErrorObject(t *testing.T) {
	dead := deadEndpoint(t)
	out, errOut, code := raftctl(t, "--endpoints", dead, "--timeout", "200ms", "-o", "json", "get", "k")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var obj struct {
		Error string `json:"error"`
		Kind  string `json:"kind"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("stdout %q is not one JSON object: %v", out, err)
	}
	if obj.Kind != "unavailable" || !strings.Contains(obj.Error, "connection refused") {
		t.Fatalf("JSON error %+v", obj)
	}
	if !strings.HasPrefix(errOut, "raftctl: ") {
		t.Fatalf("stderr %q", errOut)
	}
	out, _, code = raftctl(t, "--endpoints", dead, "-o", "json", "put", "k")
	if code != 1 || !strings.Contains(out, `"kind":"usage"`) {
		t.Fatalf("usage error in JSON: exit %d, stdout %q", code, out)
	}
}

func TestStatusReportsEveryEndpoint(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	dead := deadEndpoint(t)
	out, errOut, code := raftctl(t, "--endpoints", node.addr+","+dead, "--timeout", "5s", "status")
	if code != 1 {
		t.Fatalf("exit %d with an unreachable endpoint, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ENDPOINT") || !strings.Contains(lines[0], "APPLIED") {
		t.Fatalf("status table:\n%s", out)
	}
	if !strings.HasPrefix(lines[1], node.addr) || !strings.HasPrefix(lines[2], dead) || !strings.Contains(lines[2], "connection refused") {
		t.Fatalf("status rows:\n%s", out)
	}
	if errOut != "raftctl: 2 of 2 endpoints did not answer\n" && errOut != "raftctl: 1 of 2 endpoints did not answer\n" {
		t.Fatalf("stderr %q", errOut)
	}
	out, _, code = raftctl(t, "--endpoints", node.addr+","+dead, "-o", "json", "status")
	var obj struct {
		Nodes []map[string]any `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil || len(obj.Nodes) != 2 || code != 1 {
		t.Fatalf("status -o json: exit %d, %v, stdout %q", code, err, out)
	}
	if obj.Nodes[1]["endpoint"] != dead || !strings.Contains(fmt.Sprint(obj.Nodes[1]["error"]), "connection refused") {
		t.Fatalf("JSON row for the dead endpoint: %v", obj.Nodes[1])
	}
}

func TestBenchStopsAtItsDurationAgainstADeadCluster(t *testing.T) {
	dead := deadEndpoint(t)
	start := time.Now()
	out, errOut, code := raftctl(t, "--endpoints", dead, "--timeout", "100ms", "bench", "put", "--duration", "1500ms", "--clients", "4")
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("bench ran %v for --duration 1.5s", d)
	}
	if code != 1 || !strings.Contains(errOut, "raftctl: no put succeeded") || !strings.Contains(errOut, "unavailable=") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(errOut, "bench put:   1.0s  0 ops") {
		t.Fatalf("no progress line on stderr: %q", errOut)
	}
	if !strings.HasPrefix(out, "put: 0 ops in ") || !strings.Contains(out, "errors: ") {
		t.Fatalf("stdout %q", out)
	}
}

func TestBenchStopsAtItsTotal(t *testing.T) {
	dead := deadEndpoint(t)
	start := time.Now()
	out, errOut, code := raftctl(t, "--endpoints", dead, "--timeout", "100ms", "-o", "json",
		"bench", "put", "--duration", "60s", "--total", "3", "--clients", "8")
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("bench with --total 3 ran %v", d)
	}
	var obj struct {
		Ops    int64            `json:"ops"`
		Errors int64            `json:"errors"`
		Kinds  map[string]int64 `json:"errors_by_kind"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		t.Fatalf("stdout %q: %v", out, err)
	}
	if code != 1 || obj.Ops != 0 || obj.Errors != 3 || obj.Kinds["unavailable"] != 3 {
		t.Fatalf("exit %d, result %+v, stderr %q; want 3 unavailable errors", code, obj, errOut)
	}
}
