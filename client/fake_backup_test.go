package client_test

import (
	"context"
	"errors"

	"github.com/capraft/capraft/schema"
)

// SaveSnapshot is not faked: backups are tested against real nodes
// (raftnode/backup_test.go, e2e).
func (a *fakeAdminCap) SaveSnapshot(context.Context, schema.Admin_saveSnapshot) error {
	return errors.New("the fake node keeps no snapshots")
}
