package raftnode_test

import (
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The public packages (raftnode's, the client's, rpc, token) name no type
// of an internal package in their exported API: a caller outside raftnode/ cannot name such a type,
// so a field, parameter or result of one is a knob nobody outside can use
// (and a leak of what is free to change).
func TestPublicAPINamesNoInternalType(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to find the packages' sources with")
	}
	const mod = "github.com/capraft/capraft/"
	paths := []string{"raftnode", "raftnode/storage", "raftnode/driver", "raftnode/services", "raftnode/kv", "raftnode/echo", "raftnode/raft", "raftnode/statemachine", "client", "rpc", "token"}
	// The compiler's export data (go list -export builds it, or finds it
	// in the build cache) is what the type checker reads.
	args := []string{"list", "-export", "-deps", "-f", "{{.ImportPath}}={{.Export}}"}
	for _, p := range paths {
		args = append(args, mod+p)
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	export := map[string]string{}
	for _, line := range strings.Fields(string(out)) {
		if path, file, ok := strings.Cut(line, "="); ok && file != "" {
			export[path] = file
		}
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		file, ok := export[path]
		if !ok {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	})
	for _, path := range paths {
		pkg, err := imp.Import(mod + path)
		if err != nil {
			t.Fatalf("type-check %s: %v", path, err)
		}
		for _, leak := range internalTypesIn(pkg) {
			t.Errorf("%s: %s", path, leak)
		}
	}
}

// internalTypesIn lists the exported declarations of pkg whose types
// (of fields, parameters, results, methods) name a type of an internal
// package.
func internalTypesIn(pkg *types.Package) []string {
	var leaks []string
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		check := func(what string, typ types.Type) {
			if n := internalNamed(typ, map[types.Type]bool{}); n != "" {
				leaks = append(leaks, what+" names "+n)
			}
		}
		switch o := obj.(type) {
		case *types.TypeName:
			if alias, ok := o.Type().(*types.Alias); ok {
				check(name, types.Unalias(alias))
				continue
			}
			named, ok := o.Type().(*types.Named)
			if !ok {
				continue
			}
			switch u := named.Underlying().(type) {
			case *types.Struct:
				for i := range u.NumFields() {
					if f := u.Field(i); f.Exported() {
						check(name+"."+f.Name(), f.Type())
					}
				}
			case *types.Interface:
				for i := range u.NumMethods() {
					if m := u.Method(i); m.Exported() {
						check(name+"."+m.Name(), m.Type())
					}
				}
			default:
				check(name, u)
			}
			for i := range named.NumMethods() {
				if m := named.Method(i); m.Exported() {
					check(name+"."+m.Name(), m.Type())
				}
			}
		case *types.Func, *types.Var, *types.Const:
			check(name, o.Type())
		}
	}
	return leaks
}

// internalNamed returns the name of a type of an internal package that
// typ is or is built of, or "".
func internalNamed(typ types.Type, seen map[types.Type]bool) string {
	if seen[typ] {
		return ""
	}
	seen[typ] = true
	switch t := typ.(type) {
	case *types.Alias:
		return internalNamed(types.Unalias(t), seen)
	case *types.Named:
		if p := t.Obj().Pkg(); p != nil && isInternal(p.Path()) {
			return p.Path() + "." + t.Obj().Name()
		}
		for i := range t.TypeArgs().Len() {
			if n := internalNamed(t.TypeArgs().At(i), seen); n != "" {
				return n
			}
		}
		return ""
	case *types.Pointer:
		return internalNamed(t.Elem(), seen)
	case *types.Slice:
		return internalNamed(t.Elem(), seen)
	case *types.Array:
		return internalNamed(t.Elem(), seen)
	case *types.Map:
		if n := internalNamed(t.Key(), seen); n != "" {
			return n
		}
		return internalNamed(t.Elem(), seen)
	case *types.Chan:
		return internalNamed(t.Elem(), seen)
	case *types.Signature:
		for _, tup := range []*types.Tuple{t.Params(), t.Results()} {
			for i := range tup.Len() {
				if n := internalNamed(tup.At(i).Type(), seen); n != "" {
					return n
				}
			}
		}
		return ""
	case *types.Struct:
		for i := range t.NumFields() {
			if f := t.Field(i); f.Exported() || f.Embedded() {
				if n := internalNamed(f.Type(), seen); n != "" {
					return n
				}
			}
		}
		return ""
	}
	return ""
}

func isInternal(path string) bool {
	return strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal")
}
