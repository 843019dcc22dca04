//go:build race

package storage

// raceEnabled trims the single-goroutine randomized tests under -race: the
// detector slows them ~5x and finds nothing there; the concurrent tests
// (group commit, readers during compaction) keep their full size.
const raceEnabled = true
