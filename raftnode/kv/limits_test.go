package kv

import (
	"bytes"
	"math"
	"testing"
)

// The largest command a request within the limits can become fits in
// MaxEntrySize, whatever the mix of keys and values.
func TestMaxEntrySizeBoundsTheLargestCommand(t *testing.T) {
	for _, cfg := range []Config{{}, {MaxBatchOps: 3, MaxKeySize: 5, MaxValueSize: 7, MaxBatchBytes: 1}} {
		lim := cfg.withDefaults()
		cmd := Command{Kind: CmdBatch, ID: math.MaxUint64, Time: math.MinInt64, Session: math.MaxUint64, AckedBelow: math.MaxUint64}
		budget := lim.MaxBatchBytes
		for range lim.MaxBatchOps {
			take := func(limit int) []byte {
				n := min(limit, budget)
				budget -= n
				return bytes.Repeat([]byte{'x'}, n)
			}
			cmd.Ops = append(cmd.Ops, WriteOp{
				Seq: math.MaxUint64, Type: OpCAS, Compare: CompareValue, CompareRevision: math.MaxUint64,
				DeleteOnSuccess: true, Key: take(lim.MaxKeySize), Value: take(lim.MaxValueSize), CompareValue: take(lim.MaxValueSize),
			})
		}
		if got, limit := len(cmd.AppendBinary(nil)), cfg.MaxEntrySize(); got > limit {
			t.Errorf("config %+v: a command within the limits encodes to %d bytes, over MaxEntrySize %d", cfg, got, limit)
		}
	}
}

// MaxBatchBytes always admits one operation of the largest allowed key
// and values, so a valid write is never refused for its batch alone.
func TestBatchLimitHoldsTheLargestOperation(t *testing.T) {
	lim := Config{MaxBatchBytes: 1, MaxKeySize: 100, MaxValueSize: 1000}.withDefaults()
	if want := 100 + 2*1000; lim.MaxBatchBytes != want {
		t.Fatalf("MaxBatchBytes = %d, want it raised to %d", lim.MaxBatchBytes, want)
	}
	def := Config{}.withDefaults()
	if def.MaxBatchBytes < def.MaxKeySize+2*def.MaxValueSize {
		t.Fatalf("default MaxBatchBytes %d below one maximal CAS", def.MaxBatchBytes)
	}
}

// With the default limits, the largest entry an accepted request becomes
// fits the smallest frame raftnode allows (--max-message-size 4 MiB) less
// the 64 KiB its transport keeps for the envelope.
func TestDefaultLargestEntryFitsTheSmallestFrame(t *testing.T) {
	const smallestFrame, envelope = 4 << 20, 64 << 10
	if got := (Config{}).MaxEntrySize(); got > smallestFrame-envelope {
		t.Fatalf("MaxEntrySize %d does not fit a %d-byte frame with %d bytes of envelope", got, smallestFrame, envelope)
	}
}
