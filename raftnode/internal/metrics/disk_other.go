//go:build !linux

package metrics

import "errors"

// diskSpace is not measured on this platform: the gauges are left out.
func diskSpace(string) (free, size uint64, err error) {
	return 0, 0, errors.New("disk space: not supported on this platform")
}
