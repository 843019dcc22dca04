package nodesim

import "testing"

// TestANodeAddedBackAfreshCarriesOnPastItsOldRemoval replays a run in
// which a node, removed and then started afresh on an empty disk and
// added back, caught up from a snapshot older than its removal and
// applied that removal before the entry adding it back reached it. The
// removal named its earlier storage, so it must carry on; the simulator
// fails a run in which a node being added back stops as removed (found
// at seed 38291 of n=3 by a long run).
func TestANodeAddedBackAfreshCarriesOnPastItsOldRemoval(t *testing.T) {
	if _, err := Run(38291, DefaultOptions(3)); err != nil {
		t.Fatal(err)
	}
}
