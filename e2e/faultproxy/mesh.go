package faultproxy

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Mesh is one Link per directed pair of distinct nodes: node from reaches
// node to at Addr(from, to). Its methods are safe for concurrent use.
type Mesh struct {
	mu    sync.Mutex
	mode  Mode
	ids   []uint64
	links map[[2]uint64]*Link
}

// NewMesh starts a Link for every ordered pair of distinct ids in targets
// (id -> the address that node serves on). seed drives the links' jitter.
// Blocked links black-hole by default; see SetMode.
func NewMesh(targets map[uint64]string, seed int64) (*Mesh, error) {
	m := &Mesh{mode: Blackhole, links: make(map[[2]uint64]*Link)}
	for id := range targets {
		m.ids = append(m.ids, id)
	}
	sort.Slice(m.ids, func(i, j int) bool { return m.ids[i] < m.ids[j] })
	for _, from := range m.ids {
		for _, to := range m.ids {
			if from == to {
				continue
			}
			seed++
			l, err := Listen(targets[to], seed)
			if err != nil {
				_ = m.Close()
				return nil, fmt.Errorf("faultproxy: link %d->%d: %w", from, to, err)
			}
			m.links[[2]uint64{from, to}] = l
		}
	}
	return m, nil
}

// IDs returns the mesh's node ids in increasing order.
func (m *Mesh) IDs() []uint64 { return append([]uint64(nil), m.ids...) }

// Link returns the link from -> to, or nil if there is none.
func (m *Mesh) Link(from, to uint64) *Link { return m.links[[2]uint64{from, to}] }

// Addr is the address node from dials to reach node to.
func (m *Mesh) Addr(from, to uint64) string {
	if l := m.Link(from, to); l != nil {
		return l.Addr()
	}
	return ""
}

// SetMode chooses how Partition and Isolate block links from now on.
func (m *Mesh) SetMode(mode Mode) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mode = mode
}

// Partition blocks every link between a node of a and a node of b, in
// both directions. Links inside each group are left as they are.
func (m *Mesh) Partition(a, b []uint64) {
	m.mu.Lock()
	mode := m.mode
	m.mu.Unlock()
	for _, x := range a {
		for _, y := range b {
			if l := m.Link(x, y); l != nil {
				l.Block(mode)
			}
			if l := m.Link(y, x); l != nil {
				l.Block(mode)
			}
		}
	}
}

// Isolate partitions id from every other node.
func (m *Mesh) Isolate(id uint64) {
	var rest []uint64
	for _, x := range m.ids {
		if x != id {
			rest = append(rest, x)
		}
	}
	m.Partition([]uint64{id}, rest)
}

// Heal unblocks every link.
func (m *Mesh) Heal() {
	for _, l := range m.links {
		l.Unblock()
	}
}

// SetDelay sets the delay and jitter of every link.
func (m *Mesh) SetDelay(delay, jitter time.Duration) {
	for _, l := range m.links {
		l.SetDelay(delay, jitter)
	}
}

// Blocked lists the blocked links as "from->to" strings, sorted.
func (m *Mesh) Blocked() []string {
	var out []string
	for k, l := range m.links {
		if l.Blocked() != 0 {
			out = append(out, fmt.Sprintf("%d->%d", k[0], k[1]))
		}
	}
	sort.Strings(out)
	return out
}

// Close closes every link.
func (m *Mesh) Close() error {
	var errs []error
	for _, l := range m.links {
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
