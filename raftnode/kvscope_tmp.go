package raftnode

import (
	"capnproto.org/go/capnp/v3"

	"github.com/capraft/capraft/rpc"
	"github.com/capraft/capraft/schema"
)

// kvScope confines a KV capability (temporary: replaced by the restrict
// branch's enforcement).
type kvScope struct {
	restricted bool
	prefix     []byte
	readOnly   bool
	live       func() error
}

// kvCapability exports a KV capability confined to sc through ex.
func (n *Node) kvCapability(ex *rpc.Exporter, sc kvScope) capnp.Client {
	impl := kvServer{n}
	inline, rest := impl.methods()
	return ex.ExportInline(schema.KV_Methods(nil, nil), inline, rest, impl)
}
