package nodesim

import (
	"time"

	"github.com/capraft/capraft/raftnode/driver"
)

// Clock is a virtual driver.Clock that only the simulator moves
// (AdvanceTo). Timers fire in the order of their deadlines, ties in the
// order they were armed; a timer's channel holds one value and a ticker
// drops ticks its reader missed, as the time package's do; AfterFunc
// calls its function on the goroutine that advances the clock. Not safe
// for concurrent use: a simulation is single-threaded.
type Clock struct {
	now    time.Time
	seq    uint64
	timers []*simTimer // armed, in no particular order
}

// NewClock returns a clock that reads start.
func NewClock(start time.Time) *Clock { return &Clock{now: start} }

var _ driver.Clock = (*Clock)(nil)

type simTimer struct {
	c      *Clock
	when   time.Time
	seq    uint64 // arming order, to break ties
	period time.Duration
	ch     chan time.Time
	fn     func()
	armed  bool
}

// Now returns the virtual time.
func (c *Clock) Now() time.Time { return c.now }

// NewTimer returns a timer firing d from now.
func (c *Clock) NewTimer(d time.Duration) driver.Timer {
	t := &simTimer{c: c, ch: make(chan time.Time, 1)}
	t.arm(d)
	return t
}

// NewTicker returns a ticker firing every d.
func (c *Clock) NewTicker(d time.Duration) driver.Ticker {
	if d <= 0 {
		panic("nodesim: non-positive ticker period")
	}
	t := &simTimer{c: c, ch: make(chan time.Time, 1), period: d}
	t.arm(d)
	return simTicker{t}
}

// simTicker is a simTimer that re-arms itself.
type simTicker struct{ *simTimer }

// Stop turns the ticker off.
func (t simTicker) Stop() { t.simTimer.Stop() }

// AfterFunc calls f once d has passed (during AdvanceTo).
func (c *Clock) AfterFunc(d time.Duration, f func()) driver.Timer {
	t := &simTimer{c: c, fn: f}
	t.arm(d)
	return t
}

// Next returns when the next timer fires; ok is false if none is armed.
func (c *Clock) Next() (next time.Time, ok bool) {
	for _, t := range c.timers {
		if !ok || t.when.Before(next) {
			next, ok = t.when, true
		}
	}
	return next, ok
}

// AdvanceTo moves the clock to to (never backwards), firing every timer
// due by then in order, each at its own deadline.
func (c *Clock) AdvanceTo(to time.Time) {
	for range 1 << 20 { // bounded: a ticker re-arms at most once per period
		t := c.due(to)
		if t == nil {
			break
		}
		c.now = t.when
		t.fire()
	}
	if to.After(c.now) {
		c.now = to
	}
}

// due returns the first timer due by to, or nil.
func (c *Clock) due(to time.Time) *simTimer {
	var first *simTimer
	for _, t := range c.timers {
		if t.when.After(to) {
			continue
		}
		if first == nil || t.when.Before(first.when) || (t.when.Equal(first.when) && t.seq < first.seq) {
			first = t
		}
	}
	return first
}

func (t *simTimer) fire() {
	if t.period > 0 {
		t.when = t.when.Add(t.period)
	} else {
		t.disarm()
	}
	if t.fn != nil {
		t.fn()
		return
	}
	select {
	case t.ch <- t.c.now:
	default: // a value is waiting already: like the time package, drop this one
	}
}

func (t *simTimer) arm(d time.Duration) {
	t.c.seq++
	t.seq = t.c.seq
	t.when = t.c.now.Add(max(d, 0))
	if !t.armed {
		t.armed = true
		t.c.timers = append(t.c.timers, t)
	}
}

func (t *simTimer) disarm() bool {
	if !t.armed {
		return false
	}
	t.armed = false
	for i, o := range t.c.timers {
		if o == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			break
		}
	}
	return true
}

// C returns the timer's channel (nil for AfterFunc's).
func (t *simTimer) C() <-chan time.Time { return t.ch }

// Stop disarms the timer and drops a value waiting in its channel (as
// the time package does since Go 1.23).
func (t *simTimer) Stop() bool {
	was := t.disarm()
	t.drain()
	return was
}

// Reset re-arms the timer to fire d from now.
func (t *simTimer) Reset(d time.Duration) bool {
	was := t.armed
	t.drain()
	t.arm(d)
	return was
}

func (t *simTimer) drain() {
	if t.ch == nil {
		return
	}
	select {
	case <-t.ch:
	default:
	}
}
