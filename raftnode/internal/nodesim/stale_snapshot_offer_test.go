package nodesim

import "testing"

// TestAFollowerWhoseLogDivergesRightAfterTheLeadersSnapshotCatchesUp
// replays a run in which a new leader, its log compacted through index
// 122, probed a follower whose log held an uncommitted entry of an older
// term at 123: the probe fell back to the snapshot at 122, which the
// follower refused as not beyond its commit index, forever, and with a
// third voter that had lost its disk nothing committed after healing.
// A refused stale offer now tells the leader the follower's commit index
// (found at seed 90,684 of n=3 by a long run; shrunk).
func TestAFollowerWhoseLogDivergesRightAfterTheLeadersSnapshotCatchesUp(t *testing.T) {
	opts := DefaultOptions(3)
	if err := ApplyOverride(&opts, "Keys=1,ConfChangeP=0,SlowDiskP=0,FsyncCrashP=0"); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(90684, opts); err != nil {
		t.Fatal(err)
	}
}
