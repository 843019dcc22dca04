// Package faultproxy is a loopback TCP proxy for injecting network faults
// between real processes in tests.
//
// A Link forwards every connection accepted on its own address to one
// target address, in both directions. It can be blocked (a partition),
// delayed (a slow link) and made to reset its connections. A Mesh holds
// one Link per directed pair of nodes, so that node i reaches node j
// through Link(i, j): partitioning two groups of nodes is blocking the
// links between them in both directions.
//
// A blocked link either refuses (existing connections are closed, new ones
// are accepted and closed at once: the peer sees resets) or black-holes
// (connections stay open but nothing is forwarded any more, as when a
// network drops packets: the peer sees silence and has to time out). A
// black-holed connection has lost bytes in the middle of its stream, so
// Unblock closes it; connections made after Unblock are forwarded again.
package faultproxy

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"sync"
	"time"
)

// Mode says how a blocked Link treats traffic.
type Mode int

const (
	// Refuse closes every connection and accepts new ones only to close
	// them at once.
	Refuse Mode = iota + 1
	// Blackhole keeps connections open but forwards nothing in either
	// direction, and does not reach the target for new connections.
	Blackhole
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Refuse:
		return "refuse"
	case Blackhole:
		return "blackhole"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// Link is one directed TCP proxy: connections accepted on Addr are
// forwarded to the target. Its methods are safe for concurrent use.
type Link struct {
	target string
	ln     net.Listener
	dialTO time.Duration

	mu      sync.Mutex
	blocked Mode // 0: forwarding
	delay   time.Duration
	jitter  time.Duration
	rng     *rand.Rand
	conns   map[*pair]struct{}
	closed  bool
	stats   Stats
	wg      sync.WaitGroup
}

// Stats counts what a Link did.
type Stats struct {
	Accepted  int   // connections accepted
	Forwarded int   // connections forwarded to the target
	Refused   int   // connections closed at once because the link was blocked
	Bytes     int64 // bytes forwarded, both directions
	Dropped   int64 // bytes discarded while black-holed
}

// pair is one proxied connection: the accepted side and the target side.
type pair struct {
	client net.Conn
	server net.Conn // nil when accepted while black-holed
	holed  bool     // bytes were discarded: close on Unblock
}

func (p *pair) close() {
	p.client.Close()
	if p.server != nil {
		p.server.Close()
	}
}

// Listen starts a Link on a free 127.0.0.1 port, forwarding to target.
// seed drives the delay jitter.
func Listen(target string, seed int64) (*Link, error) {
	return ListenAddr("127.0.0.1:0", target, seed)
}

// ListenAddr is Listen on a given address.
func ListenAddr(addr, target string, seed int64) (*Link, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen on %s for %s: %w", addr, target, err)
	}
	l := &Link{
		target: target,
		ln:     ln,
		dialTO: 2 * time.Second,
		rng:    rand.New(rand.NewSource(seed)),
		conns:  make(map[*pair]struct{}),
	}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr is the address to dial to reach the target through the link.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Target is the address the link forwards to.
func (l *Link) Target() string { return l.target }

// Block stops forwarding in the given mode (Refuse or Blackhole).
func (l *Link) Block(mode Mode) {
	if mode != Refuse && mode != Blackhole {
		mode = Refuse
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.blocked = mode
	for p := range l.conns {
		if mode == Refuse {
			p.close()
		} else {
			p.holed = true
		}
	}
}

// Unblock forwards again. Connections that lost bytes while black-holed
// are closed, so their ends reconnect with a clean stream.
func (l *Link) Unblock() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.blocked = 0
	for p := range l.conns {
		if p.holed {
			p.close()
		}
	}
}

// Blocked reports the mode the link is blocked in, or 0.
func (l *Link) Blocked() Mode {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blocked
}

// SetDelay makes each chunk of bytes arrive delay plus up to jitter later
// than it was read (order is kept). Zero for both turns it off.
func (l *Link) SetDelay(delay, jitter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay, l.jitter = delay, jitter
}

// Reset closes every current connection (as a crashed router would) and
// keeps forwarding new ones.
func (l *Link) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for p := range l.conns {
		p.close()
	}
}

// Stats returns the link's counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

// Conns returns how many proxied connections are open.
func (l *Link) Conns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Close stops the link, closes every connection and waits for its
// goroutines.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	err := l.ln.Close()
	for p := range l.conns {
		p.close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultproxy: close %s: %w", l.Addr(), err)
	}
	return nil
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		l.stats.Accepted++
		mode, closed := l.blocked, l.closed
		if closed || mode == Refuse {
			l.stats.Refused++
			l.mu.Unlock()
			c.Close()
			continue
		}
		p := &pair{client: c}
		if mode == Blackhole {
			// Hold the connection open without reaching the target;
			// whatever it sends is discarded.
			p.holed = true
			l.conns[p] = struct{}{}
			l.wg.Add(1)
			l.mu.Unlock()
			go l.drain(p)
			continue
		}
		l.mu.Unlock()
		s, err := net.DialTimeout("tcp", l.target, l.dialTO)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.closed || l.blocked == Refuse {
			l.stats.Refused++
			l.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		p.server = s
		p.holed = l.blocked == Blackhole
		l.stats.Forwarded++
		l.conns[p] = struct{}{}
		l.wg.Add(2)
		l.mu.Unlock()
		go l.pipe(p, s, c)
		go l.pipe(p, c, s)
	}
}

// drain reads and discards what a black-holed connection without a target
// sends, until it is closed.
func (l *Link) drain(p *pair) {
	defer l.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := p.client.Read(buf)
		l.mu.Lock()
		l.stats.Dropped += int64(n)
		l.mu.Unlock()
		if err != nil {
			break
		}
	}
	l.forget(p)
}

func (l *Link) forget(p *pair) {
	l.mu.Lock()
	delete(l.conns, p)
	l.mu.Unlock()
	p.close()
}

// chunk is data read at one moment, due to be written at a later one.
type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, honouring the delay and the black hole.
func (l *Link) pipe(p *pair, dst, src net.Conn) {
	defer l.wg.Done()
	queue := make(chan chunk, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d) // the simulated link latency itself, not synchronisation
			}
			if _, err := dst.Write(c.data); err != nil {
				src.Close()
				for range queue {
				}
				return
			}
		}
	}()
	var last time.Time
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l.mu.Lock()
			holed := p.holed
			delay := l.delay
			if l.jitter > 0 {
				delay += time.Duration(l.rng.Int63n(int64(l.jitter) + 1))
			}
			if holed {
				l.stats.Dropped += int64(n)
			} else {
				l.stats.Bytes += int64(n)
			}
			l.mu.Unlock()
			if !holed {
				due := time.Now().Add(delay)
				if due.Before(last) {
					due = last // keep the stream's order
				}
				last = due
				queue <- chunk{data: append([]byte(nil), buf[:n]...), due: due}
			}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
	// One direction ended: end the whole proxied connection, as a reset
	// or close of either side would on a real network.
	l.forget(p)
}
