package driver

import "time"

// Clock is the driver's only source of time: the loop's ticker and
// commit-announcement timer, the request timers, the read index
// deadlines, the delayed removal of a peer (farewell) and the rate limits
// of its warnings all read it. Production uses the real clock
// (Config.Clock nil); a simulator passes a virtual one that it advances
// itself, so a run replays from its seed.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a timer that sends the time on its channel once d
	// has passed.
	NewTimer(d time.Duration) Timer
	// NewTicker returns a ticker that sends the time on its channel every
	// d, dropping ticks a slow reader misses (as time.Ticker does).
	NewTicker(d time.Duration) Ticker
	// AfterFunc calls f once d has passed, on a goroutine of its own (the
	// real clock) or on the goroutine that advances a virtual clock: f
	// must not block.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a Clock's one-shot timer (see time.Timer).
type Timer interface {
	// C is the channel the time is sent on (nil for AfterFunc's).
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
	// Reset makes the timer fire d from now; it reports whether it was
	// active.
	Reset(d time.Duration) bool
}

// Ticker is a Clock's periodic ticker (see time.Ticker).
type Ticker interface {
	// C is the channel the ticks are sent on.
	C() <-chan time.Time
	// Stop turns the ticker off.
	Stop()
}

// RealClock is the wall clock: the time package.
type RealClock struct{}

// Now returns time.Now().
func (RealClock) Now() time.Time { return time.Now() }

// NewTimer returns a time.Timer.
func (RealClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker returns a time.Ticker.
func (RealClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// AfterFunc is time.AfterFunc.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time        { return t.t.C }
func (t realTimer) Stop() bool                 { return t.t.Stop() }
func (t realTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }
