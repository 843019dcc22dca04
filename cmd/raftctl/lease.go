package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
)

const leaseJSONHelp = `{"id": int, "ttl_ms": int, "remaining_ms": int, "keys": int, "prefix": string}` +
	` (keys -1: not counted)`

// leaseJSON is the JSON form of a lease (see leaseJSONHelp).
func leaseJSON(l client.Lease) map[string]any {
	obj := map[string]any{"id": l.ID, "ttl_ms": l.TTL.Milliseconds(), "remaining_ms": l.Remaining.Milliseconds(), "keys": l.Keys}
	setText(obj, "prefix", l.Prefix)
	return obj
}

// leaseID parses a lease id argument.
func leaseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("lease id %q: want a positive integer (as lease grant printed)", s)
	}
	return id, nil
}

// aboutLease says which lease an error is about.
func aboutLease(err error, id uint64) error {
	if errors.Is(err, client.ErrLeaseNotFound) {
		return fmt.Errorf("lease %d: %w (it expired or was revoked; grant a new one)", id, err)
	}
	return err
}

func leaseCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Short: "Grant, keep alive, revoke and list leases",
		Long: "A lease lives for its TTL unless kept alive; keys put with --lease ID are\n" +
			"deleted, all at one revision, when the lease is revoked or expires.\n\n" +
			"  raftctl lease grant 30s          prints the new lease's id\n" +
			"  raftctl put KEY VALUE --lease ID\n" +
			"  raftctl lease keepalive ID...    keeps leases alive until Ctrl-C\n" +
			"  raftctl lease revoke ID          deletes its keys now\n" +
			"  raftctl lease list | timetolive ID",
	}
	cmd.AddCommand(leaseGrantCommand(g), leaseKeepAliveCommand(g), leaseRevokeCommand(g), leaseListCommand(g), leaseTTLCommand(g))
	return cmd
}

func leaseGrantCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "grant TTL",
		Short: "Grant a lease of TTL (a duration: 30s, 5m; the cluster allows 1s to 24h by default)",
		Long: "lease grant grants a lease and prints its id:\n  ID\n\n" +
			"JSON: " + leaseJSONHelp + "\n\n" +
			"A grant whose answer was lost has an unknown outcome (exit 1): list the leases.",
		Args: exactArgs(1, "TTL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ttl, err := time.ParseDuration(args[0])
			if err != nil || ttl <= 0 {
				return usagef("TTL %q: want a positive duration such as 30s or 5m", args[0])
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := c.Grant(ctx, ttl)
				if err != nil {
					return err
				}
				return g.emit(cmd, leaseJSON(l), func(w io.Writer) { fmt.Fprintln(w, l.ID) })
			})
		},
	}
}

func leaseRevokeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke lease ID, deleting its keys",
		Long: "lease revoke ends the lease now and deletes its keys, all at one revision:\n" +
			"  OK revision=N\n\n" +
			`JSON: {"revision": int}` + "\n" +
			"An unknown lease exits 1 (kind \"lease_not_found\").",
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := leaseID(args[0])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				rev, err := c.Revoke(ctx, id)
				if err != nil {
					return aboutLease(err, id)
				}
				return g.emit(cmd, map[string]any{"revision": rev}, func(w io.Writer) { fmt.Fprintf(w, "OK revision=%d\n", rev) })
			})
		},
	}
}

func leaseTTLCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "timetolive ID",
		Short: "Print lease ID's TTL, time left and number of keys",
		Long: "lease timetolive prints, as the connected node applied the log:\n" +
			"  ID  TTL  REMAINING  KEYS  PREFIX\n\n" +
			"JSON: " + leaseJSONHelp,
		Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := leaseID(args[0])
			if err != nil {
				return err
			}
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := c.TimeToLive(ctx, id)
				if err != nil {
					return aboutLease(err, id)
				}
				return g.emit(cmd, leaseJSON(l), func(w io.Writer) { leaseTable(w, []client.Lease{l}) })
			})
		},
	}
}

func leaseListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the leases",
		Long: "lease list prints the leases the credential may see, in id order:\n" +
			"  ID  TTL  REMAINING  KEYS  PREFIX   (keys are not counted: -)\n\n" +
			`JSON: {"leases": [` + leaseJSONHelp + `]}`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				ls, err := c.Leases(ctx)
				if err != nil {
					return err
				}
				objs := make([]map[string]any, len(ls))
				for i := range ls {
					objs[i] = leaseJSON(ls[i])
				}
				return g.emit(cmd, map[string]any{"leases": objs}, func(w io.Writer) { leaseTable(w, ls) })
			})
		},
	}
}

// leaseTable prints leases as a table.
func leaseTable(w io.Writer, ls []client.Lease) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTTL\tREMAINING\tKEYS\tPREFIX")
	for _, l := range ls {
		keys := "-"
		if l.Keys >= 0 {
			keys = strconv.FormatInt(l.Keys, 10)
		}
		fmt.Fprintf(tw, "%d\t%v\t%v\t%s\t%s\n", l.ID, l.TTL, l.Remaining.Round(time.Millisecond), keys, cell(l.Prefix))
	}
	tw.Flush()
}

func leaseKeepAliveCommand(g *globals) *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "keepalive ID...",
		Short: "Keep leases alive until interrupted (or once, with --once)",
		Long: "lease keepalive renews the leases (all of them in one call per interval) and\n" +
			"prints each renewal as ID<TAB>REMAINING, until Ctrl-C; it exits 1 when a lease\n" +
			"is gone (expired or revoked). With --once it renews each lease once and exits.\n\n" +
			"JSON: one " + leaseJSONHelp + " per renewal (a stream)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("lease keepalive needs at least one lease ID")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ids := make([]uint64, len(args))
			for i, a := range args {
				id, err := leaseID(a)
				if err != nil {
					return err
				}
				ids[i] = id
			}
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			enc := newJSONEncoder(out)
			show := func(l client.Lease) {
				if g.output == "json" {
					_ = enc.Encode(leaseJSON(l))
					return
				}
				fmt.Fprintf(out, "%d\t%v\n", l.ID, l.Remaining.Round(time.Millisecond))
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			type renewal struct {
				l  client.Lease
				ok bool
				id uint64
			}
			renewals := make(chan renewal)
			for _, id := range ids {
				sctx, scancel := context.WithTimeout(ctx, g.timeout)
				ch, err := c.KeepAlive(sctx, id)
				if once {
					defer scancel()
				} else {
					scancel()
					if err == nil {
						// KeepAlive's context bounds the keeping: the
						// first renewal within --timeout, then until
						// interrupted.
						ch, err = c.KeepAlive(ctx, id)
					}
				}
				if err != nil {
					return aboutLease(err, id)
				}
				if once {
					show(<-ch)
					continue
				}
				go func() {
					for l := range ch {
						select {
						case renewals <- renewal{l: l, ok: true, id: id}:
						case <-ctx.Done():
							return
						}
					}
					select {
					case renewals <- renewal{id: id}:
					case <-ctx.Done():
					}
				}()
			}
			if once {
				return nil
			}
			for {
				select {
				case <-ctx.Done():
					return nil // interrupted: the normal way to stop
				case r := <-renewals:
					if !r.ok {
						if cmd.Context().Err() != nil {
							return nil
						}
						return aboutLease(fmt.Errorf("lease keepalive: %w", client.ErrLeaseNotFound), r.id)
					}
					show(r.l)
				}
			}
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "renew each lease once and exit")
	return cmd
}
