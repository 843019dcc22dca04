package cluster

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// Launch is New and Start for a test: the cluster's directory is a temp
// dir (kept, and its path logged, when $E2E_KEEP is set); when the test
// ends every process is killed, a data race, panic or fatal error in any
// node's log fails the test, and if the test failed the last 50 lines of
// each node's log are printed.
func Launch(t testing.TB, cfg Config) *Cluster {
	t.Helper()
	if cfg.Dir == "" {
		if os.Getenv("E2E_KEEP") != "" {
			dir, err := os.MkdirTemp("", "capraft-e2e-")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Dir = dir
			t.Logf("cluster directory (kept): %s", dir)
		} else {
			cfg.Dir = t.TempDir()
		}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
		for _, id := range c.IDs() {
			if p := c.Problems(id); len(p) > 0 {
				t.Errorf("node %d's log reports %d runtime problem(s), first: %s (log: %s)", id, len(p), p[0], c.Node(id).LogPath)
			}
		}
		if t.Failed() {
			c.DumpTails(t, tailLines)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

const tailLines = 50

// DumpTails logs the last n lines of every node's log to t.
func (c *Cluster) DumpTails(t testing.TB, n int) {
	t.Helper()
	for _, id := range c.IDs() {
		t.Logf("--- last %d lines of node %d (%s):\n%s", n, id, c.Node(id).LogPath, strings.Join(c.Tail(id, n), "\n"))
	}
}
