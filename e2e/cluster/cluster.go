// Package cluster runs a capraft cluster as real raftnode processes on
// loopback, for end-to-end tests.
//
// Each node gets a fixed 127.0.0.1 port (kept across restarts), its own
// data directory and a log file that collects its stdout and stderr
// across restarts. With Config.Proxies, every node reaches every other
// node through its own faultproxy link (node i's --peers lists, for each
// j, the address of link i->j), so a test can partition the cluster; the
// cluster id depends on node ids only, so per-node address views are
// allowed. Clients dial the nodes directly.
//
// Kill sends SIGKILL, Stop SIGTERM (and expects exit status 0), Restart
// starts a stopped node again on the same port and data directory. Close
// kills whatever still runs; on Linux the nodes are also killed if the
// test process dies.
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/capraft/capraft/e2e/faultproxy"
)

// Build compiles the main packages pkgs (import paths) into dir with
// `go build`, with the race detector if race is set.
func Build(ctx context.Context, dir string, race bool, pkgs ...string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("cluster: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// Config describes a cluster.
type Config struct {
	Binary string // the raftnode executable
	Size   int    // number of nodes, ids 1..Size
	Dir    string // parent of every node's data directory and log file

	// HeartbeatInterval, ElectionTimeout and RequestTimeout are passed as
	// --heartbeat-interval, --election-timeout and --request-timeout when
	// non-zero.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	RequestTimeout    time.Duration
	Args              []string                 // more flags for every node
	NodeArgs          func(id uint64) []string // more flags for one node, or nil
	Env               []string                 // extra environment variables

	Proxies bool  // peers talk through a faultproxy.Mesh
	Seed    int64 // seeds the mesh's jitter

	StartTimeout time.Duration // how long a node may take to log "serving" (default 30s)
}

// Node is one member of the cluster.
type Node struct {
	ID      uint64
	Addr    string // the address it listens on, for clients
	DataDir string
	LogPath string
	Join    bool // started with --join: added by AddNode

	mu      sync.Mutex
	proc    *process
	starts  int
	lastErr error // how the last process ended
}

// process is one run of a node.
type process struct {
	cmd     *exec.Cmd
	serving chan struct{} // closed when the node logged "serving"
	done    chan struct{} // closed when the process was reaped
	err     error         // Wait's result, set before done closes
}

// Cluster is a set of raftnode processes.
type Cluster struct {
	cfg   Config
	mu    sync.RWMutex // guards ids and nodes, which AddNode extends
	ids   []uint64
	nodes map[uint64]*Node
	mesh  *faultproxy.Mesh
	logMu sync.Mutex // serializes writes to the log files
}

// New allocates ports, directories and (with Proxies) the fault mesh. It
// starts no process; call Start.
func New(cfg Config) (*Cluster, error) {
	if cfg.Size < 1 {
		return nil, errors.New("cluster: Size must be at least 1")
	}
	if cfg.Binary == "" || cfg.Dir == "" {
		return nil, errors.New("cluster: Binary and Dir are required")
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	c := &Cluster{cfg: cfg, nodes: make(map[uint64]*Node)}
	targets := map[uint64]string{}
	for i := 1; i <= cfg.Size; i++ {
		id := uint64(i)
		addr, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		n := &Node{
			ID:      id,
			Addr:    addr,
			DataDir: filepath.Join(cfg.Dir, fmt.Sprintf("node%d", id)),
			LogPath: filepath.Join(cfg.Dir, fmt.Sprintf("node%d.log", id)),
		}
		if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster: data dir for node %d: %w", id, err)
		}
		c.ids = append(c.ids, id)
		c.nodes[id] = n
		targets[id] = addr
	}
	if cfg.Proxies {
		m, err := faultproxy.NewMesh(targets, cfg.Seed)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		c.mesh = m
	}
	return c, nil
}

// AddNode registers a new node (id: the highest so far plus one) with a
// fresh port and data directory. StartNode starts it with --join and a
// --peers list of every node, itself included; adding it to the Raft
// configuration (client AddMember) is up to the caller. Not available
// with Config.Proxies: the mesh is fixed at New.
func (c *Cluster) AddNode() (*Node, error) {
	if c.mesh != nil {
		return nil, errors.New("cluster: AddNode does not work with Proxies")
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.ids[len(c.ids)-1] + 1
	n := &Node{
		ID:      id,
		Addr:    addr,
		DataDir: filepath.Join(c.cfg.Dir, fmt.Sprintf("node%d", id)),
		LogPath: filepath.Join(c.cfg.Dir, fmt.Sprintf("node%d.log", id)),
		Join:    true,
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: data dir for node %d: %w", id, err)
	}
	c.ids = append(c.ids, id)
	c.nodes[id] = n
	return n, nil
}

// Node ports are picked below Linux's default ephemeral range
// (32768-60999): an outgoing connection's local port, which comes from
// that range, can then never occupy a killed node's port before it
// restarts.
const (
	portLow  = 20000
	portHigh = 32000
)

var portRand = struct {
	sync.Mutex
	*rand.Rand
}{Rand: rand.New(rand.NewSource(time.Now().UnixNano() ^ int64(os.Getpid())))}

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago,
// below the ephemeral port range when it can find one there.
func FreeAddr() (string, error) {
	for i := 0; i < 200; i++ {
		portRand.Lock()
		port := portLow + portRand.Intn(portHigh-portLow)
		portRand.Unlock()
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			return "", fmt.Errorf("cluster: free port %s: %w", addr, err)
		}
		return addr, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cluster: find a free port: %w", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		return "", fmt.Errorf("cluster: free port %s: %w", addr, err)
	}
	return addr, nil
}

// IDs returns the node ids, 1..Size.
func (c *Cluster) IDs() []uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]uint64(nil), c.ids...)
}

// Node returns node id (nil if there is none).
func (c *Cluster) Node(id uint64) *Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.nodes[id]
}

// Addr is node id's client address.
func (c *Cluster) Addr(id uint64) string {
	if n := c.Node(id); n != nil {
		return n.Addr
	}
	return ""
}

// Addrs lists every node's client address, in id order.
func (c *Cluster) Addrs() []string {
	out := make([]string, 0, len(c.IDs()))
	for _, id := range c.IDs() {
		out = append(out, c.Node(id).Addr)
	}
	return out
}

// Mesh is the fault mesh between the nodes (nil without Config.Proxies).
func (c *Cluster) Mesh() *faultproxy.Mesh { return c.mesh }

// Peers is the --peers value node id starts with: itself at its own
// address, every other node at the link id->j (or directly without
// proxies).
func (c *Cluster) Peers(id uint64) string {
	parts := make([]string, 0, len(c.IDs()))
	for _, j := range c.IDs() {
		addr := c.Node(j).Addr
		if c.mesh != nil && j != id {
			addr = c.mesh.Addr(id, j)
		}
		parts = append(parts, fmt.Sprintf("%d=%s", j, addr))
	}
	return strings.Join(parts, ",")
}

// Args is the full command line (without the binary) node id runs with.
func (c *Cluster) Args(id uint64) []string {
	n := c.Node(id)
	args := []string{
		"--id", strconv.FormatUint(id, 10),
		"--listen", n.Addr,
		"--data-dir", n.DataDir,
		"--peers", c.Peers(id),
		"--log-json",
	}
	dur := func(flag string, d time.Duration) {
		if d != 0 {
			args = append(args, flag, d.String())
		}
	}
	dur("--heartbeat-interval", c.cfg.HeartbeatInterval)
	dur("--election-timeout", c.cfg.ElectionTimeout)
	dur("--request-timeout", c.cfg.RequestTimeout)
	if n.Join {
		args = append(args, "--join")
	}
	args = append(args, c.cfg.Args...)
	if c.cfg.NodeArgs != nil {
		args = append(args, c.cfg.NodeArgs(id)...)
	}
	return args
}

// Start starts every node that is not running and waits until all of them
// serve.
func (c *Cluster) Start(ctx context.Context) error {
	errs := make([]error, len(c.IDs()))
	var wg sync.WaitGroup
	for i, id := range c.IDs() {
		if c.Running(id) {
			continue
		}
		wg.Add(1)
		go func(i int, id uint64) {
			defer wg.Done()
			errs[i] = c.StartNode(ctx, id)
		}(i, id)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// StartNode starts node id (which must not be running) and waits until it
// logs "serving".
func (c *Cluster) StartNode(ctx context.Context, id uint64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("cluster: no node %d", id)
	}
	n.mu.Lock()
	if n.proc != nil {
		n.mu.Unlock()
		return fmt.Errorf("cluster: node %d is already running", id)
	}
	n.starts++
	starts := n.starts
	cmd := exec.Command(c.cfg.Binary, c.Args(id)...)
	cmd.Dir = n.DataDir
	cmd.Env = append(os.Environ(), c.cfg.Env...)
	setProcAttr(cmd)
	p := &process{cmd: cmd, serving: make(chan struct{}), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("cluster: node %d stdout: %w", id, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		n.mu.Unlock()
		return fmt.Errorf("cluster: node %d stderr: %w", id, err)
	}
	c.appendLog(n, fmt.Sprintf("=== cluster: start #%d of node %d at %s: %s %s",
		starts, id, time.Now().UTC().Format(time.RFC3339Nano), c.cfg.Binary, strings.Join(cmd.Args[1:], " ")))
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		return fmt.Errorf("cluster: start node %d: %w", id, err)
	}
	n.proc = p
	n.mu.Unlock()

	var once sync.Once
	var readers sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		readers.Add(1)
		go func(r io.Reader) {
			defer readers.Done()
			sc := bufio.NewScanner(r)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				c.appendLog(n, line)
				if isServing(line) {
					once.Do(func() { close(p.serving) })
				}
			}
		}(r)
	}
	go func() {
		readers.Wait()
		p.err = cmd.Wait()
		c.appendLog(n, fmt.Sprintf("=== cluster: node %d exited: %v", id, describeExit(p.err)))
		n.mu.Lock()
		n.lastErr = p.err
		if n.proc == p {
			n.proc = nil
		}
		n.mu.Unlock()
		close(p.done)
	}()

	timer := time.NewTimer(c.cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-p.serving:
		return nil
	case <-p.done:
		return fmt.Errorf("cluster: node %d exited before serving: %s\n%s", id, describeExit(p.err), strings.Join(c.Tail(id, 20), "\n"))
	case <-timer.C:
		return fmt.Errorf("cluster: node %d did not log \"serving\" within %v\n%s", id, c.cfg.StartTimeout, strings.Join(c.Tail(id, 20), "\n"))
	case <-ctx.Done():
		return fmt.Errorf("cluster: waiting for node %d to serve: %w", id, ctx.Err())
	}
}

// isServing reports whether a log line is the node's "serving" line
// (JSON with @message "serving", or hclog text).
func isServing(line string) bool {
	if strings.HasPrefix(line, "{") {
		var entry struct {
			Message string `json:"@message"`
		}
		return json.Unmarshal([]byte(line), &entry) == nil && entry.Message == "serving"
	}
	return strings.Contains(line, "]: serving") || strings.Contains(line, ": serving:")
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (c *Cluster) appendLog(n *Node, line string) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	f, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return // logs are best effort; the test reports what it saw
	}
	_, _ = f.WriteString(line + "\n")
	_ = f.Close()
}

// Running reports whether node id has a live process.
func (c *Cluster) Running(id uint64) bool {
	n := c.Node(id)
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc != nil
}

// Pid returns node id's process id, or 0 when it is not running.
func (c *Cluster) Pid(id uint64) int {
	n := c.Node(id)
	if n == nil {
		return 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return 0
	}
	return n.proc.cmd.Process.Pid
}

// Kill sends SIGKILL to node id and waits until it is reaped.
func (c *Cluster) Kill(id uint64) error {
	return c.signal(context.Background(), id, syscall.SIGKILL)
}

// Stop sends SIGTERM to node id, waits until it exits, and reports an
// error unless it exited with status 0.
func (c *Cluster) Stop(ctx context.Context, id uint64) error {
	if err := c.signal(ctx, id, syscall.SIGTERM); err != nil {
		return err
	}
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lastErr != nil {
		return fmt.Errorf("cluster: node %d after SIGTERM: %w", id, n.lastErr)
	}
	return nil
}

func (c *Cluster) signal(ctx context.Context, id uint64, sig syscall.Signal) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("cluster: no node %d", id)
	}
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("cluster: node %d is not running", id)
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cluster: signal node %d: %w", id, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cluster: node %d did not exit after %v: %w", id, sig, ctx.Err())
	}
}

// Pause stops node id with SIGSTOP, as a long GC pause or a descheduled
// VM would: it keeps its connections and state and resumes where it was
// on Resume. SIGKILL (Kill, Close) still ends a paused node; SIGTERM
// (Stop) waits until it is resumed.
func (c *Cluster) Pause(id uint64) error {
	if err := c.send(id, syscall.SIGSTOP); err != nil {
		return err
	}
	// SIGSTOP takes effect asynchronously: wait until the kernel reports
	// the process stopped, so that nothing it does afterwards is mistaken
	// for work done while paused.
	n := c.Node(id)
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("cluster: node %d exited while being paused", id)
	}
	pid := p.cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if stopped(pid) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("cluster: node %d (pid %d) did not stop within 5s of SIGSTOP", id, pid)
}

// stopped reports whether process pid is stopped (state T in /proc).
func stopped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't')
}

// Resume continues node id after Pause (SIGCONT).
func (c *Cluster) Resume(id uint64) error { return c.send(id, syscall.SIGCONT) }

// send delivers sig to node id without waiting for anything.
func (c *Cluster) send(id uint64, sig syscall.Signal) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("cluster: no node %d", id)
	}
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil {
		return fmt.Errorf("cluster: node %d is not running", id)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("cluster: signal %v to node %d: %w", sig, id, err)
	}
	return nil
}

// Wipe deletes node id's data directory, as a lost or replaced disk
// would, and leaves it empty; the node must not be running. Its next
// start (StartNode) finds no data.
func (c *Cluster) Wipe(id uint64) error {
	n := c.Node(id)
	if n == nil {
		return fmt.Errorf("cluster: no node %d", id)
	}
	if c.Running(id) {
		return fmt.Errorf("cluster: node %d is running; kill or stop it before wiping its disk", id)
	}
	if err := os.RemoveAll(n.DataDir); err != nil {
		return fmt.Errorf("cluster: wipe node %d: %w", id, err)
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return fmt.Errorf("cluster: wipe node %d: %w", id, err)
	}
	return nil
}

// Restart starts node id again (after Kill or Stop) with the same port and
// data directory, and waits until it serves.
func (c *Cluster) Restart(ctx context.Context, id uint64) error {
	return c.StartNode(ctx, id)
}

// Starts returns how many times node id was started.
func (c *Cluster) Starts(id uint64) int {
	n := c.Node(id)
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.starts
}

// Log returns node id's whole log file.
func (c *Cluster) Log(id uint64) string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	b, err := os.ReadFile(c.Node(id).LogPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// Tail returns the last n lines of node id's log.
func (c *Cluster) Tail(id uint64, n int) []string {
	lines := strings.Split(strings.TrimRight(c.Log(id), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// Problems returns the lines of node id's log that show the Go runtime
// reporting a bug: a data race (with a -race build), a panic or a fatal
// error.
func (c *Cluster) Problems(id uint64) []string {
	var out []string
	for _, line := range strings.Split(c.Log(id), "\n") {
		for _, p := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// Close kills every running node and closes the mesh. It is safe to call
// more than once.
func (c *Cluster) Close() error {
	var errs []error
	for _, id := range c.IDs() {
		if c.Running(id) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := c.signal(ctx, id, syscall.SIGKILL); err != nil {
				errs = append(errs, err)
			}
			cancel()
		}
	}
	if c.mesh != nil {
		if err := c.mesh.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
