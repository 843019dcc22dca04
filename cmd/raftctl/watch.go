package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

func watchCommand(g *globals) *cobra.Command {
	var rev uint64
	var prev, exact bool
	cmd := &cobra.Command{
		Use:   "watch PREFIX",
		Short: "Print every change to the keys starting with PREFIX until interrupted",
		Long: "watch prints each change to the keys starting with PREFIX (only the key\n" +
			"PREFIX with --key), in revision order, as REVISION<TAB>put<TAB>KEY<TAB>VALUE\n" +
			"or REVISION<TAB>delete<TAB>KEY lines (with --prev, a last field prev=VALUE\n" +
			"when the key existed), until Ctrl-C. It starts after the current revision,\n" +
			"or at --rev N (replayed from the nodes' history); if the node serving it\n" +
			"fails, it resumes on another endpoint with no change missed or repeated.\n" +
			"A revision the history no longer holds fails naming the oldest one kept:\n" +
			"read the keys with range, then watch from its revision + 1.\n\n" +
			`JSON: one object per change (a stream): {"revision": int, "type": "put"|"delete", "kv": ` + kvJSONHelp +
			`, "prev": {...}}` + "\n" + binaryJSONHelp,
		Args: exactArgs(1, "PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkKeyLen("PREFIX", args[0]); err != nil {
				return err
			}
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			opts := []client.WatchOption{client.WithRevision(rev)}
			if prev {
				opts = append(opts, client.WithPrevValue())
			}
			if exact {
				opts = append(opts, client.WithExactKey())
			}
			out := cmd.OutOrStdout()
			for resp := range c.Watch(cmd.Context(), args[0], opts...) {
				if resp.Err != nil {
					var ce *client.CompactedError
					if errors.As(resp.Err, &ce) {
						return fmt.Errorf("watch %s from revision %d: the nodes' history starts at revision %d: %w (read the keys with raftctl range, then watch --rev with its revision + 1)",
							cell(args[0]), ce.Requested, ce.Oldest, client.ErrCompacted)
					}
					return aboutKey(resp.Err, args[0])
				}
				for _, e := range resp.Events {
					printEvent(out, g.output == "json", e)
				}
			}
			return nil // interrupted: the normal way to stop watching
		},
	}
	cmd.Flags().Uint64Var(&rev, "rev", 0, "start at this revision (0: after the current one)")
	cmd.Flags().BoolVar(&prev, "prev", false, "also print each key's value before the change")
	cmd.Flags().BoolVar(&exact, "key", false, "watch only the key PREFIX, not the keys it starts")
	return cmd
}

// printEvent prints one change as a line, or a JSON object.
func printEvent(w io.Writer, asJSON bool, e client.Event) {
	if asJSON {
		obj := map[string]any{"revision": e.Revision(), "type": e.Type.String(), "kv": kvJSON(e.KV)}
		if e.Prev != nil {
			obj["prev"] = kvJSON(*e.Prev)
		}
		_ = newJSONEncoder(w).Encode(obj)
		return
	}
	line := fmt.Sprintf("%d\t%s\t%s", e.Revision(), e.Type, cell(e.KV.Key))
	if e.Type == client.EventPut {
		line += "\t" + cell(string(e.KV.Value))
	}
	if e.Prev != nil {
		line += "\tprev=" + cell(string(e.Prev.Value))
	}
	fmt.Fprintln(w, line)
}
