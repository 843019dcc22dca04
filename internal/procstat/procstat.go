// Package procstat reads the CPU time and memory of a running process from
// Linux's /proc, for benchmarks that report what the servers they load
// cost (raftctl bench --pids, bench/compare).
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat. The kernel
// reports them in USER_HZ, which is 100 on every architecture Linux
// supports today (it is part of the /proc ABI, unlike the kernel's HZ).
const userHZ = 100

// CPU returns the CPU time pid has used so far, user and system
// (utime + stime in /proc/<pid>/stat; children not included).
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	d, err := parseStat(b)
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", pid, err)
	}
	return d, nil
}

// parseStat reads utime + stime from the text of /proc/<pid>/stat.
func parseStat(b []byte) (time.Duration, error) {
	// The second field is the command name in parentheses, which may
	// itself hold spaces and parentheses: the fields that follow start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat line: no ')' after the command name")
	}
	// After the name: state(3) ppid(4) ... utime(14) stime(15), so utime
	// and stime are the 12th and 13th fields after it.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed stat line: %d fields after the command name, want at least 13", len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("malformed stat line: utime %q, stime %q", f[11], f[12])
	}
	return time.Duration(utime+stime) * (time.Second / userHZ), nil
}

// Memory is a process's resident memory.
type Memory struct {
	RSS  int64 // bytes resident now (VmRSS)
	Peak int64 // most bytes resident at once since it started (VmHWM)
}

// ReadMemory returns pid's resident memory from /proc/<pid>/status.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	m, err := parseStatus(b)
	if err != nil {
		return Memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	return m, nil
}

// parseStatus reads VmRSS and VmHWM ("VmRSS:   12345 kB") from the text
// of /proc/<pid>/status.
func parseStatus(b []byte) (Memory, error) {
	var m Memory
	var haveRSS, havePeak bool
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("malformed %s line %q", name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return Memory{}, fmt.Errorf("malformed %s line %q", name, line)
		}
		if name == "VmRSS" {
			m.RSS, haveRSS = kb<<10, true
		} else {
			m.Peak, havePeak = kb<<10, true
		}
	}
	if !haveRSS || !havePeak {
		// A zombie or kernel thread has no memory lines.
		return Memory{}, fmt.Errorf("no VmRSS and VmHWM lines (has the process exited?)")
	}
	return m, nil
}

// ParsePids reads a comma-separated list of process ids ("123,456").
func ParsePids(s string) ([]int, error) {
	var pids []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		pid, err := strconv.Atoi(part)
		if err != nil || pid <= 0 {
			return nil, fmt.Errorf("%q is not a process id (a positive integer)", part)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process id in %q", s)
	}
	return pids, nil
}

// CPUTotal returns the CPU time of every pid, in order, and their sum.
func CPUTotal(pids []int) (each []time.Duration, total time.Duration, err error) {
	each = make([]time.Duration, len(pids))
	for i, pid := range pids {
		d, err := CPU(pid)
		if err != nil {
			return nil, 0, err
		}
		each[i], total = d, total+d
	}
	return each, total, nil
}
