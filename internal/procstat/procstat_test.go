package procstat

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestStatCPUIsUtimePlusStimeAfterTheLastParenthesis(t *testing.T) {
	// A command name holding ") (" and spaces must not shift the fields.
	line := "4242 (raft) node (x)) S 1 4242 4242 0 -1 4194560 2110 0 0 0 250 37 0 0 20 0 9 0 1000 1234567 890 18446744073709551615\n"
	d, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 287 * 10 * time.Millisecond; d != want {
		t.Fatalf("cpu %v, want %v (utime 250 + stime 37 ticks)", d, want)
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted a malformed line", bad)
		}
	}
}

func TestStatusMemoryReadsRSSAndPeakInBytes(t *testing.T) {
	status := "Name:\traftnode\nVmPeak:\t 2000000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n"
	m, err := parseStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 40960<<10 || m.Peak != 81234<<10 {
		t.Fatalf("got %+v, want RSS %d and peak %d bytes", m, 40960<<10, 81234<<10)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\nVmHWM:\t1 kB\n", "VmRSS:\t-1 kB\nVmHWM:\t1 kB\n", "VmRSS:\t1 kB\n"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted it", bad)
		}
	}
}

func TestOwnProcessHasCPUAndMemory(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	pid := os.Getpid()
	if _, err := CPU(pid); err != nil {
		t.Fatal(err)
	}
	m, err := ReadMemory(pid)
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.Peak < m.RSS {
		t.Fatalf("memory %+v: want 0 < RSS <= peak", m)
	}
}

func TestParsePids(t *testing.T) {
	pids, err := ParsePids(" 12, 34,,56 ")
	if err != nil || len(pids) != 3 || pids[0] != 12 || pids[1] != 34 || pids[2] != 56 {
		t.Fatalf("got %v, %v", pids, err)
	}
	for _, bad := range []string{"", ",", "12,x", "0", "-3"} {
		if _, err := ParsePids(bad); err == nil || !strings.Contains(err.Error(), "process id") {
			t.Errorf("ParsePids(%q): %v, want an error naming process ids", bad, err)
		}
	}
}
