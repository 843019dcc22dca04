package raftnode_test

import (
	"strings"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode"
	"github.com/capraft/capraft/schema"
)

// A leadership transfer the leader started but did not see complete
// within the request timeout (here the target is down) may still
// complete: it is answered outcomeUnknown, which the client does not
// retry blindly, not timeout; the message says how to find out.
func TestTransferNotSeenToCompleteIsOutcomeUnknown(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *raftnode.Config) { cfg.RequestTimeout = 500 * time.Millisecond })
	lead := c.leader()
	target := lead%3 + 1
	c.stop(target)
	ctx := ctxT(t)
	err := adminCall(ctx, c, lead, func(a schema.Admin) error {
		f, rel := a.TransferLeadership(ctx, func(p schema.Admin_transferLeadership_Params) error { p.SetTo(target); return nil })
		defer rel()
		return resultErr(f.Struct())
	})
	if !isCode(err, schema.ErrorCode_outcomeUnknown) {
		t.Fatalf("transfer to node %d, which is down: %v, want outcomeUnknown", target, err)
	}
	if !strings.Contains(err.Error(), "may still complete") {
		t.Errorf("the unknown outcome of a transfer does not say the transfer may still complete: %v", err)
	}
}
