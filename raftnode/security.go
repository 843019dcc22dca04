package raftnode

import "github.com/capraft/capraft/raftnode/services"

// Security says who may do what on a node (see docs/SECURITY.md and
// services.Security).
type Security = services.Security

// Access is the authority a connection holds before it presents any
// credential (Security.Anonymous).
type Access = services.Access

// Anonymous access levels (see services.Access).
const (
	AccessDefault  = services.AccessDefault
	AccessNone     = services.AccessNone
	AccessClient   = services.AccessClient
	AccessOperator = services.AccessOperator
	AccessAll      = services.AccessAll
)

// ParseAccess parses an --anonymous value.
func ParseAccess(s string) (Access, error) { return services.ParseAccess(s) }
