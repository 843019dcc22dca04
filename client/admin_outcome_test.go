package client_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/capraft/capraft/client"
)

// A membership change or leadership transfer whose outcome is unknown is
// not retried (it could take effect twice), and its error says what may
// have happened and how to find out, in terms of the call, not of a
// write.
func TestAdminUnknownOutcomeIsNotRetriedAndSaysHowToFindOut(t *testing.T) {
	store, nodes := fakeCluster(t, 2)
	c := newKVClient(t, addrs(nodes...))
	ctx := ctx(t)

	err := c.TransferLeadership(ctx, 98) // the fake answers outcomeUnknown
	if !errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("TransferLeadership answered outcomeUnknown: %v, want ErrUnknownOutcome", err)
	}
	if n := store.transfers.Load(); n != 1 {
		t.Errorf("TransferLeadership with an unknown outcome was sent %d times, want once", n)
	}
	for _, want := range []string{"leadership may or may not have moved", "see which node leads"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("TransferLeadership's error %q does not say %q", err, want)
		}
	}

	store.adminDrop.Store(1) // the connection drops after the change is made
	err = c.AddMember(ctx, 6, "127.0.0.1:6", false)
	if !errors.Is(err, client.ErrUnknownOutcome) {
		t.Fatalf("AddMember cut by a lost connection: %v, want ErrUnknownOutcome", err)
	}
	for _, want := range []string{"membership change may or may not have been made", "list the members"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("AddMember's error %q does not say %q", err, want)
		}
	}

	for _, err := range []error{err, client.ErrUnknownOutcome} {
		if strings.Contains(err.Error(), "write") || strings.Contains(err.Error(), "read the key") {
			t.Errorf("an admin call's unknown outcome talks about writes: %q", err)
		}
	}
}
