package history

import (
	"strings"
	"testing"
)

func wput(rev uint64, key, value string) WatchEvent {
	return WatchEvent{Rev: rev, Key: key, Value: value}
}
func wdel(rev uint64, key string) WatchEvent { return WatchEvent{Rev: rev, Key: key, Delete: true} }

// committedHistory: changes to a/ and b/, a transaction at revision 4
// changing two keys.
var committedHistory = []WatchEvent{
	wput(2, "a/1", "x"),
	wput(3, "b/1", "y"),
	wput(4, "a/1", "z"),
	wput(4, "a/2", "w"),
	wdel(5, "b/1"),
	wdel(6, "a/2"),
	wput(8, "a/3", "v"),
}

// TestCheckWatchRejectsGapsDuplicatesAndReorders: hand-made watcher
// sequences against committedHistory; the checker must accept the exact
// history of the prefix and name each broken promise.
func TestCheckWatchRejectsGapsDuplicatesAndReorders(t *testing.T) {
	a := WatchSpec{Prefix: "a/", From: 2, UpTo: 9}
	cases := []struct {
		name string
		got  []WatchEvent
		spec WatchSpec
		want string // "" or a substring of the error
	}{
		{"exact history of the prefix", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, ""},
		{"from a later revision", []WatchEvent{wdel(6, "a/2"), wput(8, "a/3", "v")}, WatchSpec{Prefix: "a/", From: 5, UpTo: 9}, ""},
		{"up to an earlier revision", []WatchEvent{wput(2, "a/1", "x")}, WatchSpec{Prefix: "a/", From: 1, UpTo: 3}, ""},
		{"nothing under the prefix", nil, WatchSpec{Prefix: "c/", From: 1, UpTo: 9}, ""},
		{"gap in the middle", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wput(8, "a/3", "v")}, a, "gap: @6 delete a/2"},
		{"gap inside a transaction", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "gap: @4 put a/2"},
		{"gap at the start", []WatchEvent{wput(4, "a/1", "z"), wput(4, "a/2", "w"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "gap: @2 put a/1"},
		{"gap at the end", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wdel(6, "a/2")}, a, "gap: @8 put a/3"},
		{"duplicate", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wput(4, "a/2", "w"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "duplicate"},
		{"duplicate after a resume", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wdel(6, "a/2"), wput(4, "a/2", "w"), wput(8, "a/3", "v")}, a, "duplicate"},
		{"reordered revisions", []WatchEvent{wput(2, "a/1", "x"), wdel(6, "a/2"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wput(8, "a/3", "v")}, a, "out of order"},
		{"reordered within a transaction", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/2", "w"), wput(4, "a/1", "z"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "not the next committed change"},
		{"wrong value", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "q"), wput(4, "a/2", "w"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "differs from the committed change"},
		{"never committed", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w"), wput(5, "a/9", "n"), wdel(6, "a/2"), wput(8, "a/3", "v")}, a, "never committed"},
		{"outside the prefix", []WatchEvent{wput(2, "a/1", "x"), wput(3, "b/1", "y")}, a, "outside the watched prefix"},
		{"past its up-to revision", []WatchEvent{wput(2, "a/1", "x"), wput(4, "a/1", "z"), wput(4, "a/2", "w")}, WatchSpec{Prefix: "a/", From: 1, UpTo: 3}, "past the revision"},
		// A watch from "now": it may leave out what came before StartHi.
		{"start within the window", []WatchEvent{wdel(6, "a/2"), wput(8, "a/3", "v")}, WatchSpec{Prefix: "a/", StartLo: 3, StartHi: 6, UpTo: 9}, ""},
		{"start within the window, nothing delivered", nil, WatchSpec{Prefix: "a/", StartLo: 3, StartHi: 9, UpTo: 8}, ""},
		{"start window, gap after it", []WatchEvent{wput(8, "a/3", "v")}, WatchSpec{Prefix: "a/", StartLo: 3, StartHi: 5, UpTo: 9}, "gap: @6 delete a/2"},
		{"start window, nothing delivered after it", nil, WatchSpec{Prefix: "a/", StartLo: 1, StartHi: 3, UpTo: 9}, "gap: @4 put a/1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckWatch(tc.got, committedHistory, tc.spec)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted, want an error with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q, want one with %q", err, tc.want)
			}
		})
	}
}

func TestCheckCommitted(t *testing.T) {
	if err := CheckCommitted(committedHistory); err != nil {
		t.Fatal(err)
	}
	if err := CheckCommitted([]WatchEvent{wput(2, "a", "x"), wput(1, "b", "y")}); err == nil {
		t.Fatal("accepted revisions going back")
	}
	if err := CheckCommitted([]WatchEvent{wput(2, "a", "x"), wdel(2, "a")}); err == nil {
		t.Fatal("accepted a key changed twice at one revision")
	}
}

func TestReplayWatchEvents(t *testing.T) {
	got := ReplayWatchEvents(committedHistory)
	want := map[string]StoreKV{
		"a/1": {Value: "z", Version: 2, CreateRevision: 2, ModRevision: 4},
		"a/3": {Value: "v", Version: 1, CreateRevision: 8, ModRevision: 8},
	}
	if len(got) != len(want) {
		t.Fatalf("replayed %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s replayed as %+v, want %+v", k, got[k], v)
		}
	}
}
