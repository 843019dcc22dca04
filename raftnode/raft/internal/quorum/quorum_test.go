package quorum

import "testing"

func TestMajorityCommittedIndexIsHeldByAMajority(t *testing.T) {
	cases := []struct {
		ids  []uint64
		acks MapAckIndexer
		want uint64
	}{
		{[]uint64{1}, MapAckIndexer{1: 5}, 5},
		{[]uint64{1, 2, 3}, MapAckIndexer{1: 5, 2: 3, 3: 9}, 5},
		{[]uint64{1, 2, 3}, MapAckIndexer{1: 5}, 0},
		{[]uint64{1, 2, 3, 4}, MapAckIndexer{1: 5, 2: 6, 3: 7, 4: 8}, 6},
		{[]uint64{1, 2, 3, 4, 5}, MapAckIndexer{1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, 3},
	}
	for i, c := range cases {
		if got := NewMajority(c.ids...).CommittedIndex(c.acks); got != c.want {
			t.Errorf("case %d: got %d want %d", i, got, c.want)
		}
	}
	if got := (MajorityConfig{}).CommittedIndex(MapAckIndexer{}); got != ^uint64(0) {
		t.Errorf("empty config must be neutral, got %d", got)
	}
}

func TestJointCommittedIndexNeedsBothMajorities(t *testing.T) {
	j := JointConfig{NewMajority(1, 2, 3), NewMajority(3, 4, 5)}
	acks := MapAckIndexer{1: 10, 2: 10, 3: 4, 4: 2, 5: 1}
	if got := j.CommittedIndex(acks); got != 2 {
		t.Fatalf("got %d want 2", got)
	}
}

func TestVoteResultMajorityAndJoint(t *testing.T) {
	m := NewMajority(1, 2, 3)
	if r := m.VoteResult(map[uint64]bool{1: true}); r != VotePending {
		t.Fatal(r)
	}
	if r := m.VoteResult(map[uint64]bool{1: true, 2: true}); r != VoteWon {
		t.Fatal(r)
	}
	if r := m.VoteResult(map[uint64]bool{1: true, 2: false, 3: false}); r != VoteLost {
		t.Fatal(r)
	}
	j := JointConfig{NewMajority(1, 2, 3), NewMajority(4, 5, 6)}
	if r := j.VoteResult(map[uint64]bool{1: true, 2: true}); r != VotePending {
		t.Fatal(r)
	}
	if r := j.VoteResult(map[uint64]bool{1: true, 2: true, 4: false, 5: false}); r != VoteLost {
		t.Fatal(r)
	}
	if r := j.VoteResult(map[uint64]bool{1: true, 2: true, 4: true, 6: true}); r != VoteWon {
		t.Fatal(r)
	}
}
