package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

const kvJSONHelp = `{"key": string, "value": string, "create_revision": int, "mod_revision": int, "version": int}` +
	` ("lease": int too, when the key is attached to one)`

// binaryJSONHelp explains the JSON of keys and values that are not text.
const binaryJSONHelp = "A key or value that is not valid UTF-8 comes as \"key_base64\" or \"value_base64\"\n" +
	"(its bytes in standard base64) instead of \"key\" or \"value\"."

func putCommand(g *globals) *cobra.Command {
	var file string
	var lease uint64
	cmd := &cobra.Command{
		Use:   "put KEY VALUE|-",
		Short: "Set KEY to VALUE (- reads it from stdin, --file F from a file)",
		Long: "put sets KEY to VALUE and prints the store's revision after the write:\n" +
			"  OK revision=N\n\n" +
			"  raftctl put KEY VALUE            VALUE from the command line\n" +
			"  raftctl put KEY - < F            the bytes of stdin, exactly (a trailing newline too)\n" +
			"  raftctl put KEY --file F         the bytes of file F\n" +
			"Keys are at most 8 KiB and values at most 1 MiB (the node's limits); raftctl\n" +
			"refuses larger ones before connecting.\n\n" +
			"--lease ID attaches KEY to a lease (raftctl lease grant): KEY is deleted when\n" +
			"the lease is revoked or expires; an unknown lease exits 1 (kind \"lease_not_found\").\n\n" +
			`JSON: {"revision": int}` + "\n\n" +
			"If the outcome is unknown (the connection broke and retries ran out of time),\n" +
			"raftctl says so and exits 1: the write may or may not have been applied.",
		Args: func(cmd *cobra.Command, args []string) error {
			if file != "" {
				return exactArgs(1, "KEY (with --file)")(cmd, args)
			}
			return exactArgs(2, "KEY and VALUE")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := checkKey(key); err != nil {
				return err
			}
			src := valueSource{stdin: cmd.InOrStdin()}
			value, err := src.read("VALUE", argOr(args, 1), "--file", file)
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var opts []client.WriteOption
				if lease != 0 {
					opts = append(opts, client.WithLease(lease))
				}
				rev, err := c.Put(ctx, key, value, opts...)
				if err != nil {
					if lease != 0 {
						err = aboutLease(err, lease)
					}
					return aboutKey(err, key)
				}
				return g.emit(cmd, map[string]any{"revision": rev}, func(w io.Writer) {
					fmt.Fprintf(w, "OK revision=%d\n", rev)
				})
			})
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "read the value from file `F` (binary-safe; VALUE omitted)")
	cmd.Flags().Uint64Var(&lease, "lease", 0, "attach KEY to lease `ID` (deleted when the lease ends)")
	return cmd
}

// argOr returns args[i], or "" if there are not that many.
func argOr(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

func getCommand(g *globals) *cobra.Command {
	var serializable bool
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print KEY's value",
		Long: "get prints KEY's value alone on stdout, followed by a newline. A missing\n" +
			"key prints nothing on stdout, \"key not found\" on stderr, and exits 1.\n" +
			"Piped or redirected, the value is written exactly as stored; on a terminal,\n" +
			"a value holding control characters (other than tabs and newlines) or bytes\n" +
			"that are not UTF-8 is shown Go-quoted, so it cannot drive the terminal.\n" +
			"For the exact bytes of any value use -o json.\n\n" +
			"JSON: " + kvJSONHelp + "\n" +
			`(missing key: {"error": string, "kind": "not_found"}, exit 1)` + "\n" + binaryJSONHelp,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := checkKey(key); err != nil {
				return err
			}
			var opts []client.ReadOption
			if serializable {
				opts = append(opts, client.Serializable())
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				kv, err := c.Get(ctx, key, opts...)
				if err != nil {
					return aboutKey(err, key)
				}
				return g.emit(cmd, kvJSON(kv), func(w io.Writer) {
					if isTerminal(w) && !terminalSafe(string(kv.Value)) {
						fmt.Fprintln(w, strconv.Quote(string(kv.Value)))
						return
					}
					_, _ = w.Write(append(kv.Value, '\n'))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&serializable, "serializable", false, "read the node's state as it is (possibly stale; needs no leader)")
	return cmd
}

func delCommand(g *globals) *cobra.Command {
	var prefix bool
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete KEY (--prefix: every key starting with KEY)",
		Long: "del deletes KEY and prints whether it existed and the store's revision:\n" +
			"  OK deleted=true revision=N\n\n" +
			"With --prefix it deletes every key that starts with KEY, all at one revision\n" +
			"(watchers see a delete per key), and prints how many it deleted (as etcdctl\n" +
			"del --prefix does):\n" +
			"  OK deleted=3 revision=N\n" +
			"The empty prefix is refused: deleting every key must not be one typo away.\n" +
			"A prefix holding more than 4 MiB of keys and values (64 bytes more a key) is\n" +
			"refused and nothing is deleted (kind \"too_large\"): delete narrower prefixes.\n\n" +
			`JSON: {"deleted": bool, "revision": int} (--prefix: {"deleted": int, "revision": int})`,
		Args: exactArgs(1, "KEY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if prefix && key == "" {
				return usagef("empty prefix: del --prefix \"\" would delete every key; name a prefix")
			}
			if err := checkKey(key); err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				if prefix {
					n, rev, err := c.DeletePrefix(ctx, key)
					if err != nil {
						return aboutKey(err, key)
					}
					return g.emit(cmd, map[string]any{"deleted": n, "revision": rev}, func(w io.Writer) {
						fmt.Fprintf(w, "OK deleted=%d revision=%d\n", n, rev)
					})
				}
				existed, rev, err := c.Delete(ctx, key)
				if err != nil {
					return aboutKey(err, key)
				}
				return g.emit(cmd, map[string]any{"deleted": existed, "revision": rev}, func(w io.Writer) {
					fmt.Fprintf(w, "OK deleted=%t revision=%d\n", existed, rev)
				})
			})
		},
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "delete every key that starts with KEY, and print how many")
	return cmd
}

func casCommand(g *globals) *cobra.Command {
	var absent, del bool
	var rev uint64
	var oldFile, newFile string
	cmd := &cobra.Command{
		Use:   "cas KEY [OLD] [NEW]",
		Short: "Compare-and-swap: set KEY to NEW only if it holds OLD",
		Long: "cas sets KEY to NEW only if its current state matches the expectation:\n" +
			"  raftctl cas KEY OLD NEW          KEY's value is OLD\n" +
			"  raftctl cas KEY NEW --absent     KEY does not exist\n" +
			"  raftctl cas KEY NEW --rev N      KEY was last written at revision N\n" +
			"  raftctl cas KEY OLD --delete     delete KEY if its value is OLD\n" +
			"  raftctl cas KEY --rev N --delete delete KEY if it was last written at N\n" +
			"OLD or NEW given as - is read from stdin (one of them at most); --old-file F\n" +
			"and --file F read OLD and NEW from files instead (omit them from the\n" +
			"arguments). Values are at most 1 MiB.\n" +
			"On success it prints \"OK revision=N\". If the compare fails, nothing is\n" +
			"written; raftctl prints \"compare failed\" with the key's current value and\n" +
			"revision on stderr and exits 1.\n\n" +
			`JSON: {"revision": int}; failed compare: {"error": string, "kind": "compare_failed",` + "\n" +
			`"current": ` + kvJSONHelp + ` or null when the key is absent}` + "\n" + binaryJSONHelp,
		RunE: func(cmd *cobra.Command, args []string) error {
			revSet := cmd.Flags().Changed("rev")
			if absent && revSet {
				return usagef("--absent and --rev exclude each other")
			}
			if absent && del {
				return usagef("--absent with --delete never deletes anything")
			}
			needOld, needNew := !absent && !revSet, !del
			if oldFile != "" && !needOld {
				return usagef("--old-file gives OLD, which --absent and --rev replace")
			}
			if newFile != "" && !needNew {
				return usagef("--file gives NEW, which --delete does not take")
			}
			names := []string{"KEY"}
			if needOld && oldFile == "" {
				names = append(names, "OLD")
			}
			if needNew && newFile == "" {
				names = append(names, "NEW")
			}
			if len(args) != len(names) {
				return usagef("raftctl cas takes %s; got %d argument(s)", casShape(cmd, names), len(args))
			}
			key := args[0]
			if err := checkKey(key); err != nil {
				return err
			}
			src := valueSource{stdin: cmd.InOrStdin()}
			next := 1
			var old, value []byte
			if needOld {
				var err error
				if old, err = src.read("OLD", argOr(args, next), "--old-file", oldFile); err != nil {
					return err
				}
				if oldFile == "" {
					next++
				}
			}
			if needNew {
				var err error
				if value, err = src.read("NEW", argOr(args, next), "--file", newFile); err != nil {
					return err
				}
			}
			var expect client.Compare
			switch {
			case absent:
				expect = client.IfAbsent()
			case revSet:
				expect = client.IfModRevision(rev)
			default:
				expect = client.IfValue(old)
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				var newRev uint64
				var err error
				if del {
					newRev, err = c.CompareAndDelete(ctx, key, expect)
				} else {
					newRev, err = c.CompareAndSwap(ctx, key, expect, value)
				}
				if err != nil {
					return aboutKey(err, key)
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
	cmd.Flags().StringVar(&oldFile, "old-file", "", "read OLD from file `F` (binary-safe; OLD omitted)")
	cmd.Flags().StringVar(&newFile, "file", "", "read NEW from file `F` (binary-safe; NEW omitted)")
	return cmd
}

// casShape names the arguments cas takes, and the flags that shaped them:
// "KEY, OLD and NEW", "KEY and NEW (with --absent)".
func casShape(cmd *cobra.Command, names []string) string {
	s := names[len(names)-1]
	if len(names) > 1 {
		s = strings.Join(names[:len(names)-1], ", ") + " and " + s
	}
	var with []string
	for _, f := range []string{"absent", "rev", "delete", "old-file", "file"} {
		if cmd.Flags().Changed(f) {
			with = append(with, "--"+f)
		}
	}
	if len(with) > 0 {
		s += " (with " + strings.Join(with, " ") + ")"
	}
	return s
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
			"--after flag that fetches the next page. An empty PREFIX (\"\") lists all keys.\n" +
			"A key or value that is not plain printable text (or starts with a quote) is\n" +
			"shown Go-quoted, and one over 256 bytes as its first 256 bytes, \"...\" and its\n" +
			"length; -o json prints them whole.\n\n" +
			`JSON: {"kvs": [` + kvJSONHelp + `, ...], "more": bool, "revision": int}` + "\n" + binaryJSONHelp,
		Args: exactArgs(1, "PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 {
				return usagef("--limit must be 0 (the node's page size) or positive")
			}
			if err := checkKeyLen("PREFIX", args[0]); err != nil {
				return err
			}
			if err := checkKeyLen("--after", after); err != nil {
				return err
			}
			opts := []client.ReadOption{client.After(after)}
			if serializable {
				opts = append(opts, client.Serializable())
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				page, err := c.Range(ctx, args[0], limit, opts...)
				if err != nil {
					return aboutKey(err, args[0])
				}
				kvs := make([]map[string]any, len(page.KVs))
				for i, kv := range page.KVs {
					kvs[i] = kvJSON(kv)
				}
				obj := map[string]any{"kvs": kvs, "more": page.More, "revision": page.Revision}
				return g.emit(cmd, obj, func(w io.Writer) {
					for _, kv := range page.KVs {
						fmt.Fprintf(w, "%s\t%s\n", cell(kv.Key), cell(string(kv.Value)))
					}
					if page.More && len(page.KVs) > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "(more keys follow: add --after %s)\n", shellQuote(page.KVs[len(page.KVs)-1].Key))
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
