package rpctest

import (
	"bytes"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a loopback TCP proxy in front of one target address. Each
// direction of each proxied connection can be delayed by a fixed one-way
// latency, and the target-to-client direction can be held (buffered, not
// forwarded) until released, which makes it possible to prove that a
// client sent requests without waiting for any answer.
type Proxy struct {
	t      testing.TB
	target string
	ln     net.Listener
	delay  time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	holding bool
	held    bytes.Buffer // target-to-client bytes held back while holding
	conns   []net.Conn
	wg      sync.WaitGroup
}

// NewProxy starts a proxy to target with the given one-way delay in each
// direction (0 for none). It is closed when the test ends.
func NewProxy(t testing.TB, target string, delay time.Duration) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{t: t, target: target, ln: ln, delay: delay}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Hold stops forwarding target-to-client bytes; they accumulate until
// Release.
func (p *Proxy) Hold() {
	p.mu.Lock()
	p.holding = true
	p.mu.Unlock()
}

// Held returns a copy of the target-to-client bytes held so far.
func (p *Proxy) Held() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.held.Bytes())
}

// Release forwards what was held and stops holding.
func (p *Proxy) Release() {
	p.mu.Lock()
	p.holding = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Close stops the proxy and closes every proxied connection.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.holding = false
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(server, client, false)
		go p.pipe(client, server, true)
	}
}

// chunk is data read at one moment, to be written delay later.
type chunk struct {
	data []byte
	at   time.Time
}

// pipe copies src to dst, applying the delay and, for the target-to-client
// direction, the hold.
func (p *Proxy) pipe(dst, src net.Conn, toClient bool) {
	defer p.wg.Done()
	queue := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			if d := time.Until(c.at.Add(p.delay)); d > 0 {
				time.Sleep(d) // simulated network latency
			}
			if toClient {
				p.waitWhileHolding()
			}
			if _, err := dst.Write(c.data); err != nil {
				src.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			data := bytes.Clone(buf[:n])
			if toClient {
				p.noteHeld(data)
			}
			queue <- chunk{data: data, at: time.Now()}
		}
		if err != nil {
			break
		}
	}
	close(queue)
	<-done
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// noteHeld records data as held if the proxy is holding.
func (p *Proxy) noteHeld(data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holding {
		p.held.Write(data)
	}
}

// waitWhileHolding blocks while the proxy holds (Close releases too).
func (p *Proxy) waitWhileHolding() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.holding {
		p.cond.Wait()
	}
}
