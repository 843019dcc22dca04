//go:build !linux

package cluster

import "os/exec"

// setProcAttr has nothing to add outside Linux: Close kills the nodes.
func setProcAttr(*exec.Cmd) {}
