// Package capraft is a Raft consensus service whose nodes and clients speak
// Cap'n Proto RPC. The packages below it hold the pieces; this file only
// carries the code generation step for the schemas in schema/.
//
// Regenerate after editing a schema (needs the capnp compiler, Debian package
// capnproto; capnpc-go is pinned in go.mod as a tool):
//
//	go generate ./...
package capraft

//go:generate sh -c "capnp compile -I\"$(go list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std\" -o\"$(go tool -n capnpc-go)\" schema/*.capnp"
