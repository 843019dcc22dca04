package kv

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/statemachine"
)

// benchKey writes a 16-byte key for n.
func benchKey(dst []byte, n uint64) []byte {
	dst = append(dst[:0], "user/key/"...)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return append(dst, b[1:]...)
}

// benchApply applies b.N puts, opsPerEntry per entry, keys from keyOf;
// encoding happens outside the timer, decoding and applying inside. With
// machineBatch > 0 the entries go through Machine.Apply, that many per
// batch, as the driver applies them.
func benchApply(b *testing.B, opsPerEntry int, keyOf func(i uint64) uint64, machineBatch int) {
	s := New(Config{})
	s.Apply(1, enc(Command{Kind: CmdOpenSession}))
	value := bytes.Repeat([]byte("v"), 32)
	const chunk = 4096
	entries := make([][]byte, 0, chunk)
	var index, seq uint64 = 1, 0
	ops := make([]WriteOp, opsPerEntry)
	keys := make([][]byte, opsPerEntry)
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	for done := 0; done < b.N; {
		b.StopTimer()
		entries = entries[:0]
		for len(entries) < chunk && done+len(entries)*opsPerEntry < b.N {
			c := Command{Kind: CmdBatch, Session: 1, AckedBelow: seq + 1, Time: int64(index)}
			for i := range ops {
				seq++
				keys[i] = benchKey(keys[i], keyOf(seq))
				ops[i] = WriteOp{Seq: seq, Type: OpPut, Key: keys[i], Value: value}
			}
			c.Ops = ops
			entries = append(entries, c.AppendBinary(nil))
		}
		b.StartTimer()
		cpu0 := processCPU()
		if machineBatch > 0 {
			index = applyMachine(b, s.Machine(), index, entries, machineBatch)
		} else {
			for _, e := range entries {
				index++
				a := s.Apply(index, e)
				if a.Err != nil || a.Results[0].Code != OK {
					b.Fatalf("apply: %v %+v", a.Err, a.Results)
				}
			}
		}
		cpu += processCPU() - cpu0
		done += len(entries) * opsPerEntry
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
	if cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/put")
	}
}

// applyMachine applies entries at the indexes after index through m,
// batch entries per call, and returns the last index.
func applyMachine(b *testing.B, m Machine, index uint64, entries [][]byte, batch int) uint64 {
	ents := make([]statemachine.Entry, 0, batch)
	for len(entries) > 0 {
		ents = ents[:0]
		for _, e := range entries[:min(batch, len(entries))] {
			index++
			ents = append(ents, statemachine.Entry{Index: index, Term: 1, Data: e})
		}
		entries = entries[len(ents):]
		res, err := m.Apply(ents)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if a := r.(*Applied); a.Err != nil || a.Results[0].Code != OK {
				b.Fatalf("apply: %v %+v", a.Err, a.Results)
			}
		}
	}
	return index
}

// BenchmarkApplyPut: one Put of a new 16-byte key (32-byte value) per
// entry, through Apply (decode included). ns/op is per put. The machine-*
// runs apply the same entries through Machine.Apply in batches of 1 and
// 16, as the driver does.
func BenchmarkApplyPut(b *testing.B) {
	b.Run("new-keys", func(b *testing.B) { benchApply(b, 1, func(i uint64) uint64 { return i }, 0) })
	b.Run("overwrite-100k", func(b *testing.B) { benchApply(b, 1, func(i uint64) uint64 { return (i * 7919) % 100_000 }, 0) })
	b.Run("batch64-new-keys", func(b *testing.B) { benchApply(b, 64, func(i uint64) uint64 { return i }, 0) })
	b.Run("machine1-new-keys", func(b *testing.B) { benchApply(b, 1, func(i uint64) uint64 { return i }, 1) })
	b.Run("machine16-new-keys", func(b *testing.B) { benchApply(b, 1, func(i uint64) uint64 { return i }, 16) })
}

// BenchmarkDecode decodes a one-put and a 64-put entry.
func BenchmarkDecode(b *testing.B) {
	for _, n := range []int{1, 64} {
		c := Command{Kind: CmdBatch, Session: 1, Time: 1 << 60}
		for i := range n {
			c.Ops = append(c.Ops, WriteOp{Seq: uint64(i + 1), Type: OpPut, Key: benchKey(nil, uint64(i)), Value: make([]byte, 32)})
		}
		data := enc(c)
		b.Run(map[int]string{1: "1op", 64: "64ops"}[n], func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			var dst Command
			for b.Loop() {
				if err := decodeCommand(&dst, data, dst.Ops); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(map[int]string{1: "1op", 64: "64ops"}[n]+"-DecodeCommand", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeCommand(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// storeWithKeys returns a store holding n keys with 32-byte values.
func storeWithKeys(b *testing.B, n int) *Store {
	s := New(Config{})
	s.Apply(1, enc(Command{Kind: CmdOpenSession}))
	value := make([]byte, 32)
	ops := make([]WriteOp, 0, 256)
	var seq uint64
	index := uint64(1)
	var buf []byte
	for seq < uint64(n) {
		acked := seq + 1
		ops = ops[:0]
		for len(ops) < cap(ops) && seq < uint64(n) {
			seq++
			ops = append(ops, WriteOp{Seq: seq, Type: OpPut, Key: benchKey(nil, seq), Value: value})
		}
		c := Command{Kind: CmdBatch, Session: 1, AckedBelow: acked, Ops: ops}
		buf = c.AppendBinary(buf[:0])
		index++
		a := s.Apply(index, buf)
		if a.Err != nil {
			b.Fatal(a.Err)
		}
		for _, r := range a.Results {
			if r.Code != OK {
				b.Fatalf("put: %+v", r)
			}
		}
	}
	if s.Len() != n {
		b.Fatalf("%d keys, want %d", s.Len(), n)
	}
	return s
}

type countWriter int64

func (w *countWriter) Write(p []byte) (int, error) { *w += countWriter(len(p)); return len(p), nil }

// BenchmarkSnapshot: 1M keys (16-byte keys, 32-byte values).
func BenchmarkSnapshot(b *testing.B) {
	s := storeWithKeys(b, 1_000_000)
	b.Run("Snapshot", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Snapshot()
		}
	})
	b.Run("WriteTo", func(b *testing.B) {
		var w countWriter
		for b.Loop() {
			w = 0
			if _, err := s.Snapshot().WriteTo(&w); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(w))
	})
	var buf bytes.Buffer
	if _, err := s.Snapshot().WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	b.Run("Restore", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		r := New(Config{})
		for b.Loop() {
			if err := r.Restore(bytes.NewReader(buf.Bytes())); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Verify", func(b *testing.B) {
		b.SetBytes(int64(buf.Len()))
		b.ReportAllocs()
		m := New(Config{}).Machine()
		for b.Loop() {
			if err := m.Verify(bytes.NewReader(buf.Bytes()), s.AppliedIndex()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
