package driver_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The driver knows nothing of the wire or of the state machine it drives:
// neither it nor anything it imports may import Cap'n Proto, the schema,
// rpc, the transport, kv or echo (the arrows go services -> driver ->
// core, storage, state machine contract).
func TestDriverImportsNoWireTypesAndNoStateMachine(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to list the imports with")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/capraft/capraft/"
	forbidden := []string{
		"capnproto.org/go/capnp/v3",
		mod + "schema",
		mod + "rpc",
		mod + "raftnode/internal/transport",
		mod + "raftnode/kv",
		mod + "raftnode/echo",
		mod + "raftnode/services",
		mod + "internal/kvwire",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("the driver depends on %s", dep)
			}
		}
	}
}
