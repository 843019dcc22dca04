//go:build unix

package kv

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system, all threads) used by the
// process so far; benchmarks report it per op, which stays meaningful on
// a loaded machine where wall time does not.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
