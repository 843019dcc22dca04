package kv

import (
	"math/rand"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/statemachine"
	"github.com/capraft/capraft/raftnode/statemachine/statemachinetest"
)

// TestMachineKeepsTheStateMachineContract runs the driver's contract
// (statemachinetest) against the store: random sessions, writes, token
// keys and revocations under small limits, so sessions expire and are
// evicted and results are forgotten along the way.
func TestMachineKeepsTheStateMachineContract(t *testing.T) {
	cfg := Config{SessionTTL: 10 * time.Second, MaxSessions: 3, MaxSavedResults: 4, MaxKeySize: 8, MaxValueSize: 32, MaxRangeLimit: 3}
	statemachinetest.Run(t, statemachinetest.Harness{
		New: func() statemachine.Machine { return New(cfg).Machine() },
		NewCommands: func(seed uint64) func(index uint64) []byte {
			g := newGen(rand.New(rand.NewSource(int64(seed))))
			return func(index uint64) []byte {
				c := g.next()
				if c.Kind == CmdOpenSession {
					g.sessions = append(g.sessions, index)
				}
				return enc(c)
			}
		},
		Seed: uint64(testSeed(t)),
	})
}
