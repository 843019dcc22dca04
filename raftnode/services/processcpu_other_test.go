//go:build !unix

package services

import "time"

// processCPU returns 0: not measured here.
func processCPU() time.Duration { return 0 }
