package driver

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A peer's word that this node is no longer a member stops it only where
// a removed node hears it. A leader (it would apply its own removal) is
// not stopped by such a word, whoever sends it and whatever index it
// claims: not from a node outside its configuration, not from a term
// older than its own.
func TestNotMemberNoticeDoesNotStopALeader(t *testing.T) {
	d := newLoneDriver(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := onLoop(ctx, d.Driver, d.core.Status)
	if err != nil {
		t.Fatal(err)
	}
	for _, nm := range []struct {
		from uint64
		word NotMember
	}{
		{2, NotMember{Index: st.Applied + 1000, Term: 0}},       // not a member, stale term
		{2, NotMember{Index: st.Applied + 1000, Term: st.Term}}, // not a member
		{1, NotMember{Index: st.Applied + 1000, Term: st.Term + 5}},
	} {
		d.ReportNotMember(nm.from, nm.word)
	}
	for range 2 { // two trips through the loop: the notices were handled
		if err := runOnLoop(ctx, d.Driver, func() {}); err != nil {
			t.Fatalf("the leader stopped on a notice: %v (node error %v)", err, d.Err())
		}
	}
	if err := d.Err(); errors.Is(err, ErrRemoved) {
		t.Fatalf("a leader of a configuration that includes it stopped as removed: %v", err)
	}
}
