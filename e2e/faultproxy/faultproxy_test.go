package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer answers every line with "ID:line" and counts connections.
type echoServer struct {
	id    string
	ln    net.Listener
	conns atomic.Int32
	wg    sync.WaitGroup
	mu    sync.Mutex
	open  []net.Conn
}

func newEcho(t *testing.T, id string) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &echoServer{id: id, ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.mu.Lock()
			s.open = append(s.open, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, s.id+":"+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for _, c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *echoServer) addr() string { return s.ln.Addr().String() }

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends msg and returns the answer line, or an error if none
// arrives within wait.
func roundTrip(c net.Conn, msg string, wait time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(wait)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func newLink(t *testing.T, target string) *Link {
	t.Helper()
	l, err := Listen(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

func TestLinkForwardsBothWays(t *testing.T) {
	s := newEcho(t, "a")
	l := newLink(t, s.addr())
	c := dial(t, l.Addr())
	for _, msg := range []string{"one", "two"} {
		got, err := roundTrip(c, msg, 5*time.Second)
		if err != nil || got != "a:"+msg {
			t.Fatalf("round trip %q = %q, %v", msg, got, err)
		}
	}
	if st := l.Stats(); st.Forwarded != 1 || st.Bytes == 0 {
		t.Fatalf("stats %+v: want one forwarded connection and some bytes", st)
	}
}

func TestRefuseClosesConnectionsAndRefusesNewOnes(t *testing.T) {
	s := newEcho(t, "a")
	l := newLink(t, s.addr())
	old := dial(t, l.Addr())
	if _, err := roundTrip(old, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Block(Refuse)
	if _, err := roundTrip(old, "y", 5*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("old connection after Block(Refuse): err %v, want closed", err)
	}
	fresh := dial(t, l.Addr())
	if _, err := roundTrip(fresh, "z", 5*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("new connection while refused: err %v, want closed", err)
	}
	if got := s.conns.Load(); got != 1 {
		t.Fatalf("target saw %d connections, want 1", got)
	}
	l.Unblock()
	again := dial(t, l.Addr())
	if got, err := roundTrip(again, "w", 5*time.Second); err != nil || got != "a:w" {
		t.Fatalf("after Unblock: %q, %v", got, err)
	}
}

func TestBlackholeIsSilentAndUnblockResets(t *testing.T) {
	s := newEcho(t, "a")
	l := newLink(t, s.addr())
	old := dial(t, l.Addr())
	if _, err := roundTrip(old, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Block(Blackhole)
	// Nothing may come back; the only way to observe silence is to wait.
	if got, err := roundTrip(old, "y", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("old connection while black-holed: %q, %v; want a timeout", got, err)
	}
	fresh := dial(t, l.Addr())
	if got, err := roundTrip(fresh, "z", 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection while black-holed: %q, %v; want a timeout", got, err)
	}
	if got := s.conns.Load(); got != 1 {
		t.Fatalf("target saw %d connections, want 1 (black-holed ones never reach it)", got)
	}
	if st := l.Stats(); st.Dropped == 0 {
		t.Fatalf("stats %+v: want dropped bytes", st)
	}
	l.Unblock()
	for name, c := range map[string]net.Conn{"old": old, "fresh": fresh} {
		if _, err := roundTrip(c, "again", 5*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("%s black-holed connection after Unblock: err %v, want closed", name, err)
		}
	}
	c := dial(t, l.Addr())
	if got, err := roundTrip(c, "w", 5*time.Second); err != nil || got != "a:w" {
		t.Fatalf("after Unblock: %q, %v", got, err)
	}
}

func TestDelayAddsLatencyAndKeepsOrder(t *testing.T) {
	s := newEcho(t, "a")
	l := newLink(t, s.addr())
	const d = 40 * time.Millisecond
	l.SetDelay(d, 20*time.Millisecond)
	c := dial(t, l.Addr())
	start := time.Now()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := io.WriteString(c, string(rune('a'+i))+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if want := "a:" + string(rune('a'+i)) + "\n"; line != want {
			t.Fatalf("line %d = %q, want %q (order lost)", i, line, want)
		}
	}
	if el := time.Since(start); el < 2*d {
		t.Fatalf("round trip took %v, want at least %v", el, 2*d)
	}
}

func TestResetClosesButKeepsForwarding(t *testing.T) {
	s := newEcho(t, "a")
	l := newLink(t, s.addr())
	c := dial(t, l.Addr())
	if _, err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Reset()
	if _, err := roundTrip(c, "y", 5*time.Second); err == nil || isTimeout(err) {
		t.Fatalf("after Reset: err %v, want closed", err)
	}
	c2 := dial(t, l.Addr())
	if got, err := roundTrip(c2, "z", 5*time.Second); err != nil || got != "a:z" {
		t.Fatalf("new connection after Reset: %q, %v", got, err)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s := newEcho(t, "a")
	l, err := Listen(s.addr(), 1)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, l.Addr())
	if _, err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Block(Blackhole)
	c2 := dial(t, l.Addr())
	if _, err := io.WriteString(c2, "held\n"); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := l.Conns(); n != 0 {
		t.Fatalf("%d connections open after Close", n)
	}
	if _, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		t.Fatal("link still accepts after Close")
	}
}

func TestMeshPartitionAndHeal(t *testing.T) {
	targets := map[uint64]string{}
	for id, name := range map[uint64]string{1: "n1", 2: "n2", 3: "n3"} {
		targets[id] = newEcho(t, name).addr()
	}
	m, err := NewMesh(targets, 7)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	m.SetMode(Refuse) // refusals are observable without waiting out a timeout
	reach := func(from, to uint64) bool {
		c := dial(t, m.Addr(from, to))
		got, err := roundTrip(c, "hi", 5*time.Second)
		if err == nil && got != "n"+string(rune('0'+to))+":hi" {
			t.Fatalf("%d->%d reached %q", from, to, got)
		}
		return err == nil
	}
	for _, from := range m.IDs() {
		for _, to := range m.IDs() {
			if from != to && !reach(from, to) {
				t.Fatalf("%d->%d unreachable before any fault", from, to)
			}
		}
	}
	m.Isolate(1)
	want := []string{"1->2", "1->3", "2->1", "3->1"}
	if got := m.Blocked(); len(got) != len(want) {
		t.Fatalf("blocked %v, want %v", got, want)
	}
	for _, p := range [][2]uint64{{1, 2}, {2, 1}, {1, 3}, {3, 1}} {
		if reach(p[0], p[1]) {
			t.Fatalf("%d->%d reachable while 1 is isolated", p[0], p[1])
		}
	}
	if !reach(2, 3) || !reach(3, 2) {
		t.Fatal("2<->3 cut by isolating 1")
	}
	m.Heal()
	if got := m.Blocked(); len(got) != 0 {
		t.Fatalf("blocked after Heal: %v", got)
	}
	if !reach(1, 2) || !reach(3, 1) {
		t.Fatal("not healed")
	}
	if m.Addr(1, 1) != "" {
		t.Fatal("a node has no link to itself")
	}
}

func TestModeString(t *testing.T) {
	if Refuse.String() != "refuse" || Blackhole.String() != "blackhole" || Mode(9).String() != "Mode(9)" {
		t.Fatal("Mode.String")
	}

}
