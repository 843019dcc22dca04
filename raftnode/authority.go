package raftnode

import (
	"context"
	"errors"

	"github.com/capraft/capraft/schema"
)

// errNotYet marks the authority methods whose implementation is being
// built (issue: authority); the schema is settled first.
var errNotYet = errors.New("permissionDenied: authentication is not available on this node yet")

// Challenge starts a member's proof of the cluster secret.
func (s *nodeServer) Challenge(context.Context, schema.Node_challenge) error { return errNotYet }

// Login presents a credential.
func (s *nodeServer) Login(context.Context, schema.Node_login) error { return errNotYet }

// Identity describes what this Node holds.
func (s *nodeServer) Identity(context.Context, schema.Node_identity) error { return errNotYet }

// CreateToken mints a token.
func (adminServer) CreateToken(context.Context, schema.Admin_createToken) error { return errNotYet }

// RevokeToken revokes a token.
func (adminServer) RevokeToken(context.Context, schema.Admin_revokeToken) error { return errNotYet }
