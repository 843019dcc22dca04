package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/cmd/internal/cli"
)

func statusCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every endpoint's view of the cluster",
		Long: "status asks every endpoint for its status, in parallel, and prints a row per\n" +
			"endpoint: ENDPOINT ID ADDRESS ROLE TERM LEADER COMMIT APPLIED ERROR (the error\n" +
			"met there, if any). It exits 1 if any endpoint failed to answer (77 if one\n" +
			"refused the credential).\n\n" +
			`JSON: {"nodes": [{"endpoint": string, "id": int, "address": string, "role": string,` + "\n" +
			`  "term": int, "leader": int, "commit": int, "applied": int, "last_index": int,` + "\n" +
			`  "snapshot_index": int, "cluster_id": int, "revision": int, "version": string,` + "\n" +
			`  "stop_reason": string, "error": string (only for a failed endpoint)}, ...]}` + "\n" +
			"role is one of follower, candidate, precandidate, leader, learner, stopped.",
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				type row struct {
					st  client.NodeStatus
					err error
				}
				rows := make([]row, len(g.endpoints))
				var wg sync.WaitGroup
				for i, e := range g.endpoints {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rows[i].st, rows[i].err = c.Status(ctx, e)
					}()
				}
				wg.Wait()
				failed := 0
				var denied error // a refusal of the credential, which sets the exit status
				nodes := make([]map[string]any, len(rows))
				for i, r := range rows {
					if r.err != nil {
						failed++
						if denied == nil && errors.Is(r.err, client.ErrPermissionDenied) {
							denied = r.err
						}
						nodes[i] = map[string]any{"endpoint": g.endpoints[i], "error": r.err.Error()}
						continue
					}
					s := r.st
					nodes[i] = map[string]any{
						"endpoint": g.endpoints[i], "id": s.ID, "address": s.Address, "role": s.Role, "term": s.Term,
						"leader": s.Leader, "commit": s.Commit, "applied": s.Applied, "last_index": s.LastIndex,
						"snapshot_index": s.SnapshotIndex, "cluster_id": s.ClusterID, "revision": s.Revision,
						"version": s.Version, "stop_reason": s.StopReason,
					}
				}
				err := g.emit(cmd, map[string]any{"nodes": nodes}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ENDPOINT\tID\tADDRESS\tROLE\tTERM\tLEADER\tCOMMIT\tAPPLIED\tERROR")
					for i, r := range rows {
						if r.err != nil {
							fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", g.endpoints[i], escapeText(r.err.Error()))
							continue
						}
						s := r.st
						role := cell(s.Role)
						if s.StopReason != "" {
							role += " (" + escapeText(s.StopReason) + ")"
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%d\t%d\t%d\t\n", g.endpoints[i], s.ID, cell(s.Address), role, s.Term, s.Leader, s.Commit, s.Applied)
					}
					_ = tw.Flush()
				})
				if err != nil {
					return err
				}
				if denied != nil {
					return &reportedError{fmt.Errorf("%d of %d endpoints did not answer; %w", failed, len(rows), denied)}
				}
				if failed > 0 {
					return &reportedError{fmt.Errorf("%d of %d endpoints did not answer", failed, len(rows))}
				}
				return nil
			})
		},
	}
}

func membersCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the cluster's members",
		Long: "members prints the cluster's configuration: ID ADDRESS ROLE (voter, learner, or a\n" +
			"learner that becomes a voter once caught up), with * after the leader's id.\n\n" +
			`JSON: {"leader": int (0 if unknown), "members": [{"id": int, "address": string,` + "\n" +
			`  "learner": bool, "promoting": bool, "match": int}, ...]}`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				leader, members, err := c.Members(ctx)
				if err != nil {
					return err
				}
				list := make([]map[string]any, len(members))
				for i, m := range members {
					list[i] = map[string]any{"id": m.ID, "address": m.Address, "learner": m.Learner, "promoting": m.Promoting, "match": m.Match}
				}
				return g.emit(cmd, map[string]any{"leader": leader, "members": list}, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tADDRESS\tROLE")
					for _, m := range members {
						id := strconv.FormatUint(m.ID, 10)
						if m.ID == leader {
							id += "*"
						}
						role := "voter"
						switch {
						case m.Promoting:
							role = "learner (a voter once caught up)"
						case m.Learner:
							role = "learner"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\n", id, cell(m.Address), role)
					}
					_ = tw.Flush()
				})
			})
		},
	}
}

// parseID parses a node id argument.
func parseID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, usagef("node id %q: want a positive integer", s)
	}
	return id, nil
}

// okCommand prints OK (JSON {"ok": true}) after fn succeeds.
func (g *globals) ok(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
		if err := fn(ctx, c); err != nil {
			return err
		}
		return g.emit(cmd, map[string]any{"ok": true}, func(w io.Writer) { fmt.Fprintln(w, "OK") })
	})
}

func memberCommand(g *globals) *cobra.Command {
	member := &cobra.Command{
		Use:   "member",
		Short: "Change the cluster's membership (add, promote, remove)",
		Args:  exactArgs(0, "a subcommand: add, promote or remove"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("raftctl member needs a subcommand: add, promote or remove")
		},
	}
	var learner bool
	add := &cobra.Command{
		Use:   "add ID ADDR",
		Short: "Add node ID, reachable at ADDR, to the cluster",
		Long: "member add adds node ID, which peers reach at ADDR. Start the node with an\n" +
			"empty data directory and --join. It joins as a learner and becomes a voter by\n" +
			"itself once it has caught up, so the quorum never counts a node without the\n" +
			"log. With --learner it stays a learner; promote it once it caught up (its\n" +
			"match in raftctl members).\n\n" +
			`JSON: {"ok": true}`,
		Args: exactArgs(2, "ID and ADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if _, err := cli.ParseAddr(args[1], cli.AddrRules{}); err != nil {
				return usagef("member add: ADDR %v", err)
			}
			return g.ok(cmd, func(ctx context.Context, c *client.Client) error {
				return settle(ctx, c, c.AddMember(ctx, id, args[1], learner), func(ms []client.Member) bool {
					m, ok := findMember(ms, id)
					return ok && m.Address == args[1] && (m.Learner == learner || (!learner && m.Promoting))
				})
			})
		},
	}
	add.Flags().BoolVar(&learner, "learner", false, "add the node as a non-voting learner")
	promote := memberIDCommand(g, "promote ID", "Turn learner ID into a voter",
		"member promote makes learner ID a voting member.",
		(*client.Client).PromoteMember, func(m client.Member, present bool) bool { return present && !m.Learner })
	remove := memberIDCommand(g, "remove ID", "Remove node ID from the cluster (it stops)",
		"member remove removes node ID from the configuration; the node stops.",
		(*client.Client).RemoveMember, func(_ client.Member, present bool) bool { return !present })
	member.AddCommand(add, promote, remove)
	return member
}

// memberIDCommand builds a member subcommand that takes one node ID: it
// calls change and, if the outcome is unknown, settles it with made
// (given the node's entry in the configuration and whether it has one).
func memberIDCommand(g *globals, use, short, long string,
	change func(*client.Client, context.Context, uint64) error,
	made func(m client.Member, present bool) bool) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long + "\n\n" + `JSON: {"ok": true}`,
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			return g.ok(cmd, func(ctx context.Context, c *client.Client) error {
				return settle(ctx, c, change(c, ctx, id), func(ms []client.Member) bool {
					return made(findMember(ms, id))
				})
			})
		},
	}
}

// settle resolves a membership change whose outcome is unknown (say the
// answer was lost with the connection to a leader it removed): if the
// configuration now shows the change made, it succeeded; else err stands.
func settle(ctx context.Context, c *client.Client, err error, made func([]client.Member) bool) error {
	if !errors.Is(err, client.ErrUnknownOutcome) {
		return err
	}
	if _, ms, merr := c.Members(ctx); merr == nil && made(ms) {
		return nil
	}
	return fmt.Errorf("%w (run raftctl members to see whether the change was made)", err)
}

// settleTransfer resolves a leadership transfer whose outcome is unknown
// (leadership had not moved when the leader's wait ended, or the answer
// was lost): if voter to leads now, it succeeded; else err stands, with
// how to find out later.
func settleTransfer(ctx context.Context, c *client.Client, to uint64, err error) error {
	if !errors.Is(err, client.ErrUnknownOutcome) {
		return err
	}
	if lead, _, merr := c.Members(ctx); merr == nil && to != 0 && lead == to {
		return nil
	}
	return fmt.Errorf("%w (raftctl status shows which node leads)", err)
}

// findMember returns member id of ms.
func findMember(ms []client.Member, id uint64) (client.Member, bool) {
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return client.Member{}, false
}

func transferCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer [ID]",
		Short: "Hand leadership to voter ID (default: the most up-to-date other voter)",
		Long:  "transfer moves leadership to voter ID, or without ID to the most up-to-date\nother voter, and returns once it has moved.\n\n" + `JSON: {"ok": true}`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("raftctl transfer takes at most one argument, the target ID; got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var to uint64
			if len(args) == 1 {
				id, err := parseID(args[0])
				if err != nil {
					return err
				}
				to = id
			}
			return g.ok(cmd, func(ctx context.Context, c *client.Client) error {
				return settleTransfer(ctx, c, to, c.TransferLeadership(ctx, to))
			})
		},
	}
}

func snapshotCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Make the connected node snapshot its state now; save and check backups",
		Long: "snapshot makes the node raftctl connects to (the first reachable endpoint)\nsnapshot its state, and prints the snapshot's index: OK index=N\n\n" +
			"snapshot save FILE saves a backup of the cluster's state; snapshot status FILE checks one.\n\n" + `JSON: {"index": int}`,
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(cmd, func(ctx context.Context, c *client.Client) error {
				idx, err := c.Snapshot(ctx)
				if err != nil {
					return err
				}
				return g.emit(cmd, map[string]any{"index": idx}, func(w io.Writer) { fmt.Fprintf(w, "OK index=%d\n", idx) })
			})
		},
	}
	cmd.AddCommand(snapshotSaveCommand(g), snapshotStatusCommand(g))
	return cmd
}
