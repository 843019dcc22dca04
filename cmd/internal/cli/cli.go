// Package cli holds what the raftnode and raftctl commands share: the build
// version and logger construction from command-line flags.
package cli

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
)

// version is set at link time: -ldflags "-X github.com/capraft/capraft/cmd/internal/cli.version=v1.2.3".
var version = ""

// Version returns the build version: the link-time value, else the module
// version recorded by the Go toolchain, else "dev".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// LogLevels lists the accepted --log-level values.
const LogLevels = "trace, debug, info, warn, error"

// NewLogger returns the root logger for a command, writing to w.
func NewLogger(name, level string, json bool, w io.Writer) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("unknown log level %q: use one of %s", level, LogLevels)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      lvl,
		JSONFormat: json,
		Output:     w,
		// Colour only confuses log collectors; keep output plain.
		Color: hclog.ColorOff,
	}), nil
}
