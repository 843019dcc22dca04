package tracker

import "testing"

func TestInflightsWindowFillsAndFrees(t *testing.T) {
	in := NewInflights(3, 0)
	for i := uint64(1); i <= 3; i++ {
		if in.Full() {
			t.Fatalf("full after %d", i-1)
		}
		in.Add(i*10, 1)
	}
	if !in.Full() {
		t.Fatal("window of 3 should be full")
	}
	in.FreeLE(20)
	if in.Count() != 1 || in.Full() {
		t.Fatalf("count=%d", in.Count())
	}
	in.Add(40, 1)
	in.Add(50, 1)
	in.FreeLE(45)
	if in.Count() != 1 {
		t.Fatalf("count=%d", in.Count())
	}
}

func TestInflightsByteLimit(t *testing.T) {
	in := NewInflights(100, 10)
	in.Add(1, 6)
	if in.Full() {
		t.Fatal("6 of 10 bytes is not full")
	}
	in.Add(2, 6)
	if !in.Full() {
		t.Fatal("12 of 10 bytes is full")
	}
	in.FreeLE(1)
	if in.Full() {
		t.Fatal("6 bytes left")
	}
}

func TestProgressIgnoresStaleRejections(t *testing.T) {
	p := &Progress{Match: 5, Next: 10, State: StateReplicate, Inflights: NewInflights(4, 0)}
	if p.MaybeDecrTo(4, 2) {
		t.Fatal("rejection at or below match is stale in replicate")
	}
	if !p.MaybeDecrTo(8, 7) || p.Next != 7 {
		t.Fatalf("next=%d", p.Next)
	}
	p = &Progress{Match: 0, Next: 10, State: StateProbe, Inflights: NewInflights(4, 0)}
	if p.MaybeDecrTo(5, 3) {
		t.Fatal("probe only honours rejection of Next-1")
	}
	if !p.MaybeDecrTo(9, 3) || p.Next != 3 {
		t.Fatalf("next=%d", p.Next)
	}
}
