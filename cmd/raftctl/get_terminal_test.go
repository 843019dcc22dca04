//go:build linux

package main_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// openPTY returns a new pseudo-terminal: its master side, and the
// terminal a process writes to.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatalf("unlock pseudo-terminal: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatalf("pseudo-terminal number: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// getOnTerminal runs raftctl get key with its stdout on a terminal and
// returns what the terminal received (newlines as \n).
func getOnTerminal(t *testing.T, ep, key string) string {
	t.Helper()
	master, tty := openPTY(t)
	_, ctlPath := binaries(t)
	cmd := exec.Command(ctlPath, "--endpoints", ep, "get", key)
	cmd.Stdout = tty
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err := cmd.Run()
	tty.Close()
	if err != nil {
		t.Fatalf("get %q on a terminal: %v, stderr %q", key, err, errOut.String())
	}
	// Once the terminal is closed, the master reads what was written and
	// then fails with EIO.
	out, _ := io.ReadAll(master)
	return strings.ReplaceAll(string(out), "\r\n", "\n")
}

// On a terminal, get shows a value that could drive the terminal
// Go-quoted, and text (tabs and newlines included) as it is.
func TestGetEscapesControlCharactersOnlyOnATerminal(t *testing.T) {
	node := startNode(t, "--listen", "127.0.0.1:0")
	ep := node.addr
	put(t, ep, "evil", "\x1b]0;pwned\a\x1b[2J")
	put(t, ep, "text", "line 1\n\tline 2 é")
	put(t, ep, "bytes", "ok\xff")

	if got, want := getOnTerminal(t, ep, "evil"), `"\x1b]0;pwned\a\x1b[2J"`+"\n"; got != want {
		t.Errorf("terminal got %q, want %q", got, want)
	}
	if got, want := getOnTerminal(t, ep, "text"), "line 1\n\tline 2 é\n"; got != want {
		t.Errorf("terminal got %q, want %q", got, want)
	}
	if got, want := getOnTerminal(t, ep, "bytes"), `"ok\xff"`+"\n"; got != want {
		t.Errorf("terminal got %q, want %q", got, want)
	}
	// Piped, the same value comes out exactly as stored.
	if out := mustCtl(t, ep, "get", "evil"); out != "\x1b]0;pwned\a\x1b[2J\n" {
		t.Errorf("piped get: %q", out)
	}
}
