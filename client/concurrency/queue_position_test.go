package concurrency

import (
	"testing"

	"github.com/capraft/capraft/client"
)

// Each waiter waits for the key created just before its own (the one
// with the highest create revision below it), whatever the keys' byte
// order: a release wakes one waiter, not every one behind it. The first
// key waits for nothing; a key missing from the queue is reported.
func TestEachWaiterWaitsForTheKeyJustBeforeItsOwn(t *testing.T) {
	kv := func(key string, rev uint64) client.KeyValue {
		return client.KeyValue{Key: key, CreateRevision: rev, ModRevision: rev}
	}
	q := []entry{ // in byte order, as a range returns them
		{kv: kv("l/a", 40), at: 50}, {kv: kv("l/b", 7), at: 50}, {kv: kv("l/c", 31), at: 50}, {kv: kv("l/d", 12), at: 50},
	}
	for _, tc := range []struct {
		me      client.KeyValue
		before  string
		ahead   bool
		present bool
	}{
		{me: kv("l/b", 7), ahead: false, present: true},
		{me: kv("l/d", 12), before: "l/b", ahead: true, present: true},
		{me: kv("l/c", 31), before: "l/d", ahead: true, present: true},
		{me: kv("l/a", 40), before: "l/c", ahead: true, present: true},
		{me: kv("l/a", 45), before: "l/a", ahead: true, present: false}, // recreated: not the key queued
		{me: kv("l/e", 60), before: "l/a", ahead: true, present: false},
	} {
		before, ahead, present := position(q, tc.me)
		if ahead != tc.ahead || present != tc.present || (ahead && before.kv.Key != tc.before) {
			t.Errorf("%s@%d: waits for %q (ahead %v, present %v), want %q (ahead %v, present %v)",
				tc.me.Key, tc.me.CreateRevision, before.kv.Key, ahead, present, tc.before, tc.ahead, tc.present)
		}
	}
	if head, ok := first(q); !ok || head.kv.Key != "l/b" {
		t.Errorf("first: %q, %v; want l/b", head.kv.Key, ok)
	}
	if _, ok := first(nil); ok {
		t.Error("first of an empty queue found a key")
	}
}
