package echo_test

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/capraft/capraft/raftnode/echo"
	"github.com/capraft/capraft/rpc/rpctest"
	"github.com/capraft/capraft/schema"
)

// A subscription whose credential ends (its check fails) is dropped at
// the next delivery, and the listener is told why.
func TestListenerIsDroppedWhenItsCredentialEnds(t *testing.T) {
	hub := echo.NewHub(echo.HubConfig{Logger: rpctest.Logger(t)})
	t.Cleanup(hub.Close)
	var revoked atomic.Bool
	check := func() error {
		if revoked.Load() {
			return errors.New("permissionDenied: token 00 was revoked")
		}
		return nil
	}
	l := newMemListener(false)
	cancel, err := hub.Subscribe(schema.EchoListener_ServerToClient(l), check)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	hub.Publish("before")
	if m := <-l.got; m.Msg != "before" {
		t.Fatalf("got %q before the revocation", m.Msg)
	}
	revoked.Store(true)
	hub.Publish("after")
	if r := closedReason(t, l, "revoked"); !strings.Contains(r, "revoked") {
		t.Fatalf("dropped with reason %q, want the credential's error", r)
	}
	select {
	case m := <-l.got:
		t.Fatalf("delivered %q after the credential ended", m.Msg)
	default:
	}
}
