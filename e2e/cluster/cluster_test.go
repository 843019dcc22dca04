package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/e2e/faultproxy"
)

// The test binary doubles as a fake raftnode: with $CLUSTER_FAKE_NODE set
// it parses the agreed flags, serves a line echo on --listen, counts its
// starts in --data-dir, logs "serving" as JSON and exits 0 on SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("CLUSTER_FAKE_NODE") != "" {
		os.Exit(fakeNode(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeNode(args []string) int {
	flags := map[string]string{}
	for i := 0; i < len(args); i++ {
		if strings.HasPrefix(args[i], "--") && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			flags[args[i]] = args[i+1]
			i++
		} else {
			flags[args[i]] = "true"
		}
	}
	if flags["--fail"] == "true" {
		fmt.Fprintln(os.Stderr, "fake: failing on purpose")
		return 3
	}
	if flags["--silent"] == "true" {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		<-sigs
		return 0
	}
	if flags["--race-warning"] == "true" {
		fmt.Fprintln(os.Stderr, "==================")
		fmt.Fprintln(os.Stderr, "WARNING: DATA RACE")
	}
	countFile := filepath.Join(flags["--data-dir"], "starts")
	b, _ := os.ReadFile(countFile)
	starts := strings.Count(string(b), "x") + 1
	if err := os.WriteFile(countFile, []byte(strings.Repeat("x", starts)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", flags["--listen"])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("fake: stdout line")
	line, _ := json.Marshal(map[string]any{"@message": "serving", "addr": ln.Addr().String(), "peers": flags["--peers"]})
	fmt.Fprintln(os.Stderr, string(line))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s/%d:%s", flags["--id"], starts, l)
				}
			}()
		}
	}()
	<-sigs
	ln.Close()
	return 0
}

func fakeConfig(t *testing.T) Config {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Binary:            exe,
		Size:              3,
		Env:               []string{"CLUSTER_FAKE_NODE=1"},
		HeartbeatInterval: 20 * time.Millisecond,
		ElectionTimeout:   200 * time.Millisecond,
		Proxies:           true,
		Seed:              1,
	}
}

func ask(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(l, "\n"), err
}

func TestClusterLifecycle(t *testing.T) {
	c := Launch(t, fakeConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, id := range c.IDs() {
		if !c.Running(id) || c.Pid(id) == 0 {
			t.Fatalf("node %d not running after Launch", id)
		}
		got, err := ask(t, c.Addr(id), "hi")
		if want := fmt.Sprintf("%d/1:hi", id); err != nil || got != want {
			t.Fatalf("node %d answered %q, %v; want %q", id, got, err, want)
		}
		log := c.Log(id)
		for _, want := range []string{"fake: stdout line", `"@message":"serving"`, "--election-timeout 200ms", "--heartbeat-interval 20ms", "--log-json"} {
			if !strings.Contains(log, want) {
				t.Fatalf("node %d log lacks %q:\n%s", id, want, log)
			}
		}
	}
	// Peers: itself directly, the others through the mesh, which reaches them.
	peers := c.Peers(1)
	if !strings.Contains(peers, "1="+c.Addr(1)) || !strings.Contains(peers, "2="+c.Mesh().Addr(1, 2)) || strings.Contains(peers, c.Addr(2)) {
		t.Fatalf("peers of node 1 = %s", peers)
	}
	if got, err := ask(t, c.Mesh().Addr(1, 2), "via"); err != nil || got != "2/1:via" {
		t.Fatalf("link 1->2 answered %q, %v", got, err)
	}
	c.Mesh().SetMode(faultproxy.Refuse)
	c.Mesh().Isolate(2)
	if _, err := ask(t, c.Mesh().Addr(1, 2), "cut"); err == nil {
		t.Fatal("link 1->2 still forwards while 2 is isolated")
	}
	c.Mesh().Heal()

	// Kill, then restart on the same port and data dir.
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	if c.Running(2) {
		t.Fatal("node 2 running after Kill")
	}
	if _, err := ask(t, c.Addr(2), "dead"); err == nil {
		t.Fatal("killed node still answers")
	}
	if err := c.Kill(2); err == nil {
		t.Fatal("Kill of a stopped node succeeded")
	}
	if err := c.Restart(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := ask(t, c.Addr(2), "back"); err != nil || got != "2/2:back" {
		t.Fatalf("restarted node answered %q, %v (want its second start)", got, err)
	}
	if err := c.StartNode(ctx, 2); err == nil {
		t.Fatal("starting a running node succeeded")
	}
	if !strings.Contains(c.Log(2), "signal: killed") || c.Starts(2) != 2 {
		t.Fatalf("node 2 log does not record the kill, or starts = %d", c.Starts(2))
	}

	// SIGSTOP: the node holds its connection but answers nothing until
	// SIGCONT.
	conn, err := net.DialTimeout("tcp", c.Addr(1), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := c.Pause(1); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "paused\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	r := bufio.NewReader(conn)
	if l, err := r.ReadString('\n'); err == nil {
		t.Fatalf("paused node answered %q", l)
	}
	if err := c.Resume(1); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, err := r.ReadString('\n'); err != nil || l != "1/1:paused\n" {
		t.Fatalf("resumed node answered %q, %v", l, err)
	}
	if err := c.Pause(1); err != nil { // Close must still end a paused node
		t.Fatal(err)
	}

	// SIGTERM: graceful, exit 0.
	if err := c.Stop(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if tail := c.Tail(3, 1); len(tail) != 1 || !strings.Contains(tail[0], "exit status 0") {
		t.Fatalf("tail of node 3 = %q", tail)
	}
	if err := c.Start(ctx); err != nil { // restarts only node 3
		t.Fatal(err)
	}
	if c.Starts(1) != 1 || c.Starts(3) != 2 {
		t.Fatalf("starts: node 1 %d, node 3 %d", c.Starts(1), c.Starts(3))
	}
	pids := []int{c.Pid(1), c.Pid(2), c.Pid(3)}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Fatalf("node %d (pid %d) alive after Close", i+1, pid)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestNodeThatExitsEarlyIsReported(t *testing.T) {
	cfg := fakeConfig(t)
	cfg.Size = 1
	cfg.Proxies = false
	cfg.Args = []string{"--fail"}
	cfg.Dir = t.TempDir()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exited before serving") || !strings.Contains(err.Error(), "failing on purpose") {
		t.Fatalf("Start = %v; want the early exit and the log tail", err)
	}
}

func TestNodeThatNeverServesTimesOut(t *testing.T) {
	cfg := fakeConfig(t)
	cfg.Size = 1
	cfg.Proxies = false
	cfg.Dir = t.TempDir()
	cfg.Args = []string{"--silent"}
	cfg.StartTimeout = 300 * time.Millisecond
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), `did not log "serving"`) {
		t.Fatalf("Start = %v; want a timeout for a process that never serves", err)
	}
	if !c.Running(1) {
		t.Fatal("the silent node should still run until Close")
	}
}

func TestIsServing(t *testing.T) {
	for line, want := range map[string]bool{
		`{"@level":"info","@message":"serving","addr":"127.0.0.1:1"}`:          true,
		`{"@message":"serving soon"}`:                                          false,
		`2026-01-01T00:00:00.000Z [INFO]  raftnode: serving: addr=127.0.0.1:1`: true,
		`2026-01-01T00:00:00.000Z [INFO]  raftnode: raftnode starting`:         false,
	} {
		if got := isServing(line); got != want {
			t.Errorf("isServing(%s) = %v", line, got)
		}
	}
}

func TestProblemsFindsRuntimeReports(t *testing.T) {
	cfg := fakeConfig(t)
	cfg.Size = 2
	cfg.Proxies = false
	cfg.Dir = t.TempDir()
	cfg.NodeArgs = func(id uint64) []string {
		if id == 2 {
			return []string{"--race-warning"}
		}
		return nil
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := c.Problems(1); len(p) != 0 {
		t.Fatalf("node 1 problems: %q", p)
	}
	if p := c.Problems(2); len(p) != 1 || p[0] != "WARNING: DATA RACE" {
		t.Fatalf("node 2 problems: %q", p)
	}
}

func TestFreeAddrIsBelowTheEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < portLow || p >= portHigh {
			t.Fatalf("FreeAddr = %s, want a port in [%d, %d)", addr, portLow, portHigh)
		}
		seen[addr] = true
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr gave %s, which is not free: %v", addr, err)
		}
		ln.Close()
	}
	if len(seen) < 2 {
		t.Fatalf("FreeAddr keeps returning %v", seen)
	}
}

func TestAddNode(t *testing.T) {
	cfg := fakeConfig(t)
	cfg.Size = 2
	cfg.Proxies = false
	c := Launch(t, cfg)
	n, err := c.AddNode()
	if err != nil {
		t.Fatal(err)
	}
	if n.ID != 3 || len(c.IDs()) != 3 || c.Node(3) != n || c.Running(3) {
		t.Fatalf("added node %+v; ids %v", n, c.IDs())
	}
	args := strings.Join(c.Args(3), " ")
	if !strings.Contains(args, "--join") || !strings.Contains(args, "3="+n.Addr) || !strings.Contains(args, "1="+c.Addr(1)) {
		t.Fatalf("args of the added node: %s", args)
	}
	if strings.Contains(strings.Join(c.Args(1), " "), "--join") {
		t.Fatal("a bootstrap node got --join")
	}
	if err := c.StartNode(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	if got, err := ask(t, n.Addr, "x"); err != nil || got != "3/1:x" {
		t.Fatalf("added node answered %q, %v", got, err)
	}
	pc := fakeConfig(t)
	pc.Dir = t.TempDir()
	withMesh, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	defer withMesh.Close()
	if _, err := withMesh.AddNode(); err == nil {
		t.Fatal("AddNode with proxies succeeded")
	}
}
