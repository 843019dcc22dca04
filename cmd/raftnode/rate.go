package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// minSnapshotRate is the smallest capped --snapshot-rate: at 64 KiB/s a
// 1 GiB state already takes four and a half hours to reach a follower,
// which meanwhile cannot catch up; a slower cap is a typo, not a choice.
const minSnapshotRate = 64 << 10

// byteRate is the value of --snapshot-rate: bytes per second, written as
// a whole number with an optional KiB, MiB or GiB suffix (powers of
// 1024) and an optional "/s"; 0 (or "unlimited") means no cap.
type byteRate int64

// Set parses s (pflag.Value).
func (r *byteRate) Set(s string) error {
	v, err := parseByteRate(s)
	if err != nil {
		return err
	}
	*r = byteRate(v)
	return nil
}

// String formats the rate as Set reads it, in the largest unit that
// divides it (pflag.Value).
func (r *byteRate) String() string {
	v := int64(*r)
	if v == 0 {
		return "unlimited"
	}
	for _, u := range rateUnits {
		if v%u.size == 0 {
			return strconv.FormatInt(v/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(v, 10)
}

// Type names the value in the flag's help (pflag.Value).
func (*byteRate) Type() string { return "bytes/s" }

// config is the rate as raftnode.Config.SnapshotRate takes it, where a
// negative rate means no cap (and zero the default).
func (r byteRate) config() int64 {
	if r == 0 {
		return -1
	}
	return int64(r)
}

// rateUnits are the suffixes a rate may carry, largest first.
var rateUnits = []struct {
	name string
	size int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}

// parseByteRate reads a --snapshot-rate value.
func parseByteRate(s string) (int64, error) {
	const how = "give bytes per second as a whole number with an optional KiB, MiB or GiB suffix (e.g. 64MiB), or 0 or unlimited for no cap"
	in := strings.TrimSpace(s)
	if strings.EqualFold(in, "unlimited") {
		return 0, nil
	}
	num := strings.TrimSuffix(in, "/s")
	mult := int64(1)
	for _, u := range rateUnits {
		if len(num) >= len(u.name) && strings.EqualFold(num[len(num)-len(u.name):], u.name) {
			num, mult = strings.TrimSpace(num[:len(num)-len(u.name)]), u.size
			break
		}
	}
	if mult == 1 && (strings.HasSuffix(num, "B") || strings.HasSuffix(num, "b")) {
		num = num[:len(num)-1] // plain bytes
	}
	// The flag package quotes the value before this error.
	v, err := strconv.ParseUint(num, 10, 63)
	unit := strings.TrimSpace(strings.TrimLeft(num, "0123456789")) // what follows the number
	switch {
	case err != nil && unit != num && unit != "" && strings.ContainsRune("kKmMgGtT", rune(unit[0])):
		return 0, fmt.Errorf("units are powers of 1024, written KiB, MiB or GiB: %s", how)
	case err != nil:
		return 0, fmt.Errorf("not a rate: %s", how)
	case v > math.MaxInt64/uint64(mult):
		return 0, fmt.Errorf("too large: %s", how)
	}
	rate := int64(v) * mult
	if rate != 0 && rate < minSnapshotRate {
		return 0, errors.New("below 64KiB per second, at which a 1 GiB snapshot already takes hours to reach a follower: give at least 64KiB, or 0 or unlimited for no cap")
	}
	return rate, nil
}
