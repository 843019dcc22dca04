package services

import (
	"slices"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/kv"
)

// A new leader expires a due lease only once the lease's TTL plus the
// grace (an election timeout) has passed since it took over: leases due
// at the change get a full TTL for their clients to find the new leader.
func TestNewLeaderGivesDueLeasesATTLAndAnElection(t *testing.T) {
	since := time.Unix(1000, 0)
	const grace = time.Second
	due := []kv.LeaseInfo{{ID: 1, TTL: 2 * time.Second}, {ID: 2, TTL: 10 * time.Second}, {ID: 3, TTL: time.Second}}
	for _, c := range []struct {
		after time.Duration
		want  []uint64
	}{
		{0, nil},
		{2 * time.Second, nil},           // 3: TTL 1s + grace 1s, exactly: not yet
		{2*time.Second + 1, []uint64{3}}, // just past
		{3*time.Second + 1, []uint64{1, 3}},
		{11*time.Second + 1, []uint64{1, 2, 3}},
	} {
		got := pastGrace(due, since.Add(c.after), since, grace)
		if !slices.Equal(got, c.want) {
			t.Errorf("%v after the change: expire %v, want %v", c.after, got, c.want)
		}
	}
}
