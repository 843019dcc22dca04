package cluster

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill the node if the test process dies, so
// no raftnode outlives a crashed or timed-out test binary.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
