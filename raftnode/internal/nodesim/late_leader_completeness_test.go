package nodesim

import "testing"

// TestALateLeaderOfAnEarlierTermNeedNotHoldLaterCommits replays the run
// in which a candidate of term 3, frozen with its winning votes queued,
// became leader after a leader of term 4 had committed an entry of term
// 2: leader completeness binds leaders of terms after the commit, not
// before (the checker once failed this run; found at seed 18415 of n=3
// by a long run, shrunk).
func TestALateLeaderOfAnEarlierTermNeedNotHoldLaterCommits(t *testing.T) {
	opts := DefaultOptions(3)
	if err := ApplyOverride(&opts, "Keys=1,Chaos=750ms,CrashP=0,TransferP=0,DiskLossP=0,ConfChangeP=0,FsyncCrashP=0,ClockJumpP=0"); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(18415, opts); err != nil {
		t.Fatal(err)
	}
}
