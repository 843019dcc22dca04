package rpctest

import (
	"context"
	"errors"

	"github.com/capraft/capraft/schema"
)

// ErrNotServed is what UnservedNode answers.
var ErrNotServed = errors.New("not served by this test node")

// UnservedNode implements every method of schema.Node_Server by failing
// with ErrNotServed. A test's fake Node embeds it and defines only the
// methods the test needs, so a method added to the schema does not break
// every fake.
type UnservedNode struct{}

// Echo fails with ErrNotServed.
func (UnservedNode) Echo(context.Context, schema.Node_echo) error { return ErrNotServed }

// Raft fails with ErrNotServed.
func (UnservedNode) Raft(context.Context, schema.Node_raft) error { return ErrNotServed }

// Info fails with ErrNotServed.
func (UnservedNode) Info(context.Context, schema.Node_info) error { return ErrNotServed }

// Kv fails with ErrNotServed.
func (UnservedNode) Kv(context.Context, schema.Node_kv) error { return ErrNotServed }

// Status fails with ErrNotServed.
func (UnservedNode) Status(context.Context, schema.Node_status) error { return ErrNotServed }

// Admin fails with ErrNotServed.
func (UnservedNode) Admin(context.Context, schema.Node_admin) error { return ErrNotServed }

// Login fails with ErrNotServed.
func (UnservedNode) Login(context.Context, schema.Node_login) error { return ErrNotServed }

// Challenge fails with ErrNotServed.
func (UnservedNode) Challenge(context.Context, schema.Node_challenge) error { return ErrNotServed }

// Identity fails with ErrNotServed.
func (UnservedNode) Identity(context.Context, schema.Node_identity) error { return ErrNotServed }
