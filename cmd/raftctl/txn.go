package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode/kv"
)

// txnFormatHelp documents both input forms of raftctl txn.
const txnFormatHelp = `The text form (etcdctl's txn format): the compares, one per line, a blank
line, the operations run when every compare holds, a blank line, the
operations run otherwise. Lines starting with # are comments.

  # take the lock if nobody holds it, else say who does
  absent("lock")

  put lock alice
  get lock

  get lock

Compares: TARGET("KEY") OP OPERAND, where TARGET is value, version,
create (the create revision) or mod (the mod revision), OP is =, !=, < or >,
and OPERAND a number, or for value a string; absent("KEY") and
present("KEY") test existence. A missing key has version, create and mod 0
and fails every value compare.
Operations: put KEY VALUE, get KEY, del KEY, del --prefix PREFIX (every key
starting with PREFIX; not empty), range PREFIX [LIMIT].
A KEY, VALUE or PREFIX is a word without spaces or a Go-quoted string
("two words", "\x00\xff"). A branch writes a key once: a put or del of a key
under a prefix it deletes, or two overlapping del --prefix, are refused.

The JSON form (input starting with {):
  {"compares": [{"target": "mod", "key": "k", "op": "=", "number": 5},
                {"target": "value", "key": "k", "op": "!=", "value": "v"},
                {"target": "absent", "key": "lock"}],
   "then": [{"op": "put", "key": "k", "value": "v"}, {"op": "range", "key": "p/", "limit": 10}],
   "else": [{"op": "get", "key": "k"}, {"op": "del", "key": "tmp/", "prefix": true}]}
"key_base64" and "value_base64" give bytes that are not text.`

// txnOutputHelp documents raftctl txn's output.
const txnOutputHelp = `It prints which branch ran and each operation's result:
  THEN revision=N            (or ELSE)
  put KEY OK                 (prev=VALUE when the key existed)
  get KEY VALUE              (or "(not found)")
  del KEY deleted            (or "(not found)")
  del --prefix PREFIX deleted=N
  range PREFIX               then KEY<TAB>VALUE lines
A retried transaction that was already applied prints "(replayed: results
not kept)" after the first line.

JSON: {"succeeded": bool, "branch": "then"|"else", "revision": int, "replayed": bool,
       "results": [{"op": "put", "key": ..., "found": bool, "prev": KV}, {"op": "get", "found": bool, "kv": KV},
                   {"op": "del", "found": bool, "prev": KV}, {"op": "del", "prefix": true, "deleted": int},
                   {"op": "range", "kvs": [KV, ...], "more": bool}]}
`

// maxTxnInput bounds the input read: a node refuses a transaction of more
// than 3 MiB of keys and values anyway.
const maxTxnInput = kv.DefaultMaxBatchBytes + 1<<20

func txnCommand(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "txn [--file F]",
		Short: "Run a transaction read from stdin or a file",
		Long: "txn reads a transaction from stdin (or --file F) and runs it: if every compare\n" +
			"holds, the first list of operations runs, otherwise the second, atomically.\n" +
			"All its writes take one revision; a key may be written once per branch.\n\n" +
			txnFormatHelp + "\n\n" + txnOutputHelp,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := io.Reader(cmd.InOrStdin())
			if file != "" && file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				defer f.Close()
				in = f
			}
			src, err := io.ReadAll(io.LimitReader(in, maxTxnInput+1))
			if err != nil {
				return fmt.Errorf("read the transaction: %w", err)
			}
			if len(src) > maxTxnInput {
				return &limitError{fmt.Sprintf("the transaction is over %d bytes: the node would refuse it", maxTxnInput)}
			}
			spec, err := parseTxn(src)
			if err != nil {
				return usagef("%v", err)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				tx := c.Txn(ctx).If(spec.cmps...).Then(spec.then.ops...).Else(spec.els.ops...)
				resp, err := tx.Commit()
				if err != nil {
					return err
				}
				branch := spec.els
				if resp.Succeeded {
					branch = spec.then
				}
				return g.emit(cmd, txnJSON(resp, branch), func(w io.Writer) { printTxn(w, resp, branch) })
			})
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "read the transaction from file `F` (- or none: stdin)")
	return cmd
}

// txnSpec is a parsed transaction.
type txnSpec struct {
	cmps      []client.Cmp
	then, els branchSpec
}

// branchSpec is a branch's operations and, for printing, what they are.
type branchSpec struct {
	ops   []client.Op
	kinds []string // put, get, del, del --prefix, range
	keys  []string
}

func (b *branchSpec) add(kind, key string, op client.Op) {
	b.ops = append(b.ops, op)
	b.kinds = append(b.kinds, kind)
	b.keys = append(b.keys, key)
}

// parseTxn reads a transaction in the text or the JSON form.
func parseTxn(src []byte) (*txnSpec, error) {
	if t := bytes.TrimSpace(src); len(t) > 0 && t[0] == '{' {
		return parseTxnJSON(t)
	}
	return parseTxnText(string(src))
}

// parseTxnText reads the text form (see txnFormatHelp).
func parseTxnText(src string) (*txnSpec, error) {
	spec := &txnSpec{}
	section := 0 // 0 compares, 1 then, 2 else
	for n, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case line == "":
			section++
			continue
		case section > 2:
			return nil, fmt.Errorf("line %d: %q after the else operations (a transaction has three sections separated by blank lines)", n+1, line)
		}
		var err error
		if section == 0 {
			err = spec.parseCompare(line)
		} else {
			err = parseOp(line, []*branchSpec{&spec.then, &spec.els}[section-1])
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n+1, err)
		}
	}
	return spec, nil
}

// words splits a line into words and Go-quoted strings.
func words(line string) ([]string, error) {
	var out []string
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		if line[0] == '"' {
			q, err := strconv.QuotedPrefix(line)
			if err != nil {
				return nil, fmt.Errorf("bad quoted string in %q", line)
			}
			s, _ := strconv.Unquote(q)
			out = append(out, s)
			line = line[len(q):]
			continue
		}
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			i = len(line)
		}
		out = append(out, line[:i])
		line = line[i:]
	}
	return out, nil
}

var txnOps = map[string]bool{"=": true, "!=": true, "<": true, ">": true}

// parseCompare reads TARGET("KEY") OP OPERAND, absent("KEY") or
// present("KEY").
func (spec *txnSpec) parseCompare(line string) error {
	open := strings.IndexByte(line, '(')
	if open < 0 {
		return fmt.Errorf("compare %q: want TARGET(\"KEY\") OP OPERAND", line)
	}
	target := strings.TrimSpace(line[:open])
	rest := line[open+1:]
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return fmt.Errorf("compare %q: the key must be a quoted string", line)
	}
	key, _ := strconv.Unquote(q)
	rest = strings.TrimSpace(rest[len(q):])
	if !strings.HasPrefix(rest, ")") {
		return fmt.Errorf("compare %q: missing ) after the key", line)
	}
	w, err := words(rest[1:])
	if err != nil {
		return fmt.Errorf("compare %q: %w", line, err)
	}
	if err := checkKey(key); err != nil {
		return err
	}
	switch target {
	case "absent", "present":
		if len(w) != 0 {
			return fmt.Errorf("compare %q: %s takes no operator", line, target)
		}
		if target == "absent" {
			spec.cmps = append(spec.cmps, client.Absent(key))
		} else {
			spec.cmps = append(spec.cmps, client.Present(key))
		}
		return nil
	}
	if len(w) != 2 || !txnOps[w[0]] {
		return fmt.Errorf("compare %q: want TARGET(\"KEY\") OP OPERAND with OP one of = != < >", line)
	}
	c, err := compare(target, key, w[0], w[1], line)
	if err != nil {
		return err
	}
	spec.cmps = append(spec.cmps, c)
	return nil
}

// compare builds the comparison of key's target with operand by op.
func compare(target, key, op, operand, what string) (client.Cmp, error) {
	if target == "value" {
		v := client.Value(key)
		b := []byte(operand)
		return map[string]func([]byte) client.Cmp{"=": v.Equal, "!=": v.NotEqual, "<": v.Less, ">": v.Greater}[op](b), nil
	}
	var n client.NumberCmp
	switch target {
	case "version", "ver":
		n = client.Version(key)
	case "create", "createRevision":
		n = client.CreateRevision(key)
	case "mod", "modRevision":
		n = client.ModRevision(key)
	default:
		return client.Cmp{}, fmt.Errorf("compare %q: unknown target %q (value, version, create, mod, absent, present)", what, target)
	}
	num, err := strconv.ParseUint(operand, 10, 64)
	if err != nil {
		return client.Cmp{}, fmt.Errorf("compare %q: %s takes a number, not %q", what, target, operand)
	}
	return map[string]func(uint64) client.Cmp{"=": n.Equal, "!=": n.NotEqual, "<": n.Less, ">": n.Greater}[op](num), nil
}

// parseOp reads put KEY VALUE, get KEY, del KEY or range PREFIX [LIMIT]
// into b.
func parseOp(line string, b *branchSpec) error {
	w, err := words(line)
	if err != nil {
		return err
	}
	kind, args := w[0], w[1:]
	if kind == "del" || kind == "delete" {
		// etcdctl's flag, before or after the prefix.
		if i := slices.Index(args, "--prefix"); i >= 0 {
			kind, args = "del --prefix", slices.Delete(slices.Clone(args), i, i+1)
		}
	}
	return addOp(b, kind, args, line)
}

func addOp(b *branchSpec, kind string, args []string, what string) error {
	want := map[string]string{"put": "KEY VALUE", "get": "KEY", "del": "KEY", "delete": "KEY", "del --prefix": "PREFIX", "range": "PREFIX [LIMIT]"}[kind]
	if want == "" {
		return fmt.Errorf("%q: unknown operation %q (put, get, del, range)", what, kind)
	}
	n := strings.Count(want, " ") + 1
	if len(args) != n && !(kind == "range" && len(args) == 1) {
		return fmt.Errorf("%q: %s takes %s", what, kind, want)
	}
	key := args[0]
	if kind == "range" {
		if err := checkKeyLen("PREFIX", key); err != nil {
			return err
		}
		var limit uint64
		if len(args) == 2 {
			var err error
			if limit, err = strconv.ParseUint(args[1], 10, 32); err != nil {
				return fmt.Errorf("%q: LIMIT must be a number", what)
			}
		}
		b.add("range", key, client.OpRange(key, uint32(limit)))
		return nil
	}
	if kind == "del --prefix" {
		if key == "" {
			return fmt.Errorf("%q: empty prefix: del --prefix \"\" would delete every key; name a prefix", what)
		}
		if err := checkKeyLen("PREFIX", key); err != nil {
			return err
		}
		b.add(kind, key, client.OpDeletePrefix(key))
		return nil
	}
	if err := checkKey(key); err != nil {
		return err
	}
	switch kind {
	case "put":
		if len(args[1]) > maxValueSize {
			return tooLong("VALUE", "the transaction")
		}
		b.add("put", key, client.OpPut(key, []byte(args[1])))
	case "get":
		b.add("get", key, client.OpGet(key))
	default:
		b.add("del", key, client.OpDelete(key))
	}
	return nil
}

// txnJSONInput is the JSON form of a transaction.
type txnJSONInput struct {
	Compares []struct {
		textFields
		Target string  `json:"target"`
		Op     string  `json:"op"`
		Number *uint64 `json:"number"`
	} `json:"compares"`
	Then []jsonOp `json:"then"`
	Else []jsonOp `json:"else"`
}

type jsonOp struct {
	textFields
	Op     string `json:"op"`
	Limit  uint32 `json:"limit"`
	Prefix bool   `json:"prefix"` // del: every key starting with key
}

// textFields are a key and a value, as text or base64.
type textFields struct {
	Key         *string `json:"key"`
	KeyBase64   *string `json:"key_base64"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
}

func pick(text, b64 *string, name string) (string, bool, error) {
	switch {
	case text != nil && b64 != nil:
		return "", false, fmt.Errorf("both %q and %q given", name, name+"_base64")
	case b64 != nil:
		b, err := base64.StdEncoding.DecodeString(*b64)
		if err != nil {
			return "", false, fmt.Errorf("%s_base64: %v", name, err)
		}
		return string(b), true, nil
	case text != nil:
		return *text, true, nil
	}
	return "", false, nil
}

func parseTxnJSON(src []byte) (*txnSpec, error) {
	var in txnJSONInput
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("JSON transaction: %v", err)
	}
	spec := &txnSpec{}
	for i, c := range in.Compares {
		key, _, err := pick(c.Key, c.KeyBase64, "key")
		if err != nil {
			return nil, fmt.Errorf("compare %d: %v", i, err)
		}
		if err := checkKey(key); err != nil {
			return nil, err
		}
		what := fmt.Sprintf("compare %d", i)
		switch c.Target {
		case "absent":
			spec.cmps = append(spec.cmps, client.Absent(key))
			continue
		case "present":
			spec.cmps = append(spec.cmps, client.Present(key))
			continue
		}
		if !txnOps[c.Op] {
			return nil, fmt.Errorf("%s: op must be one of = != < >, not %q", what, c.Op)
		}
		operand := ""
		if c.Target == "value" {
			v, ok, err := pick(c.Value, c.ValueBase64, "value")
			if err != nil || !ok {
				return nil, fmt.Errorf("%s: a value compare needs \"value\" or \"value_base64\" (%v)", what, err)
			}
			operand = v
		} else if c.Number != nil {
			operand = strconv.FormatUint(*c.Number, 10)
		} else {
			return nil, fmt.Errorf("%s: a %s compare needs \"number\"", what, c.Target)
		}
		cmp, err := compare(c.Target, key, c.Op, operand, what)
		if err != nil {
			return nil, err
		}
		spec.cmps = append(spec.cmps, cmp)
	}
	for _, br := range []struct {
		name string
		ops  []jsonOp
		dst  *branchSpec
	}{{"then", in.Then, &spec.then}, {"else", in.Else, &spec.els}} {
		for i, o := range br.ops {
			what := fmt.Sprintf("%s operation %d", br.name, i)
			key, _, err := pick(o.Key, o.KeyBase64, "key")
			if err != nil {
				return nil, fmt.Errorf("%s: %v", what, err)
			}
			args := []string{key}
			switch o.Op {
			case "put":
				v, _, err := pick(o.Value, o.ValueBase64, "value")
				if err != nil {
					return nil, fmt.Errorf("%s: %v", what, err)
				}
				args = append(args, v)
			case "range":
				if o.Limit > 0 {
					args = append(args, strconv.FormatUint(uint64(o.Limit), 10))
				}
			}
			kind := o.Op
			if o.Prefix {
				if kind != "del" && kind != "delete" {
					return nil, fmt.Errorf("%s: \"prefix\" is for del only, not %q", what, kind)
				}
				kind = "del --prefix"
			}
			if err := addOp(br.dst, kind, args, what); err != nil {
				return nil, err
			}
		}
	}
	return spec, nil
}

// txnJSON is the JSON form of a transaction's outcome (see txnOutputHelp).
func txnJSON(resp *client.TxnResponse, b branchSpec) map[string]any {
	branch := "else"
	if resp.Succeeded {
		branch = "then"
	}
	results := make([]map[string]any, len(resp.Results))
	for i, r := range resp.Results {
		obj := map[string]any{"op": b.kinds[i]}
		setText(obj, "key", b.keys[i])
		switch {
		case r.Err != nil:
			obj["error"] = r.Err.Error()
		case b.kinds[i] == "del --prefix":
			obj["op"], obj["prefix"], obj["deleted"] = "del", true, r.Deleted
		case b.kinds[i] == "range":
			kvs := make([]map[string]any, len(r.Page.KVs))
			for j, kv := range r.Page.KVs {
				kvs[j] = kvJSON(kv)
			}
			obj["kvs"], obj["more"] = kvs, r.Page.More
		case b.kinds[i] == "get":
			obj["found"] = r.Found
			if r.Found {
				obj["kv"] = kvJSON(r.KV)
			}
		default:
			obj["found"] = r.Found
			if r.Found {
				obj["prev"] = kvJSON(r.KV)
			}
		}
		results[i] = obj
	}
	return map[string]any{"succeeded": resp.Succeeded, "branch": branch, "revision": resp.Revision,
		"replayed": resp.Replayed, "results": results}
}

// printTxn prints a transaction's outcome as text (see txnOutputHelp).
func printTxn(w io.Writer, resp *client.TxnResponse, b branchSpec) {
	branch := "ELSE"
	if resp.Succeeded {
		branch = "THEN"
	}
	fmt.Fprintf(w, "%s revision=%d\n", branch, resp.Revision)
	if resp.Replayed {
		fmt.Fprintln(w, "(replayed: results not kept)")
		return
	}
	for i, r := range resp.Results {
		kind, key := b.kinds[i], cell(b.keys[i])
		switch {
		case r.Err != nil:
			fmt.Fprintf(w, "%s %s error: %v\n", kind, key, r.Err)
		case kind == "del --prefix":
			fmt.Fprintf(w, "del --prefix %s deleted=%d\n", key, r.Deleted)
		case kind == "range":
			fmt.Fprintf(w, "range %s\n", key)
			for _, kv := range r.Page.KVs {
				fmt.Fprintf(w, "%s\t%s\n", cell(kv.Key), cell(string(kv.Value)))
			}
			if r.Page.More {
				fmt.Fprintln(w, "(more keys follow)")
			}
		case !r.Found && kind != "put":
			fmt.Fprintf(w, "%s %s (not found)\n", kind, key)
		case kind == "get":
			fmt.Fprintf(w, "get %s %s\n", key, cell(string(r.KV.Value)))
		case kind == "del":
			fmt.Fprintf(w, "del %s deleted\n", key)
		case r.Found:
			fmt.Fprintf(w, "put %s OK prev=%s\n", key, cell(string(r.KV.Value)))
		default:
			fmt.Fprintf(w, "put %s OK\n", key)
		}
	}
}
