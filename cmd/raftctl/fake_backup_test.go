package main

import (
	"context"
	"errors"

	"github.com/capraft/capraft/schema"
)

// SaveSnapshot is not faked: raftctl snapshot save is tested against
// real nodes (snapshot_backup_test.go).
func (a *authAdmin) SaveSnapshot(context.Context, schema.Admin_saveSnapshot) error {
	return errors.New("the fake node keeps no snapshots")
}
