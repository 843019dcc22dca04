package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

// kvJSON is the JSON form of a key's state. Values are printed as strings
// (bytes that are not UTF-8 become U+FFFD).
func kvJSON(kv client.KeyValue) map[string]any {
	return map[string]any{
		"key": kv.Key, "value": string(kv.Value),
		"create_revision": kv.CreateRevision, "mod_revision": kv.ModRevision, "version": kv.Version,
	}
}

const kvJSONHelp = `{"key": string, "value": string, "create_revision": int, "mod_revision": int, "version": int}`

func putCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Set KEY to VALUE",
		Long: "put sets KEY to VALUE and prints the store's revision after the write:\n" +
			"  OK revision=N\n\n" +
			`JSON: {"revision": int}` + "\n\n" +
			"If the outcome is unknown (the connection broke and retries ran out of time),\n" +
			"raftctl says so and exits 1: the write may or may not have been applied.",
		Args: exactArgs(2, "KEY and VALUE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "" {
				return usagef("empty key")
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				rev, err := c.Put(ctx, args[0], []byte(args[1]))
				if err != nil {
					return err
				}
				return g.emit(cmd, map[string]any{"revision": rev}, func(w io.Writer) {
					fmt.Fprintf(w, "OK revision=%d\n", rev)
				})
			})
		},
	}
}

func getCommand(g *globals) *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print KEY's value",
		Long: "get prints KEY's value alone on stdout, followed by a newline. A missing\n" +
			"key prints nothing on stdout, \"key not found\" on stderr, and exits 1.\n\n" +
			"JSON: " + kvJSONHelp + "\n" +
			`(missing key: {"error": string, "kind": "not_found"}, exit 1)`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var opts []client.ReadOption
			if serializable {
				opts = append(opts, client.Serializable())
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				kv, err := c.Get(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				return g.emit(cmd, kvJSON(kv), func(w io.Writer) {
					_, _ = w.Write(append(kv.Value, '\n'))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the node's state as it is (possibly stale; needs no leader)")
	return cmd
}

func delCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete KEY",
		Long: "del deletes KEY and prints whether it existed and the store's revision:\n" +
			"  OK deleted=true revision=N\n\n" +
			`JSON: {"deleted": bool, "revision": int}`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				existed, rev, err := c.Delete(ctx, args[0])
				if err != nil {
					return err
				}
				return g.emit(cmd, map[string]any{"deleted": existed, "revision": rev}, func(w io.Writer) {
					fmt.Fprintf(w, "OK deleted=%t revision=%d\n", existed, rev)
				})
			})
		},
	}
}

func casCommand(g *globals) *cobra.Command {
	var absent, del bool
	var rev uint64
	cmd := &cobra.Command{
		Use:   "cas KEY [OLD] [NEW]",
		Short: "Compare-and-swap: set KEY to NEW only if it holds OLD",
		Long: "cas sets KEY to NEW only if its current state matches the expectation:\n" +
			"  raftctl cas KEY OLD NEW          KEY's value is OLD\n" +
			"  raftctl cas KEY NEW --absent     KEY does not exist\n" +
			"  raftctl cas KEY NEW --rev N      KEY was last written at revision N\n" +
			"  raftctl cas KEY OLD --delete     delete KEY if its value is OLD\n" +
			"  raftctl cas KEY --rev N --delete delete KEY if it was last written at N\n" +
			"On success it prints \"OK revision=N\". If the compare fails, nothing is\n" +
			"written; raftctl prints \"compare failed\" with the key's current value and\n" +
			"revision on stderr and exits 1.\n\n" +
			`JSON: {"revision": int}; failed compare: {"error": string, "kind": "compare_failed",` + "\n" +
			`"current": ` + kvJSONHelp + ` or null when the key is absent}`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if absent && cmd.Flags().Changed("rev") {
				return usagef("--absent and --rev exclude each other")
			}
			if absent && del {
				return usagef("--absent with --delete never deletes anything")
			}
			want := 3 // KEY OLD NEW
			names := "KEY, OLD and NEW"
			switch {
			case cmd.Flags().Changed("rev") && del:
				want, names = 1, "KEY (with --rev N --delete)"
			case absent || cmd.Flags().Changed("rev"):
				want, names = 2, "KEY and NEW (with --absent or --rev)"
			case del:
				want, names = 2, "KEY and OLD (with --delete)"
			}
			if len(args) != want {
				return usagef("raftctl cas takes %s; got %d argument(s)", names, len(args))
			}
			var expect client.Compare
			var value []byte
			switch {
			case absent:
				expect, value = client.IfAbsent(), []byte(args[1])
			case cmd.Flags().Changed("rev"):
				expect = client.IfModRevision(rev)
				if !del {
					value = []byte(args[1])
				}
			default:
				expect = client.IfValue([]byte(args[1]))
				if !del {
					value = []byte(args[2])
				}
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var newRev uint64
				var err error
				if del {
					newRev, err = c.CompareAndDelete(ctx, args[0], expect)
				} else {
					newRev, err = c.CompareAndSwap(ctx, args[0], expect, value)
				}
				if err != nil {
					return err
				}
				return g.emit(cmd, map[string]any{"revision": newRev}, func(w io.Writer) {
					fmt.Fprintf(w, "OK revision=%d\n", newRev)
				})
			})
		},
	}
	cmd.Flags().BoolVar(&absent, "absent", false, "expect KEY not to exist (OLD omitted)")
	cmd.Flags().Uint64Var(&rev, "rev", 0, "expect KEY's mod revision to be N (OLD omitted)")
	cmd.Flags().BoolVar(&del, "delete", false, "delete KEY instead of writing NEW (NEW omitted)")
	return cmd
}

func rangeCommand(g *globals) *cobra.Command {
	var limit int
	var after string
	var serializable bool
	cmd := &cobra.Command{
		Use:   "range PREFIX",
		Short: "List the keys starting with PREFIX",
		Long: "range prints one page of the keys starting with PREFIX, in byte order, as\n" +
			"KEY<TAB>VALUE lines. When more keys follow, it says so on stderr with the\n" +
			"--after flag that fetches the next page. An empty PREFIX (\"\") lists all keys.\n\n" +
			`JSON: {"kvs": [` + kvJSONHelp + `, ...], "more": bool, "revision": int}`,
		Args: exactArgs(1, "PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usagef("--limit must be 0 (the node's page size) or positive")
			}
			opts := []client.ReadOption{client.After(after)}
			if serializable {
				opts = append(opts, client.Serializable())
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				page, err := c.Range(ctx, args[0], limit, opts...)
				if err != nil {
					return err
				}
				kvs := make([]map[string]any, len(page.KVs))
				for i, kv := range page.KVs {
					kvs[i] = kvJSON(kv)
				}
				obj := map[string]any{"kvs": kvs, "more": page.More, "revision": page.Revision}
				return g.emit(cmd, obj, func(w io.Writer) {
					for _, kv := range page.KVs {
						fmt.Fprintf(w, "%s\t%s\n", kv.Key, kv.Value)
					}
					if page.More && len(page.KVs) > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "(more keys follow: add --after %s)\n", strconv.Quote(page.KVs[len(page.KVs)-1].Key))
					}
				})
			})
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 0, "at most N keys (0: the node's page size)")
	cmd.Flags().StringVar(&after, "after", "", "start after this key (the last key of the previous page)")
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the node's state as it is (possibly stale; needs no leader)")
	return cmd
}
